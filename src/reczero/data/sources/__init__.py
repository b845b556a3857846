"""Raw-dump readers, one module per format, all with the same small contract.

Each format is one module with two readers, and one :class:`~reczero.data.sources.registry.Source`
entry in :data:`reczero.data.sources.registry.SOURCES` that names them together with the format's
defaults (rating scale, item file, input files; see ``registry.py``)::

    def read_interactions(path: Path, rejects: RejectLog, **options) -> Iterator[pa.RecordBatch]
    def read_items(path: Path, rejects: RejectLog, **options) -> Iterator[pa.RecordBatch]

Batches follow ``schema.INTERACTIONS_SCHEMA`` / ``schema.ITEMS_SCHEMA`` (times already in Unix
seconds). Readers stream: they never hold a whole dump as Python objects, only one batch.
Every record read is counted exactly once: either it ends up in a yielded batch or it is passed to
``rejects.reject(...)`` with a reason (``n=k`` when one listed line stands for ``k`` records, e.g.
a sequences line of ``k`` items). A reader of an implicit source yields null ratings. Options
every reader is given: ``scale`` (None for implicit data), ``columns`` and ``item_columns`` (the
mappings of ``--columns`` / ``--item-columns``; used by ``table`` and ``recbole``). Options the
JSON-lines readers (Amazon, Yelp) understand: ``scale`` (a RatingScale; ratings off it or off its step are rejected as ``bad_rating``, since only
the reader knows the line) and ``line_numbers=True`` (a trailing int64 ``line`` column: the source
line of each row, for stages that drop rows later, e.g. duplicates). Unknown options are ignored.
A file whose first 1,000 records are all rejected, or that has no record kept, raises DataError.

File access goes through this module. Gzip is detected by its magic bytes, not the file name, and
inflated here with ``zlib`` (64 KiB of compressed input per step) rather than by iterating a
``gzip.GzipFile``. Checked on truncated dumps: the ``GzipFile`` loop did yield every complete line,
but its ``EOFError`` arrives from inside ``readline`` together with the partial last line, which
was then neither counted nor rejected -- a record lost silently. Our loop yields everything zlib
could inflate, then reports the damage; the block splitter only ever hands out whole lines, so a
truncated (or corrupt) gzip yields every complete line, the incomplete tail is counted and rejected
as ``truncated``, and the file is listed in ``rejects.truncated``. Multi-member gzip (bgzip, ``cat
a.gz b.gz``) and zero padding after a member are read, as the ``gzip`` module does; zip, tar, bzip2,
xz and zstd files get a clear error instead of a million ``malformed_json`` rejects.

* :func:`iter_line_bytes` — ``(line_number, bytes)``: the fast path of the JSON-lines readers (orjson
  parses bytes directly; decoding happens only when a line is not valid UTF-8).
* :func:`line_blocks` — blocks of whole lines, for readers that split lines themselves.
"""

from __future__ import annotations

import json
import logging
import zlib
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from reczero.errors import DataError

log = logging.getLogger(__name__)

BATCH_ROWS = 65_536
READ_BYTES = 1 << 20            # plain bytes read per step
INFLATE_BYTES = 1 << 16         # compressed bytes per step: a corrupt stream loses at most one step's output
MAX_INFLATE = 8 << 20           # decompressed bytes per zlib call: bounds memory on a gzip bomb
MAX_LINE_BYTES = 64 << 20       # a longer "line" is not a record: a JSON array, a binary file
GZIP_MAGIC = b"\x1f\x8b"
UTF8_BOM = b"\xef\xbb\xbf"


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
               record: Any = None, n: int = 1) -> None:
        """List one record as rejected. ``reason`` is a short stable key (it is counted by);
        ``detail`` says what exactly was wrong; ``record`` is the offending raw text or fields.
        ``n``: the number of records this one entry stands for (counted ``n`` times, listed once)."""
        self.rejected.setdefault(stream, Counter())[reason] += n
        if self._fh is not None:
            entry = {"stream": stream, "file": str(file), "line": line, "reason": reason}
            if n != 1:
                entry["records"] = n
            if detail:
                entry["detail"] = detail
            if record is not None:
                if isinstance(record, bytes):
                    record = record[:4000].decode("utf-8", errors="replace")
                if not isinstance(record, str | int | float):
                    record = json.dumps(record, default=str)
                entry["record"] = record[:2000] if isinstance(record, str) else record
            self._fh.write(json.dumps(entry, ensure_ascii=False) + "\n")

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None


def _check_file(path: Path) -> None:
    if not path.exists():
        raise DataError(f"{path}: file not found")
    if path.is_dir():
        raise DataError(f"{path}: is a directory, expected a file")


