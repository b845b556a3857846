"""File helpers shared by every reader and writer of run files: JSON Lines in, atomic writes out.

What this module chose, and why:

* **One JSON Lines reader**, :func:`read_jsonl`: blank lines are ignored; a line that is not JSON
  (the torn last line of an interrupted append, or garbage) is either an error naming
  ``file:line`` (``strict=True``, for files whose every record matters) or skipped with a warning
  naming ``file:line`` and counted in ``skipped`` (logs, where a torn line is expected after a kill).
  Nothing is dropped silently.
* **One atomic writer**, :func:`atomic_write`: the content goes to a temp file beside the target,
  which is then renamed over it (``os.replace``, atomic on one file system), so a kill never leaves
  half a file. ``durable=True`` also fsyncs the file and its directory, for files whose loss after
  a power cut would lose paid-for work (the teacher's records).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from reczero.errors import DataError

log = logging.getLogger(__name__)


def read_jsonl(path: str | Path, *, strict: bool = False, skipped: list[int] | None = None) -> Iterator[tuple[int, Any]]:
    """``(line number, value)`` for each non-blank line of a JSON Lines file (line numbers from 1).

    A line that is not JSON raises :class:`DataError` naming ``path:line`` when ``strict``;
    otherwise it is skipped with a warning and its number appended to ``skipped`` (when given).
    """
    path = Path(path)
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                value = json.loads(line)
            except json.JSONDecodeError as err:
                if strict:
                    raise DataError(f"{path}:{lineno}: not a JSON record ({err.msg})") from err
                log.warning("%s:%d: not a JSON record (%s); skipped", path, lineno, err.msg)
                if skipped is not None:
                    skipped.append(lineno)
                continue
            yield lineno, value


def atomic_write(path: str | Path, write: Callable[[Path], Any], *, durable: bool = False) -> Path:
    """Call ``write(tmp)`` on a temp file beside ``path``, then rename it over ``path``; returns ``path``.

    ``durable``: fsync the file before the rename and the directory after it. The temp file is
    removed if ``write`` fails.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        write(tmp)
        if durable:
            with open(tmp, "rb") as fh:
                os.fsync(fh.fileno())
        os.replace(tmp, path)
        if durable:
            fsync_dir(path.parent)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def atomic_write_text(path: str | Path, text: str, *, durable: bool = False) -> Path:
    """:func:`atomic_write` of a UTF-8 text."""
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"), durable=durable)


def fsync_dir(folder: str | Path) -> None:
    """Make a rename or a new file in ``folder`` durable (a no-op where directories cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
