"""The loop shared by the JSON-lines dumps (Amazon 2014/2018/2023, Yelp).

Two paths over the same pieces (~1 MiB of whole lines each), one meaning:

* **vectorised** (reviews only): ``pyarrow.json`` parses the piece in C++ with an explicit schema of
  the few fields we keep (others ignored), then the checks — ids present, rating on the scale, time
  plausible — run as Arrow compute kernels. If the piece parses and every row passes, it is kept as
  is: no Python object per record. Clean pieces are the rule in real dumps, and this path is
  several times faster than the line loop.
* **line by line**, for any piece the vectorised path refuses (a malformed line, a wrong type, a
  missing field, non-UTF-8 bytes, a Python-literal line) and for meta files (which need HTML
  cleaning and duplicate checks): each line is parsed and turned into one row tuple by the format's
  ``row`` function, which raises :class:`Rejected` with a stable reason key and a detail naming the
  field. This path is the definition: on a clean piece both give the same rows (a test pins it).

Line parsing chooses speed first, then leniency: ``orjson`` reads the raw bytes; a line it refuses
is decoded with U+FFFD replacing bad bytes and retried with the stdlib ``json`` (which also accepts
``NaN`` and lone surrogate escapes; strings are then scrubbed so Arrow can store them), then with
the format's loose parser if it has one (Amazon 2014's Python dict literals, ``ast.literal_eval`` —
never ``eval``). Only what none of them reads is ``malformed_json``.

A file of the wrong format is caught early: if the first ``PROBE_RECORDS`` records of a file are all
rejected, or a file ends with none kept, :class:`DataError` names the file, the fields the format
needs and the fields found; an empty file is an error too.

A line the vectorised parser cannot read does not send its whole piece to the line loop: pyarrow
names the object ("... in row N"), so that line alone goes to the line loop and the lines before
and after it are tried vectorised again (at most ``MAX_RETRIES`` times per piece). In a real dump,
where one piece in a few holds a bad line, nearly every line is then read vectorised.
Still, a failed attempt costs a parse, so after a piece with no vectorised part the next piece goes
straight to the line loop, after two such pieces the next three, and so on (at most 63): a dirty or
Python-literal file costs little more than the line loop alone, a clean one runs vectorised.

Pieces are parsed in ``PARSE_THREADS`` threads (``pyarrow.json`` releases the GIL, and reads the
piece from an Arrow buffer, not a Python file object) a few pieces ahead of the line loop, which
stays in the calling thread and in file order, so line numbers and rejects are as in one thread.
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections import Counter, deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pj

from reczero.data.schema import INTERACTIONS_SCHEMA, ITEMS_SCHEMA, RatingScale
from reczero.data.sources import BATCH_ROWS, RejectLog, line_blocks
from reczero.data.sources._fields import LATEST_SECONDS, Rejected, ident, number, seconds, text
from reczero.errors import DataError

log = logging.getLogger(__name__)

PROBE_RECORDS = 1_000
PIECE_BYTES = 1 << 20
LINE = "line"                           # the optional line-number column
MAX_SKIP = 63                           # pieces read line by line before the vectorised path is tried again
MAX_RETRIES = 4                         # vectorised attempts per piece around lines the parser names as bad
PARSE_THREADS = 2                       # pieces parsed at once (pyarrow.json releases the GIL)
PREFETCH = 4                            # pieces parsed ahead of the line loop that consumes them


@dataclass(frozen=True)
class ReviewColumns:
    """Where a format keeps the interaction fields: the vectorised path's schema and, for a format
    whose time is a number, the line loop's row (:meth:`row`)."""

    user: str
    item: str
    rating: str
    time: str
    review: str | None
    summary: str | None
    per_second: int = 1                 # 1000: the time is in milliseconds
    date_format: str | None = None      # the time is a UTC date string in this strptime format

    def parse_options(self) -> pj.ParseOptions:
        fields = [(self.user, pa.string()), (self.item, pa.string()), (self.rating, pa.float64()),
                  (self.time, pa.string() if self.date_format else pa.int64())]
        fields += [(name, pa.string()) for name in (self.review, self.summary) if name]
        return pj.ParseOptions(explicit_schema=pa.schema(fields), unexpected_field_behavior="ignore")

    @property
    def required(self) -> tuple[str, str, str, str]:
        """The fields a review line must have (named when a file of the wrong format is refused)."""
        return (self.user, self.item, self.rating, self.time)

    def row(self, obj: dict) -> tuple:
        """One review line as an INTERACTIONS_SCHEMA row, time in ``1/per_second`` seconds;
        :class:`Rejected` names the field. Formats with another time (a date string, a fallback
        field) write their own row function."""
        try:
            user, item, rating, ts = obj[self.user], obj[self.item], obj[self.rating], obj[self.time]
        except KeyError as err:
            raise Rejected("missing_field", f"no {err.args[0]!r}") from None
        return (ident(user, self.user), ident(item, self.item), number(rating, self.rating, "bad_rating"),
                seconds(ts, self.time, per_second=self.per_second),
                text(obj.get(self.review)) if self.review else None,
                text(obj.get(self.summary)) if self.summary else None)


