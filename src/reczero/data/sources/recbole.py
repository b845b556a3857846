"""RecBole atomic files: ``NAME.inter``, and ``NAME.item`` when it is present beside it.

The format, as RecBole defines it (its "Atomic Files" and data-settings docs, and
``Dataset._load_feat``): tab-separated text whose first line is a header of ``name:type`` fields,
``type`` one of ``token`` (one id or word), ``token_seq`` (tokens separated by a space), ``float``
and ``float_seq``; the columns may come in any order. What this reader chose, and why:

* **Fields by name, RecBole's defaults.** ``user_id``, ``item_id``, ``rating`` and ``timestamp``
  (RecBole's ``USER_ID_FIELD`` ... ``TIME_FIELD`` defaults); files that name them otherwise (Yelp's
  ``business_id``, ``stars``, ``date``) are read with ``--columns user=COL,item=COL,rating=COL,
  time=COL``, as RecBole's own config maps them. Ids must be ``token``, rating and time ``float``;
  a header that does not fit is one clear error naming the field, not a file of rejects.
* **Rating optional.** Without a rating column the dataset is implicit (``rating`` null; rating
  commands refuse it, ranking takes it). With one, the scale is ``--scale`` if given, else read
  from the values (min and max, whole or half steps; logged), and a rating off it is
  ``bad_rating``.
* **Timestamp optional.** Float Unix seconds, floored. Without it the file order is the time
  within a user: each user's interactions get 0, 1, 2, ... seconds in the order of their lines (as
  RecBole keeps file order when there is no time field).
* **One line, one record; damage by reason**: ``malformed_row`` (not as many tab-separated fields as
  the header), ``missing_field`` (an empty user, item, rating or time), ``bad_rating`` (not a
  finite number, or off the scale), ``bad_timestamp`` (not a number, negative, after 2100). Blank
  lines are not records. Duplicates and unknown items are ``write_prepared``'s, as for every source:
  an interaction whose item has no line in ``NAME.item`` is rejected there as ``unknown_item``.
* **Items** (``NAME.item`` beside the ``.inter``, or ``--meta``): the item field is the one the
  interactions use; the title is ``title``, ``movie_title`` or ``name`` (the first present), the
  description ``description``; every other ``token`` field becomes an attribute ``name: value``
  (``release_year: 1995``, ``brand: Sony``) and every other ``token_seq`` field its tokens
  (``genre``: ``Comedy``, ``Drama``). ``float`` fields are not carried: in RecBole's item files
  they are aggregates over the interactions (``avg_rating``, ``sales_rank``, ``members``), which a
  prompt must not see. ``--item-columns item=COL,title=COL,attributes=COL,description=COL``
  chooses instead.

Lines are split in Python (``str.split("\\t")``), not by a CSV engine as RecBole does (pandas):
each line is checked on its own, so a bad line is rejected with its number instead of failing or
silently shifting the file. There is no quoting (a ``"`` is text), as a field never holds a tab.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa

from reczero.data.schema import INTERACTIONS_SCHEMA, ITEMS_SCHEMA, RatingScale
from reczero.data.sources import BATCH_ROWS, RejectLog, iter_line_bytes
from reczero.data.sources._fields import (
    LATEST_SECONDS,
    MAX_DESCRIPTION_CHARS,
    MAX_TITLE_CHARS,
    attributes,
    clean_text,
    labelled,
)
from reczero.data.sources.table import mapping
from reczero.errors import DataError

log = logging.getLogger(__name__)

EXPECTED = ("RecBole atomic files: NAME.inter (or its folder) with a tab-separated header such as "
            "'user_id:token item_id:token rating:float timestamp:float'")
TYPES = ("token", "token_seq", "float", "float_seq")
FIELDS = {"user": "user_id", "item": "item_id", "rating": "rating", "time": "timestamp"}   # RecBole's defaults
FIELD_TYPES = {"user": "token", "item": "token", "rating": "float", "time": "float"}
TITLE_FIELDS = ("title", "movie_title", "name")
DESCRIPTION_FIELD = "description"
ITEM_KEYS = ("item", "title", "attributes", "description")


@dataclass(frozen=True)
class Header:
    """The ``name:type`` fields of an atomic file's first line, in file order."""

    path: Path
    names: list[str]
    types: list[str]

    def index(self, name: str) -> int | None:
        return self.names.index(name) if name in self.names else None

    def describe(self) -> str:
        return " ".join(f"{n}:{t}" for n, t in zip(self.names, self.types, strict=True))


