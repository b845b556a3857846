"""The loop shared by the JSON-lines dumps (Amazon 2014/2018/2023, Yelp) and the field helpers.

One pass per file: each line is parsed, turned into one row tuple by the format's ``row`` function
(which raises :class:`Rejected` with a stable reason key and a detail naming the field), appended to
a list, and every ``BATCH_ROWS`` rows the list is transposed into one Arrow RecordBatch. That is all
the Python work per record; nothing else is kept except, for items, the set of ids already seen.

Parsing chooses speed first and then leniency: ``orjson`` reads the raw bytes (about 4x the stdlib);
a line it refuses is decoded with U+FFFD replacing bad bytes and retried, then given to the stdlib
``json`` (which accepts ``NaN`` and lone surrogate escapes; strings are then scrubbed so Arrow can
store them), then to the format's loose parser if it has one (Amazon 2014's Python dict literals,
``ast.literal_eval`` — never ``eval``). Only what none of them reads is ``malformed_json``.

A file of the wrong format is caught early: if the first ``PROBE_RECORDS`` records of a file are all
rejected, or a file ends with none kept, :class:`DataError` names the file, the fields the format
needs and the fields found.
"""

from __future__ import annotations

import html
import json
import logging
import math
import re
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa

from reczero.data.schema import INTERACTIONS_SCHEMA, ITEMS_SCHEMA, RatingScale
from reczero.data.sources import BATCH_ROWS, RejectLog, iter_line_bytes
from reczero.errors import DataError

log = logging.getLogger(__name__)

PROBE_RECORDS = 1_000
MAX_TITLE_CHARS = 300
MAX_DESCRIPTION_CHARS = 2_000
LATEST_SECONDS = 4_102_444_800          # 2100-01-01: later "seconds" are milliseconds or garbage


class Rejected(Exception):
    """Raised by a row function: the record is not kept. ``reason`` is counted, ``detail`` explains."""

    def __init__(self, reason: str, detail: str):
        super().__init__(reason, detail)
        self.reason = reason
        self.detail = detail


# ---- field helpers: each returns a clean value or raises Rejected naming the field ---------------


def ident(value: Any, name: str) -> str:
    if type(value) is str and value:
        return value
    if value is None or value == "":
        raise Rejected("missing_field", f"{name} is empty")
    if type(value) is int:
        return str(value)
    raise Rejected("bad_id", f"{name} is {type(value).__name__}, expected a string")


def number(value: Any, name: str, reason: str) -> float:
    if type(value) is float or type(value) is int:
        x = float(value)
    elif type(value) is str:
        try:
            x = float(value.replace(",", ""))
        except ValueError:
            raise Rejected(reason, f"{name}={value[:40]!r} is not a number") from None
    elif value is None:
        raise Rejected("missing_field", f"{name} is null")
    else:
        raise Rejected(reason, f"{name} is {type(value).__name__}, expected a number")
    if not math.isfinite(x):
        raise Rejected(reason, f"{name}={value!r} is not finite")
    return x