_SURROGATE = re.compile("[\ud800-\udfff]")


def _scrub(obj: Any) -> Any:
    """Replace lone surrogates (legal in JSON escapes, illegal in UTF-8) by U+FFFD, recursively."""
    if isinstance(obj, str):
        return _SURROGATE.sub("\ufffd", obj)
    if isinstance(obj, dict):
        return {_scrub(k): _scrub(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_scrub(v) for v in obj]
    return obj


def parse_line(line: bytes, loose: Callable[[str], Any] | None = None) -> Any:
    try:
        return orjson.loads(line)
    except orjson.JSONDecodeError as err:
        first_error = str(err)
    s = line.decode("utf-8", errors="replace")
    try:
        return _scrub(json.loads(s))
    except (ValueError, RecursionError):
        pass
    if loose is not None:
        try:
            return _scrub(loose(s))
        except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
            pass
    raise Rejected("malformed_json", first_error[:200])


def _pieces(block: bytes) -> Iterator[bytes]:
    """Cut a block of whole lines into pieces of about PIECE_BYTES, at line ends."""
    start = 0
    while len(block) - start > PIECE_BYTES:
        cut = block.rfind(b"\n", start, start + PIECE_BYTES) + 1 or block.find(b"\n", start + PIECE_BYTES) + 1
        if not cut:
            break
        yield block[start:cut]
        start = cut
    yield block[start:] if start else block


_ERROR_ROW = re.compile(r" in row (\d+)$")


class _BadRow(Exception):
    """pyarrow.json could not read the piece's object number ``row`` (0-based)."""

    def __init__(self, row: int):
        super().__init__(row)
        self.row = row


def _vectorised(piece: bytes, lines: int, cols: ReviewColumns, options: pj.ParseOptions,
                scale: RatingScale | None) -> pa.Table | None:
    """The piece (of ``lines`` lines) as INTERACTIONS_SCHEMA rows if it parses, has one row per line
    and every row passes the checks; else None, or :class:`_BadRow` when the parser names the
    object it could not read. Few kernels per piece: each costs a pass."""
    try:
        t = pj.read_json(pa.BufferReader(piece), read_options=pj.ReadOptions(use_threads=False, block_size=len(piece) + 1),
                         parse_options=options)
    except (pa.ArrowException, ValueError) as err:
        row = _ERROR_ROW.search(str(err))
        if row is not None:
            raise _BadRow(int(row.group(1))) from None
        return None
    if t.num_rows != lines:
        return None                                  # blank lines, or two objects on one line: line loop
    user, item, rating, raw_time = t[cols.user], t[cols.item], t[cols.rating], t[cols.time]
    if user.null_count or item.null_count or rating.null_count or raw_time.null_count:
        return None
    if pc.index(user, "").as_py() >= 0 or pc.index(item, "").as_py() >= 0:
        return None
    if cols.date_format:
        raw_time = pc.strptime(raw_time, format=cols.date_format, unit="s", error_is_null=True)
        if raw_time.null_count:
            return None
        raw_time = raw_time.cast(pa.int64())
    t_min, t_max = pc.min_max(raw_time).values()
    if t_min.as_py() < 0 or t_max.as_py() // cols.per_second > LATEST_SECONDS:
        return None
    r_min, r_max = (v.as_py() for v in pc.min_max(rating).values())
    if scale is None:
        if not (math.isfinite(r_min) and math.isfinite(r_max)):
            return None
    else:
        if r_min < scale.lo or r_max > scale.hi:
            return None
        try:                                         # on the step: (rating - lo) / step is whole
            pc.divide(pc.subtract(rating, scale.lo), scale.step).cast(pa.int64())
        except pa.ArrowInvalid:
            return None
    time = pc.divide(raw_time, cols.per_second) if cols.per_second != 1 else raw_time

    def text(name: str | None) -> pa.ChunkedArray:
        if name is None:
            return pa.chunked_array([pa.nulls(t.num_rows, pa.string())])
        col = t[name]
        if pc.index(col, "").as_py() < 0:
            return col
        return pc.if_else(pc.equal(col, ""), pa.scalar(None, pa.string()), col)

    return pa.Table.from_arrays([user, item, rating, time, text(cols.review), text(cols.summary)],
                                schema=INTERACTIONS_SCHEMA)


def _segments(path: Path, rejects: RejectLog, stream: str, columns: ReviewColumns | None,
              options: pj.ParseOptions | None, scale: RatingScale | None) -> Iterator[tuple[bytes, pa.Table | None]]:
    """The file's pieces in order, as ``(bytes, table)`` (parsed by the vectorised path) or
    ``(bytes, None)`` (for the line loop). Pieces are parsed in ``PARSE_THREADS`` threads
    (``pyarrow.json`` releases the GIL), at most ``PREFETCH`` ahead of the consumer."""
    pieces = (piece for block in line_blocks(path, rejects, stream) for piece in _pieces(block))
    if options is None:
        yield from ((piece, None) for piece in pieces)
        return
    queue: deque[Future | bytes] = deque()
    misses = skip = 0                         # back off from the vectorised path while it keeps failing

    def settle(item: Future | bytes) -> list[tuple[bytes, pa.Table | None]]:
        nonlocal misses, skip
        if isinstance(item, bytes):
            return [(item, None)]
        segments = item.result()
        misses = misses + 1 if all(table is None for _, table in segments) else 0
        skip = min(2 ** misses - 1, MAX_SKIP)
        return segments

    with ThreadPoolExecutor(PARSE_THREADS) as pool:
        for piece in pieces:
            if skip:
                skip -= 1
                queue.append(piece)
            else:
                queue.append(pool.submit(_attempt, piece, columns, options, scale))
            while len(queue) > PREFETCH:
                yield from settle(queue.popleft())
        while queue:
            yield from settle(queue.popleft())


def _attempt(piece: bytes, columns: ReviewColumns, options: pj.ParseOptions,
             scale: RatingScale | None) -> list[tuple[bytes, pa.Table | None]]:
    """A piece through the vectorised path, in segments: a line the parser names as unreadable
    goes to the line loop alone and the lines around it are tried again (at most ``MAX_RETRIES``
    times per piece, so a file of bad lines costs little more than the line loop)."""
    segments: list[tuple[bytes, pa.Table | None]] = []
    rest = piece
    for _ in range(MAX_RETRIES):
        lines = rest.count(b"\n") + (not rest.endswith(b"\n"))
        try:
            segments.append((rest, _vectorised(rest, lines, columns, options, scale)))
            return segments
        except _BadRow as bad:
            row = bad.row
        if row >= lines:
            break
        cut = _line_start(rest, row)
        end = rest.find(b"\n", cut) + 1 or len(rest)
        if cut:                                 # the lines before it parsed; their checks are still to run
            head = rest[:cut]
            try:
                segments.append((head, _vectorised(head, row, columns, options, scale)))
            except _BadRow:
                segments.append((head, None))
        segments.append((rest[cut:end], None))
        rest = rest[end:]
        if not rest:
            return segments
    segments.append((rest, None))
    return segments


def _line_start(piece: bytes, k: int) -> int:
    """Offset of line ``k`` (0-based) in ``piece``."""
    at = 0
    for _ in range(k):
        at = piece.index(b"\n", at) + 1
    return at


def read_jsonl(path: Path, rejects: RejectLog, stream: str, row: Callable[[dict], tuple], *,
               source: str, expected: tuple[str, ...], scale: RatingScale | None = None,
               loose: Callable[[str], Any] | None = None, columns: ReviewColumns | None = None,
               vectorised: bool = True, line_numbers: bool = False,
               item_fields: pa.Schema | None = None) -> Iterator[pa.RecordBatch]:
    """Yield RecordBatches of one JSON-lines file.

    ``stream`` is ``"interactions"`` (INTERACTIONS_SCHEMA; ratings are checked against ``scale``;
    ``columns`` enables the vectorised path) or ``"items"`` (ITEMS_SCHEMA, then ``item_fields`` when
    ``row`` returns more, e.g. the item filter's ``ITEM_CHECK_FIELDS``; repeated item ids are
    rejected as ``duplicate_item``). ``vectorised=False`` forces the line loop (for tests).
    ``line_numbers=True`` appends a ``line`` column (int64, 1-based source line of each row), so that
    later stages can name the line of a record they drop.
    """
    path = Path(path)
    schema = INTERACTIONS_SCHEMA if stream == "interactions" else ITEMS_SCHEMA
    if item_fields is not None and stream == "items":
        schema = pa.schema([*schema, *item_fields])
    if line_numbers:
        schema = schema.append(pa.field(LINE, pa.int64()))
    items = stream == "items"
    options = columns.parse_options() if columns is not None and vectorised and not items else None
    seen: set[str] = set()
    tables: list[pa.Table] = []
    pending = 0                               # rows in `tables`
    lineno = read = kept = counted = 0        # counted: records already passed to rejects.count
    reasons: Counter = Counter()
    found: list[str] | None = None
    for piece, table in _segments(path, rejects, stream, columns, options, scale):
        if table is not None:
            lines = table.num_rows                # the vectorised path has one row per line
            if line_numbers:
                table = table.append_column(LINE, pa.array(range(lineno + 1, lineno + lines + 1), pa.int64()))
            lineno += lines
            read += lines
            kept += lines
        else:
            rows = []
            for line in piece.split(b"\n"):
                lineno += 1
                if not line or line.isspace():
                    continue
                read += 1
                try:
                    obj = parse_line(line, loose)
                    if type(obj) is not dict:
                        raise Rejected("not_a_record", f"line holds a {type(obj).__name__}, expected an object")
                    if found is None:
                        found = list(obj)[:15]
                    r = row(obj)
                    if items:
                        if r[0] in seen:
                            raise Rejected("duplicate_item", f"item {r[0]!r} already listed earlier in the file")
                        seen.add(r[0])
                    elif scale is not None and not _on_scale(r[2], scale):
                        raise Rejected("bad_rating", f"rating {r[2]:g} is outside the scale {scale.lo:g}-{scale.hi:g} "
                                                     f"(step {scale.step:g})")
                except Rejected as rej:
                    rejects.reject(stream, path, lineno, rej.reason, rej.detail, line)
                    reasons[rej.reason] += 1
                    if read == PROBE_RECORDS and kept == 0:
                        rejects.count(stream, read - counted)
                        raise _wrong_source(path, source, stream, expected, found, reasons, read) from None
                    continue
                rows.append(r + (lineno,) if line_numbers else r)
                kept += 1
            if piece.endswith(b"\n"):
                lineno -= 1               # split() left an empty piece after the final newline
            table = _table(rows, schema)
        tables.append(table)
        pending += table.num_rows
        if pending >= BATCH_ROWS:
            rejects.count(stream, read - counted)
            counted = read
            yield from pa.concat_tables(tables).combine_chunks().to_batches()
            tables, pending = [], 0
    rejects.count(stream, read - counted)
    if pending:
        yield from pa.concat_tables(tables).combine_chunks().to_batches()
    if not read:
        damaged = " complete" if str(path) in rejects.truncated else ""
        raise DataError(f"{path}: no{damaged} {stream} records (expected {source} JSON lines with {', '.join(expected)})")
    if not kept:
        raise _wrong_source(path, source, stream, expected, found, reasons, read)
    log.info("%s: %s %s records read, %s kept", path, f"{read:,}", stream, f"{kept:,}")


def _on_scale(rating: float, scale: RatingScale) -> bool:
    if not scale.lo <= rating <= scale.hi:
        return False
    steps = (rating - scale.lo) / scale.step
    return abs(steps - round(steps)) < 1e-6


def _table(rows: list[tuple], schema: pa.Schema) -> pa.Table:
    if not rows:
        return schema.empty_table()
    columns = zip(*rows, strict=True)
    return pa.Table.from_arrays([pa.array(col, type=f.type) for col, f in zip(columns, schema, strict=True)],
                                schema=schema)


def _wrong_source(path: Path, source: str, stream: str, expected: tuple[str, ...], found: list[str] | None,
                  reasons: Counter, read: int) -> DataError:
    what = "the first" if read == PROBE_RECORDS else "all"
    why = ", ".join(f"{k}: {v:,}" for k, v in reasons.most_common(3))
    kind = "meta" if stream == "items" else "review"
    seen = f"the first object has {', '.join(found)}" if found else "no line is a JSON object"
    return DataError(f"{path}: {what} {read:,} {stream} records were rejected ({why}); is --source {source} right "
                     f"for this file? a {source} {kind} line needs {', '.join(expected)}; {seen} (see rejects.jsonl)")


def make_readers(name: str, meta_row: Callable[[dict], tuple], *, columns: ReviewColumns,
                 meta_fields: tuple[str, ...], default_scale: RatingScale,
                 review_row: Callable[[dict], tuple] | None = None, loose: Callable[[str], Any] | None = None,
                 item_fields: pa.Schema | None = None):
    """The two reader functions of the source contract for a JSON-lines format (one per source module).

    Reviews are read by ``review_row`` (default: ``columns.row``, which needs a numeric time) and
    must have ``columns.required``; items by ``meta_row``, and must have ``meta_fields``.
    ``item_fields``: the columns that ``meta_row`` returns after the ITEMS_SCHEMA ones, if any."""
    if review_row is None:
        if columns.date_format:
            raise ValueError(f"{name}: a date-string time needs the format's own review_row")
        review_row = columns.row
    review_fields = columns.required

    def read_interactions(path: Path, rejects: RejectLog, scale: RatingScale | None = default_scale,
                          vectorised: bool = True, line_numbers: bool = False, **_: object) -> Iterator[pa.RecordBatch]:
        """Reviews; ratings off ``scale`` (default: the source's) are rejected as ``bad_rating``.
        ``vectorised=False`` reads line by line only (the reference path, for tests);
        ``line_numbers=True`` adds a ``line`` column (the source line of each row)."""
        return read_jsonl(path, rejects, "interactions", review_row, source=name, expected=review_fields,
                          scale=scale, columns=columns, vectorised=vectorised, line_numbers=line_numbers, loose=loose)

    def read_items(path: Path, rejects: RejectLog, line_numbers: bool = False, **_: object) -> Iterator[pa.RecordBatch]:
        """Item metadata, one record per line."""
        return read_jsonl(path, rejects, "items", meta_row, source=name, expected=meta_fields, loose=loose,
                          line_numbers=line_numbers, item_fields=item_fields)

    return read_interactions, read_items