def inter_file(path: Path) -> Path:
    """The ``.inter`` file of ``--input``: the file itself, or in a folder ``FOLDER.inter`` (RecBole's
    ``dataset/NAME/NAME.inter`` layout), else the folder's only ``.inter`` file (``.gz`` allowed)."""
    path = Path(path)
    if not path.is_dir():
        return path
    named = path / f"{path.name}.inter"
    if named.is_file():
        return named
    found = sorted([*path.glob("*.inter"), *path.glob("*.inter.gz")])
    if len(found) == 1:
        return found[0]
    listing = ", ".join(p.name for p in found) if found else "no .inter file"
    raise DataError(f"{path}: expected {path.name}.inter or exactly one .inter file in the folder; found {listing}")


def default_meta(path: Path, **_: object) -> Path | None:
    """``NAME.item`` (or ``NAME.item.gz``) beside ``NAME.inter`` (or ``NAME.inter.gz``), if present."""
    inter = inter_file(path)
    name = inter.name.removesuffix(".gz").removesuffix(".inter")
    return next((p for p in (inter.with_name(f"{name}.item"), inter.with_name(f"{name}.item.gz")) if p.is_file()), None)


def input_files(path: Path) -> list[Path]:
    return [inter_file(path)]


def read_header(path: Path) -> Header:
    """The header of an atomic file; :class:`DataError` naming the field when it is not RecBole's."""
    for lineno, line in iter_line_bytes(path, RejectLog(), "header"):
        names, types = [], []
        for raw in line.decode("utf-8", errors="replace").rstrip("\r").split("\t"):
            name, _, kind = raw.strip().rpartition(":")
            if not name or kind not in TYPES:
                raise DataError(f"{path}: line {lineno}: header field {raw!r} is not 'name:type' with type "
                                f"{', '.join(TYPES)}; expected {EXPECTED}")
            if name in names:
                raise DataError(f"{path}: line {lineno}: field {name!r} appears twice in the header")
            names.append(name)
            types.append(kind)
        return Header(Path(path), names, types)
    raise DataError(f"{path}: no header line; expected {EXPECTED}")


def interaction_fields(header: Header, columns: str | None) -> dict[str, int]:
    """Column index per key (``user``, ``item``, and ``rating``/``time`` when present)."""
    given = mapping(columns, tuple(FIELDS), (), "--columns")
    names = {**FIELDS, **given}
    found: dict[str, int] = {}
    for key, name in names.items():
        at = header.index(name)
        if at is None:
            if key in ("user", "item") or key in given:
                raise DataError(f"{header.path}: no field {name!r} ({key}; --columns {key}=COL names another); "
                                f"the header has {header.describe()}")
            continue
        if header.types[at] != FIELD_TYPES[key]:
            raise DataError(f"{header.path}: field {name!r} is {header.types[at]}; the {key} field must be "
                            f"{FIELD_TYPES[key]}")
        found[key] = at
    return found


def has_ratings(path: Path, columns: str | None = None, **_: object) -> bool:
    """Whether the ``.inter`` file has a rating field (without one the dataset is implicit)."""
    return "rating" in interaction_fields(read_header(inter_file(path)), columns)