def seconds(value: Any, name: str, per_second: int = 1) -> int:
    """Unix seconds from a number of ``1/per_second`` seconds (1000 for milliseconds)."""
    x = number(value, name, "bad_timestamp")
    t = int(x // per_second)
    if t < 0 or t > LATEST_SECONDS:
        unit = "seconds" if per_second == 1 else "milliseconds"
        raise Rejected("bad_timestamp", f"{name}={value!r} is not a plausible Unix time in {unit}")
    return t


def text(value: Any) -> str | None:
    """A nullable free-text field: strings kept (empty → null), other scalars as text."""
    if type(value) is str:
        return value or None
    if value is None:
        return None
    if isinstance(value, list):
        return " ".join(str(v) for v in value if v) or None
    return str(value)


_SCRIPT = re.compile(r"<(script|style)\b.*?(</\1\s*>|$)", re.IGNORECASE | re.DOTALL)
_TAG = re.compile(r"<[^>]*>")
_SPACE = re.compile(r"\s+")


def clean_text(value: Any, limit: int) -> str | None:
    """Display text from scraped HTML: scripts and tags removed, entities unescaped, spaces
    collapsed, at most ``limit`` characters (cut at a word)."""
    s = text(value)
    if s is None:
        return None
    if "<" in s or "&" in s:
        s = html.unescape(_TAG.sub(" ", _SCRIPT.sub(" ", s)))
    s = _SPACE.sub(" ", s).strip()
    if len(s) > limit:
        s = s[:limit].rsplit(" ", 1)[0] + "…"
    return s or None


def attributes(*groups: Any) -> list[str]:
    """Flatten strings / lists / lists of lists into a deduplicated list (first occurrence kept)."""
    out: dict[str, None] = {}

    def add(v: Any) -> None:
        if isinstance(v, str):
            v = v.strip()
            if v and len(v) <= MAX_TITLE_CHARS:
                out.setdefault(html.unescape(v) if "&" in v else v)
        elif isinstance(v, list | tuple):
            for x in v:
                add(x)

    for g in groups:
        add(g)
    return list(out)


# ---- parsing a line ----------------------------------------------------------------------------


def _scrub(obj: Any) -> Any:
    """Replace lone surrogates (legal in JSON escapes, illegal in UTF-8) by U+FFFD, recursively."""
    if isinstance(obj, str):
        return obj.encode("utf-8", "surrogatepass").decode("utf-8", "replace")
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


# ---- the loop ----------------------------------------------------------------------------------


def read_jsonl(path: Path, rejects: RejectLog, stream: str, row: Callable[[dict], tuple], *,
               source: str, expected: tuple[str, ...], scale: RatingScale | None = None,
               loose: Callable[[str], Any] | None = None) -> Iterator[pa.RecordBatch]:
    """Yield RecordBatches of ``row(record)`` tuples for one JSON-lines file.

    ``stream`` is ``"interactions"`` (rows follow INTERACTIONS_SCHEMA; ratings are checked against
    ``scale``) or ``"items"`` (ITEMS_SCHEMA; repeated item ids are rejected as ``duplicate_item``).
    """
    path = Path(path)
    schema = INTERACTIONS_SCHEMA if stream == "interactions" else ITEMS_SCHEMA
    items = stream == "items"
    seen: set[str] = set()
    rows: list[tuple] = []
    read = kept = counted = 0                 # counted: records already passed to rejects.count
    reasons: Counter = Counter()
    found: list[str] | None = None
    for lineno, line in iter_line_bytes(path, rejects, stream):
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
                raise Rejected("bad_rating", f"rating {r[2]:g} is outside the scale {scale.lo:g}-{scale.hi:g} (step {scale.step:g})")
        except Rejected as rej:
            rejects.reject(stream, path, lineno, rej.reason, rej.detail, line)
            reasons[rej.reason] += 1
            if read == PROBE_RECORDS and kept == 0:
                rejects.count(stream, read - counted)
                raise _wrong_source(path, source, stream, expected, found, reasons, read) from None
            continue
        rows.append(r)
        kept += 1
        if len(rows) == BATCH_ROWS:
            rejects.count(stream, read - counted)
            counted = read
            yield _batch(rows, schema)
            rows = []
    rejects.count(stream, read - counted)
    if rows:
        yield _batch(rows, schema)
    if read and not kept:
        raise _wrong_source(path, source, stream, expected, found, reasons, read)
    log.info("%s: %s %s records read, %s kept", path, f"{read:,}", stream, f"{kept:,}")


def _on_scale(rating: float, scale: RatingScale) -> bool:
    if not scale.lo <= rating <= scale.hi:
        return False
    steps = (rating - scale.lo) / scale.step
    return abs(steps - round(steps)) < 1e-6


def _batch(rows: list[tuple], schema: pa.Schema) -> pa.RecordBatch:
    columns = zip(*rows, strict=True)
    return pa.RecordBatch.from_arrays([pa.array(col, type=f.type) for col, f in zip(columns, schema, strict=True)],
                                      schema=schema)


def _wrong_source(path: Path, source: str, stream: str, expected: tuple[str, ...], found: list[str] | None,
                  reasons: Counter, read: int) -> DataError:
    what = "the first" if read == PROBE_RECORDS else "all"
    why = ", ".join(f"{k}: {v:,}" for k, v in reasons.most_common(3))
    seen = ", ".join(found) if found else "no JSON objects"
    return DataError(f"{path}: {what} {read:,} {stream} records were rejected ({why}); is this a {source} "
                     f"{'meta' if stream == 'items' else 'review'} file? expected fields {', '.join(expected)}; "
                     f"found {seen} (see rejects.jsonl)")
