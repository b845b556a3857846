"""The teacher's output file: an append-only JSONL store that survives ``kill -9``.

What this module chose, and why:

* **One record per line, one ``os.write`` per record, then ``fsync``.** The file is opened with
  ``O_APPEND``, each record is serialised to a full line first and written with a single
  ``os.write`` call, and ``fsync`` follows before the next sample is taken up. A kill can
  therefore only ever leave a *torn last line* (a prefix of one record, no newline), never a gap
  or a half-record in the middle.
* **One writer at a time**: a run holds an ``flock`` on ``FILE.lock`` (released by the kernel when
  the process dies, so a ``kill -9`` never leaves a stale lock); a second run on the same file stops
  with an error instead of duplicating records.
* **A torn last line is cut away on open** (``truncate`` to the end of the last complete line),
  and logged: that sample has no complete record, so it is simply done again. A complete line
  that is not valid JSON, or a record without ``sample_id``, is a :class:`DataError` naming the
  line: that is not a kill, it is someone else's file, and guessing would lose data.
* **Samples that failed only on endpoint errors are retried on a rerun** (the teacher never
  answered; an outage should not freeze them out). Since every sample must appear exactly once,
  such records are first removed by rewriting the file to a temporary sibling and atomically
  renaming it over the original (``reczero.io.atomic_write``, durable: file and directory
  ``fsync``): a kill during that step leaves either the old or the new file, both valid. This is
  the only time the file is rewritten.
"""

from __future__ import annotations

import json
import logging
import os
from collections import Counter
from pathlib import Path
from typing import Any

from reczero.errors import DataError
from reczero.io import atomic_write_text, read_jsonl

log = logging.getLogger(__name__)

ENDPOINT_ERROR = "endpoint_error"   # the reason of a record whose sample never got an answer


class TeacherStore:
    """Append-only JSONL of teacher records, keyed by ``sample_id``.

    >>> store = TeacherStore(path)            # doctest: +SKIP
    >>> done = store.open()                   # sample_ids already recorded (torn tail repaired)
    >>> store.append({"sample_id": "train-u1-i9-7", ...})
    >>> store.close()
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.records: dict[str, dict[str, Any]] = {}   # sample_id -> record, as found on open
        self._fd: int | None = None
        self._lock_fd: int | None = None

    # -- opening ---------------------------------------------------------------------------------

    def open(self, retry_endpoint_errors: bool = True) -> set[str]:
        """Read what is there, repair a torn tail, and open for appending.

        Returns the sample_ids to skip. With ``retry_endpoint_errors`` the records whose reason
        is :data:`ENDPOINT_ERROR` are removed first (atomically), so those samples are asked again.
        """
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock()
        try:
            if self.path.exists():
                self._repair_tail()
                self.records = self._read_records()
                retry = [sid for sid, r in self.records.items() if r.get("reason") == ENDPOINT_ERROR]
                if retry and retry_endpoint_errors:
                    self._drop(set(retry))
                    log.info("%s: %d samples had failed on endpoint errors; they are asked again", self.path, len(retry))
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        except BaseException:
            self.close()
            raise
        return set(self.records)

    def _lock(self) -> None:
        """Hold ``FILE.lock`` for the life of this run: two runs appending at once would duplicate."""
        import fcntl

        self._lock_fd = os.open(self.path.with_name(self.path.name + ".lock"), os.O_WRONLY | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._lock_fd)
            self._lock_fd = None
            raise DataError(f"{self.path}: another run is writing this file (it holds {self.path.name}.lock); "
                            "wait for it or kill it, then rerun") from None

    def _repair_tail(self) -> None:
        with open(self.path, "rb+") as fh:
            data = fh.read()
            if not data or data.endswith(b"\n"):
                return
            keep = data.rfind(b"\n") + 1    # 0 when the only line is torn
            fh.truncate(keep)
            fh.flush()
            os.fsync(fh.fileno())
        log.warning("%s: cut away a torn last line of %d bytes (an interrupted write); that sample is done again",
                    self.path, len(data) - keep)

    def _read_records(self) -> dict[str, dict[str, Any]]:
        records: dict[str, dict[str, Any]] = {}
        for lineno, record in read_jsonl(self.path, strict=True):
            sid = record.get("sample_id") if isinstance(record, dict) else None
            if not isinstance(sid, str):
                raise DataError(f"{self.path}:{lineno}: record has no string 'sample_id'")
            if sid in records:
                raise DataError(f"{self.path}:{lineno}: sample_id {sid!r} is recorded twice "
                                "(was the file written by two runs at once?)")
            records[sid] = record
        return records

    def _drop(self, sample_ids: set[str]) -> None:
        for sid in sample_ids:
            self.records.pop(sid, None)
        # the records as ``append`` wrote them (one json.dumps per line), in file order
        atomic_write_text(self.path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in self.records.values()),
                          durable=True)

    # -- writing ---------------------------------------------------------------------------------

    def append(self, record: dict[str, Any]) -> None:
        """Write one record as one full line (a single ``write``), then flush it to disk."""
        if self._fd is None:
            raise RuntimeError("TeacherStore.append before open()")
        line = (json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8")
        written = os.write(self._fd, line)
        if written != len(line):   # regular files do not short-write short of a full disk
            raise DataError(f"{self.path}: short write ({written} of {len(line)} bytes); is the disk full?")
        os.fsync(self._fd)

    def close(self) -> None:
        for name in ("_fd", "_lock_fd"):   # closing the lock file releases the lock (a kill does too)
            fd = getattr(self, name)
            if fd is not None:
                os.close(fd)
                setattr(self, name, None)

    def __enter__(self) -> TeacherStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def summarise(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Counts of a list of records: accepted, rationalised, rejected by reason."""
    accepted = [r for r in records if r["status"] == "accepted"]
    return {
        "records": len(records),
        "accepted": len(accepted),
        "rationalised": sum(1 for r in accepted if r["rationalised"]),
        "rejected": dict(Counter(r["reason"] for r in records if r["status"] == "rejected")),
    }