def detect_scale(path: Path, columns: str | None = None, **_: object) -> RatingScale:
    """The rating scale from the values: min to max, in whole or half steps (one pass over the file)."""
    inter = inter_file(path)
    header = read_header(inter)
    at = interaction_fields(header, columns)["rating"]
    values: set[float] = set()
    for _, fields, _ in _rows(header, RejectLog(), "interactions"):
        try:
            x = float(fields[at])
        except ValueError:
            continue
        if math.isfinite(x):
            values.add(x)
    name = header.names[at]
    if len(values) < 2:
        raise DataError(f"{inter}: the rating field {name!r} holds {'one value' if values else 'no number'} "
                        f"({', '.join(f'{v:g}' for v in values) or 'none'}): no scale to read; pass --scale lo,hi, "
                        "or for implicit feedback remove the field")
    step = 1.0 if all(v.is_integer() for v in values) else 0.5 if all((2 * v).is_integer() for v in values) else None
    if step is None:
        raise DataError(f"{inter}: the ratings in {name!r} are not in whole or half steps; pass --scale lo,hi,step")
    scale = RatingScale(min(values), max(values), step)
    log.info("%s: rating scale %g-%g step %g read from %r (--scale overrides)", inter, scale.lo, scale.hi, step, name)
    return scale


def read_interactions(path: Path, rejects: RejectLog, scale: RatingScale | None = None, columns: str | None = None,
                      **_: object) -> Iterator[pa.RecordBatch]:
    inter = inter_file(path)
    header = read_header(inter)
    at = interaction_fields(header, columns)
    u, i, r, t = at["user"], at["item"], at.get("rating"), at.get("time")
    if r is None:
        log.info("%s: no rating field: an implicit dataset (ratings null)", inter)
    if t is None:
        log.info("%s: no timestamp field: the file order is the time within each user", inter)
    position: dict[str, int] = {}           # without timestamps: each user's next position
    rows: list[tuple] = []
    read = kept = 0
    for lineno, fields, raw in _rows(header, rejects, "interactions"):
        read += 1
        user, item = fields[u].strip(), fields[i].strip()
        reason, detail, rating, ts = None, "", None, 0
        if not user or not item:
            reason, detail = "missing_field", f"empty {header.names[u] if not user else header.names[i]}"
        elif r is not None:
            reason, detail, rating = _rating(fields[r], header.names[r], scale)
        if reason is None and t is not None:
            reason, detail, ts = _seconds(fields[t], header.names[t])
        if reason is not None:
            rejects.reject("interactions", inter, lineno, reason, detail, raw)
            continue
        if t is None:
            ts = position.get(user, 0)
            position[user] = ts + 1
        rows.append((user, item, rating, ts))
        kept += 1
        if len(rows) == BATCH_ROWS:
            yield _interactions(rows)
            rows = []
    if rows:
        yield _interactions(rows)
    if read and not kept:
        raise DataError(f"{inter}: all {read:,} interaction lines were rejected (see rejects.jsonl); "
                        f"the header is {header.describe()}")


def read_items(path: Path, rejects: RejectLog, columns: str | None = None, item_columns: str | None = None,
               **_: object) -> Iterator[pa.RecordBatch]:
    header = read_header(Path(path))
    ident, title, description, attrs = _item_fields(header, columns, item_columns)
    rows: list[tuple] = []
    for lineno, fields, raw in _rows(header, rejects, "items"):
        item = fields[ident].strip()
        if not item:
            rejects.reject("items", header.path, lineno, "missing_field", f"empty {header.names[ident]}", raw)
            continue
        values = [fields[k].split() if header.types[k] == "token_seq" else labelled(label, fields[k]) if label
                  else fields[k] for k, label in attrs]
        rows.append((item, clean_text(fields[title], MAX_TITLE_CHARS) if title is not None else None,
                     attributes(*values),
                     clean_text(fields[description], MAX_DESCRIPTION_CHARS) if description is not None else None))
        if len(rows) == BATCH_ROWS:
            yield _items(rows)
            rows = []
    if rows:
        yield _items(rows)