def is_gzip(path: Path) -> bool:
    _check_file(path)
    with open(path, "rb") as fh:
        return fh.read(2) == GZIP_MAGIC


class _Truncated(Exception):
    """The gzip stream ended early or is corrupt; everything decodable before it was yielded."""


def _inflate(fh: IO[bytes]) -> Iterator[bytes]:
    """Decompressed blocks of a (multi-member) gzip stream; raises ``_Truncated`` at a damaged end."""
    member = None
    while buf := fh.read(INFLATE_BYTES):
        while buf:
            if member is None or member.eof:
                if member is not None:
                    buf = buf.lstrip(b"\x00")     # zero padding after a member, as gzip allows
                    if not buf:
                        break
                member = zlib.decompressobj(wbits=31)   # gzip header and trailer; CRC and size checked
            try:
                out = member.decompress(buf, MAX_INFLATE)
                while len(out) == MAX_INFLATE:
                    yield out
                    out = member.decompress(member.unconsumed_tail, MAX_INFLATE)
            except zlib.error as err:
                raise _Truncated(f"corrupt gzip data ({err})") from None
            if out:
                yield out
            buf = member.unused_data if member.eof else member.unconsumed_tail
    if member is None or not member.eof:
        raise _Truncated("unexpected end of the gzip stream")


# containers we do not open: a clear message beats a million "malformed_json" rejects
OTHER_MAGIC = {b"PK\x03\x04": "a zip archive", b"BZh": "bzip2-compressed", b"\xfd7zXZ\x00": "xz-compressed",
               b"\x28\xb5\x2f\xfd": "zstd-compressed"}


def _raw_blocks(path: Path) -> Iterator[bytes]:
    _check_file(path)
    with open(path, "rb") as fh:
        head = fh.read(512)
        fh.seek(0)
        if head.startswith(GZIP_MAGIC):
            yield from _inflate(fh)
            return
        kind = next((k for magic, k in OTHER_MAGIC.items() if head.startswith(magic)), None)
        if kind is None and head[257:262] == b"ustar":
            kind = "a tar archive"
        if kind is not None:
            raise DataError(f"{path}: is {kind}; expected a text file, plain or gzip (extract or decompress it first)")
        while buf := fh.read(READ_BYTES):
            yield buf


def line_blocks(path: Path, rejects: RejectLog | None, stream: str) -> Iterator[bytes]:
    """Blocks of whole lines (each ends with ``\\n`` except perhaps the file's last).

    On a truncated or corrupt gzip the complete lines are still yielded; the incomplete tail is
    counted and rejected as ``truncated`` and the file is appended to ``rejects.truncated``. Without
    a ``rejects`` log a truncated file raises :class:`DataError` instead.
    """
    partial: list[bytes] = []          # the pieces of the line still waiting for its newline
    size = lines = 0
    first = True
    try:
        for block in _raw_blocks(path):
            if first:
                block = block.removeprefix(UTF8_BOM)
                first = False
            cut = block.rfind(b"\n") + 1
            if not cut:
                partial.append(block)
                size += len(block)
                if size > MAX_LINE_BYTES:
                    raise DataError(f"{path}: line {lines + 1:,} is longer than {MAX_LINE_BYTES >> 20} MiB; "
                                    "expected one record per line")
                continue
            head = block[:cut] if cut < len(block) else block
            if partial:
                head = b"".join([*partial, head])
                partial, size = [], 0
            lines += head.count(b"\n")
            yield head
            if cut < len(block):
                partial.append(block[cut:])
                size = len(block) - cut
    except _Truncated as err:
        if rejects is None:
            raise DataError(f"{path}: {err} after {lines:,} complete lines; the file is truncated or damaged") from None
        log.warning("%s: %s; kept the %s complete lines before it", path, err, f"{lines:,}")
        rejects.truncated.append(str(path))
        tail = b"".join(partial)
        if tail.strip():
            rejects.count(stream)
            rejects.reject(stream, path, lines + 1, "truncated", f"incomplete last line ({err})", tail)
        return
    if partial:
        yield b"".join(partial)


def iter_line_bytes(path: Path, rejects: RejectLog, stream: str, blank: bool = False) -> Iterator[tuple[int, bytes]]:
    """Yield ``(line_number, raw_bytes)`` for each non-blank line (1-based, ``\\n`` removed);
    with ``blank=True`` blank lines too (for formats where a blank line is a damaged record)."""
    lineno = 0
    for block in line_blocks(path, rejects, stream):
        lines = block.split(b"\n")
        if block.endswith(b"\n"):
            lines.pop()              # split() leaves an empty piece after the final newline
        for line in lines:
            lineno += 1
            if blank or (line and not line.isspace()):
                yield lineno, line
