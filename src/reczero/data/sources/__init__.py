"""Raw-dump readers, one module per format, all with the same small contract.

A source module exposes::

    NAME: str                          # "amazon2018"
    DEFAULT_SCALE: RatingScale | None  # None: must be given (table) or detected (movielens)
    def read_interactions(path: Path, rejects: RejectLog, **options) -> Iterator[pa.RecordBatch]
    def read_items(path: Path, rejects: RejectLog, **options) -> Iterator[pa.RecordBatch]

Batches follow ``schema.INTERACTIONS_SCHEMA`` / ``schema.ITEMS_SCHEMA`` (times already in Unix
seconds). Readers stream: they never hold a whole dump as Python objects, only one batch.
Every record read is counted exactly once: either it ends up in a yielded batch or it is passed to
``rejects.reject(...)`` with a reason. ``open_lines`` handles plain and gzip files, undecodable
bytes, and truncated gzip streams (every complete line is yielded, the file is flagged).
"""

from __future__ import annotations

import gzip
import io
import json
import zlib
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from reczero.errors import DataError

BATCH_ROWS = 65_536


@dataclass
class RejectLog:
    """Counts every record read, and lists every rejected one (file, line, reason) in rejects.jsonl.

    ``read`` counts records per stream (``"interactions"`` or ``"items"``), so that the manifest can
    state ``read == kept + sum(rejected)`` for each.
    """

    path: Path | None = None
    read: Counter = field(default_factory=Counter)
    rejected: dict[str, Counter] = field(default_factory=lambda: {"interactions": Counter(), "items": Counter()})
    truncated: list[str] = field(default_factory=list)
    _fh: IO[str] | None = None

    def __post_init__(self) -> None:
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fh = open(self.path, "w", encoding="utf-8")

    def count(self, stream: str, n: int = 1) -> None:
        self.read[stream] += n

    def reject(self, stream: str, file: str | Path, line: int | None, reason: str, detail: str = "",
               record: Any = None) -> None:
        """List one record as rejected. ``reason`` is a short stable key (it is counted by);
        ``detail`` says what exactly was wrong; ``record`` is the offending raw text or fields."""
        self.rejected[stream][reason] += 1
        if self._fh is not None:
            entry = {"stream": stream, "file": str(file), "line": line, "reason": reason}
            if detail:
                entry["detail"] = detail
            if record is not None:
                entry["record"] = record if isinstance(record, str | int | float) else json.dumps(record, default=str)[:2000]
                if isinstance(entry["record"], str):
                    entry["record"] = entry["record"][:2000]
            self._fh.write(json.dumps(entry, ensure_ascii=False) + "\n")

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None


def open_binary(path: Path) -> IO[bytes]:
    """Open plain or gzip (by magic bytes, not by name)."""
    if not path.exists():
        raise DataError(f"{path}: file not found")
    if path.is_dir():
        raise DataError(f"{path}: is a directory, expected a file")
    with open(path, "rb") as fh:
        magic = fh.read(2)
    if magic == b"\x1f\x8b":
        return gzip.open(path, "rb")
    return open(path, "rb")


def open_lines(path: Path, rejects: RejectLog, stream: str, encoding: str = "utf-8") -> Iterator[tuple[int, str]]:
    """Yield ``(line_number, text)`` for each non-empty line (1-based numbers).

    Undecodable bytes are replaced (U+FFFD) rather than dropping the record. A truncated gzip
    stream ends the iteration after the last complete line and is recorded in
    ``rejects.truncated``; an incomplete last line is rejected as ``truncated``.
    """
    raw = open_binary(path)
    lineno = 0
    pending: bytes | None = None
    try:
        try:
            for pending in raw:
                lineno += 1
                if not pending.endswith(b"\n"):
                    # last line without newline: keep it, it may still be complete
                    pass
                text = pending.decode(encoding, errors="replace").strip()
                pending = None
                if text:
                    yield lineno, text
        except (EOFError, zlib.error, gzip.BadGzipFile, OSError) as err:
            rejects.truncated.append(str(path))
            if pending:
                rejects.count(stream)
                rejects.reject(stream, path, lineno, "truncated", f"incomplete last record: {err}")
    finally:
        raw.close()


def text_reader(path: Path, encoding: str = "utf-8") -> io.TextIOBase:
    """A text stream over a plain or gzip file (for csv readers), undecodable bytes replaced."""
    return io.TextIOWrapper(open_binary(path), encoding=encoding, errors="replace", newline="")