def _item_fields(header: Header, columns: str | None, item_columns: str | None
                 ) -> tuple[int, int | None, int | None, list[tuple[int, str | None]]]:
    """(id, title, description, attribute columns) of an item file; each attribute column comes with
    the label its ``token`` values get (``name: value``), None for a column chosen by name."""
    chosen = mapping(item_columns, ITEM_KEYS, (), "--item-columns")
    name = chosen.get("item") or mapping(columns, tuple(FIELDS), (), "--columns").get("item", FIELDS["item"])
    for key, field in chosen.items():
        if header.index(field) is None:
            raise DataError(f"{header.path}: no field {field!r} (--item-columns {key}=...); the header has "
                            f"{header.describe()}")
    ident = header.index(name)
    if ident is None or header.types[ident] != "token":
        raise DataError(f"{header.path}: no item field {name!r} of type token (--item-columns item=COL names "
                        f"another); the header has {header.describe()}")
    text = [k for k, kind in enumerate(header.types) if kind in ("token", "token_seq") and k != ident]
    if item_columns:
        title, description = header.index(chosen.get("title", "")), header.index(chosen.get("description", ""))
        attrs = [(header.index(chosen["attributes"]), None)] if "attributes" in chosen else []
    else:
        title = min((k for k in text if header.names[k] in TITLE_FIELDS), key=lambda k: TITLE_FIELDS.index(header.names[k]),
                    default=None)
        description = next((k for k in text if header.names[k] == DESCRIPTION_FIELD), None)
        attrs = [(k, header.names[k]) for k in text if k not in (title, description)]
    return ident, title, description, attrs   # type: ignore[return-value]


def _rows(header: Header, rejects: RejectLog, stream: str) -> Iterator[tuple[int, list[str], bytes]]:
    """``(line number, fields, raw line)`` of each data line with the header's field count; every
    line is counted, one with another count is rejected as ``malformed_row``."""
    n = len(header.names)
    lines = iter_line_bytes(header.path, rejects, stream)
    next(lines, None)                                       # the header
    for lineno, raw in lines:
        rejects.count(stream)
        fields = raw.decode("utf-8", errors="replace").rstrip("\r").split("\t")
        if len(fields) != n:
            rejects.reject(stream, header.path, lineno, "malformed_row",
                           f"{len(fields)} tab-separated fields; the header has {n} ({header.describe()})", raw)
            continue
        yield lineno, fields, raw


def _rating(value: str, name: str, scale: RatingScale | None) -> tuple[str | None, str, float | None]:
    value = value.strip()
    if not value:
        return "missing_field", f"empty {name}", None
    try:
        x = float(value)
    except ValueError:
        return "bad_rating", f"{name}={value[:40]!r} is not a number", None
    if not math.isfinite(x) or (scale is not None and not scale.contains(x)):
        where = f" outside the scale {scale.lo:g}-{scale.hi:g}" if scale is not None else " not finite"
        return "bad_rating", f"{name}={value[:40]!r} is{where}", None
    return None, "", x


def _seconds(value: str, name: str) -> tuple[str | None, str, int]:
    value = value.strip()
    if not value:
        return "missing_field", f"empty {name}", 0
    try:
        x = float(value)
    except ValueError:
        return "bad_timestamp", f"{name}={value[:40]!r} is not a number", 0
    if not math.isfinite(x) or x < 0 or x > LATEST_SECONDS:
        return "bad_timestamp", f"{name}={value[:40]!r} is not a plausible Unix time in seconds", 0
    return None, "", int(x)


def _interactions(rows: list[tuple]) -> pa.RecordBatch:
    users, items, ratings, times = zip(*rows, strict=True)
    n = len(rows)
    return pa.RecordBatch.from_arrays([pa.array(users, pa.string()), pa.array(items, pa.string()),
                                       pa.array(ratings, pa.float64()), pa.array(times, pa.int64()),
                                       pa.nulls(n, pa.string()), pa.nulls(n, pa.string())], schema=INTERACTIONS_SCHEMA)


def _items(rows: list[tuple]) -> pa.RecordBatch:
    ids, titles, attrs, descriptions = zip(*rows, strict=True)
    return pa.RecordBatch.from_arrays([pa.array(ids, pa.string()), pa.array(titles, pa.string()),
                                       pa.array(attrs, pa.list_(pa.string())), pa.array(descriptions, pa.string())],
                                      schema=ITEMS_SCHEMA)
