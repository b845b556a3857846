"""The user's own data: one CSV, TSV, JSON-lines or Parquet table (by extension, ``.gz`` allowed).

``--columns user=COL,item=COL,rating=COL,time=COL[,review=COL,summary=COL,title=COL]`` names the
columns; ``title`` is the item's title (a flat export that repeats it on every row): without
``--meta``, items are then built from the table (first title seen per item). ``--meta`` is an item
table in the same formats with ``--item-columns item=COL[,title=COL,attributes=COL,description=COL]``;
an attributes column may be a list or a string of ``|``- or ``,``-separated values. ``--scale lo,hi``
is required (there is no default scale for someone else's data).

DuckDB reads the file (its CSV sniffer finds quoting and the header; parse errors are kept in its
reject table with their line numbers and passed on here, never dropped). The time column may be
integer seconds, integer milliseconds (detected when the median is above 1e11, i.e. after the
year 5138 in seconds; the choice is logged) or date/time strings (ISO 8601 and what DuckDB's
timestamp cast accepts; taken as UTC). Rows whose values do not convert are rejected one by one
with the offending values; the rest are streamed as Arrow batches.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa

from reczero.config import ConfigError, parse_kv
from reczero.data.schema import INTERACTIONS_SCHEMA, ITEMS_SCHEMA, RatingScale
from reczero.data.sources import BATCH_ROWS, RejectLog
from reczero.errors import DataError

log = logging.getLogger(__name__)

NAME = "table"
DEFAULT_SCALE = None
EXPECTED = "a CSV, TSV, JSONL or Parquet table with the --columns named"
INTERACTION_KEYS = ("user", "item", "rating", "time", "review", "summary", "title")
ITEM_KEYS = ("item", "title", "attributes", "description")
MILLISECONDS_ABOVE = 1e11


def mapping(text: str | None, keys: tuple[str, ...], required: tuple[str, ...], flag: str) -> dict[str, str]:
    try:
        cols = parse_kv(text, flag, valid_keys=keys)
    except ConfigError as err:
        raise DataError(str(err)) from None
    missing = [k for k in required if k not in cols]
    if missing:
        raise DataError(f"{flag}: missing {', '.join(k + '=COL' for k in missing)} (got {text!r})")
    return cols


def default_meta(path: Path, columns: str | None = None, **_: object) -> Path | None:
    """Without --meta, a ``title=COL`` in --columns makes the interactions file the item table."""
    return Path(path) if "title" in mapping(columns, INTERACTION_KEYS, (), "--columns") else None


def read_interactions(path: Path, rejects: RejectLog, scale: RatingScale | None = None, columns: str | None = None,
                      **_: object) -> Iterator[pa.RecordBatch]:
    cols = mapping(columns, INTERACTION_KEYS, ("user", "item", "rating", "time"), "--columns")
    con, view = _open(Path(path), rejects, "interactions", cols.values())
    text = {k: f"CAST(\"{cols[k]}\" AS VARCHAR)" if k in cols else "NULL::VARCHAR" for k in ("review", "summary")}
    seconds = _time_expression(con, view, cols["time"], path)
    lo, hi = (scale.lo, scale.hi) if scale is not None else ("-infinity", "infinity")
    con.execute(f"""
        CREATE TABLE conv AS SELECT _line,
          nullif(trim(CAST("{cols['user']}" AS VARCHAR)), '') AS user_id,
          nullif(trim(CAST("{cols['item']}" AS VARCHAR)), '') AS item_id,
          TRY_CAST("{cols['rating']}" AS DOUBLE) AS rating, {seconds} AS timestamp,
          nullif({text['review']}, '') AS review, nullif({text['summary']}, '') AS summary,
          CAST("{cols['rating']}" AS VARCHAR) AS raw_rating, CAST("{cols['time']}" AS VARCHAR) AS raw_time
        FROM {view}""")
    reason = f"""CASE WHEN user_id IS NULL OR item_id IS NULL OR raw_rating IS NULL OR raw_time IS NULL THEN 'missing_field'
                 WHEN rating IS NULL OR isnan(rating) OR rating < {lo} OR rating > {hi} THEN 'bad_rating'
                 WHEN timestamp IS NULL THEN 'bad_time' END"""
    bad = con.execute(f"SELECT _line, {reason} AS reason, user_id, item_id, raw_rating, raw_time FROM conv "
                      f"WHERE {reason} IS NOT NULL ORDER BY _line").fetchall()
    for line, why, user, item, rating, time in bad:
        rejects.reject("interactions", path, line, why, f"{why.replace('_', ' ')} in columns {cols}",
                       {"user": user, "item": item, "rating": rating, "time": time})
    n = con.execute("SELECT count(*) FROM conv").fetchall()[0][0]
    rejects.count("interactions", n)
    if n and len(bad) == n:
        raise DataError(f"{path}: all {n:,} rows were rejected (e.g. {bad[0][1]}); check --columns {columns!r} "
                        f"and --scale against the file")
    reader = con.sql(f"SELECT user_id, item_id, rating, timestamp, review, summary FROM conv "
                     f"WHERE {reason} IS NULL ORDER BY _line").to_arrow_reader(BATCH_ROWS)
    for batch in reader:
        yield pa.RecordBatch.from_arrays(batch.columns, schema=INTERACTIONS_SCHEMA) if batch.schema != INTERACTIONS_SCHEMA \
            else batch
    con.close()


def read_items(path: Path, rejects: RejectLog, item_columns: str | None = None, columns: str | None = None,
               **_: object) -> Iterator[pa.RecordBatch]:
    if item_columns is None:                        # items from the interactions file (see default_meta)
        flat = mapping(columns, INTERACTION_KEYS, ("item", "title"), "--columns")
        cols = {"item": flat["item"], "title": flat["title"]}
        con, view = _open(Path(path), RejectLog(), "items", cols.values())   # its rows are counted as interactions
        con.execute(f"CREATE TABLE firsts AS SELECT DISTINCT ON (\"{cols['item']}\") * FROM src "
                    f"WHERE nullif(trim(CAST(\"{cols['item']}\" AS VARCHAR)), '') IS NOT NULL ORDER BY \"{cols['item']}\", _line")
        view = "firsts"
    else:
        cols = mapping(item_columns, ITEM_KEYS, ("item",), "--item-columns")
        con, view = _open(Path(path), rejects, "items", cols.values())
    sel = {k: f"CAST(\"{cols[k]}\" AS VARCHAR)" if k in cols else "NULL::VARCHAR" for k in ("title", "description")}
    attributes = "[]::VARCHAR[]"
    if "attributes" in cols:
        kind = con.execute(f"SELECT typeof(\"{cols['attributes']}\") FROM {view} LIMIT 1").fetchall()
        if kind and kind[0][0].endswith("[]"):
            attributes = f"list_transform(\"{cols['attributes']}\", lambda x: CAST(x AS VARCHAR))"
        else:
            attributes = (f"list_filter(list_transform(regexp_split_to_array(CAST(\"{cols['attributes']}\" AS VARCHAR), "
                          f"'[|,]'), lambda x: trim(x)), lambda x: x <> '')")
    item = f"nullif(trim(CAST(\"{cols['item']}\" AS VARCHAR)), '')"
    for line, in con.execute(f"SELECT _line FROM {view} WHERE {item} IS NULL ORDER BY _line").fetchall():
        rejects.reject("items", path, line, "missing_field", f"empty item id (column {cols['item']!r})")
    rejects.count("items", con.execute(f"SELECT count(*) FROM {view}").fetchall()[0][0])
    reader = con.sql(f"SELECT {item} AS item_id, {sel['title']} AS title, coalesce({attributes}, []) AS attributes, "
                     f"{sel['description']} AS description FROM {view} WHERE {item} IS NOT NULL ORDER BY _line"
                     ).to_arrow_reader(BATCH_ROWS)
    for batch in reader:
        yield pa.Table.from_batches([batch]).cast(ITEMS_SCHEMA).to_batches()[0] if batch.num_rows else batch
    con.close()


def _open(path: Path, rejects: RejectLog, stream: str, needed) -> tuple[object, str]:
    """A DuckDB view ``src`` over the file with a ``_line`` column; parse errors go to ``rejects``."""
    import duckdb

    if not path.is_file():
        raise DataError(f"{path}: file not found")
    name = path.name.lower().removesuffix(".gz")
    con = duckdb.connect()
    con.execute("SET threads = 1")                  # row order = file order, so `_line` is the record's line
    p = str(path).replace("'", "''")
    if name.endswith((".csv", ".tsv", ".txt")):
        sep = ", delim = '\\t'" if name.endswith(".tsv") else ""
        con.execute(f"CREATE VIEW raw_src AS SELECT * FROM read_csv('{p}', store_rejects = true, "
                    f"all_varchar = true{sep})")
        first_line = 2                                  # after the header
    elif name.endswith((".jsonl", ".json", ".ndjson")):
        con.execute(f"CREATE VIEW raw_src AS SELECT * FROM read_json('{p}', format = 'newline_delimited', "
                    "ignore_errors = true)")
        first_line = 1
    elif name.endswith(".parquet"):
        con.execute(f"CREATE VIEW raw_src AS SELECT * FROM read_parquet('{p}')")
        first_line = 1
    else:
        raise DataError(f"{path}: unknown table format; expected a name ending in .csv, .tsv, .jsonl or .parquet (optionally .gz)")
    try:
        con.execute(f"CREATE TABLE src AS SELECT *, row_number() OVER () + {first_line - 1} AS _line FROM raw_src")
    except duckdb.Error as err:
        raise DataError(f"{path}: cannot be read as {name.rsplit('.', 1)[-1].upper()}: {str(err).splitlines()[0]}") from None
    have = [r[0] for r in con.execute("DESCRIBE src").fetchall()]
    missing = [c for c in needed if c not in have]
    if missing:
        raise DataError(f"{path}: no column(s) {', '.join(map(repr, missing))}; the file has {', '.join(have[:-1])}")
    if name.endswith((".jsonl", ".json", ".ndjson")):
        _malformed_json(con, path, rejects, stream)
    if name.endswith((".csv", ".tsv", ".txt")):
        for line, raw, err in con.execute("SELECT line, csv_line, error_message FROM reject_errors ORDER BY line").fetchall():
            rejects.count(stream)
            rejects.reject(stream, path, line, "malformed_row", str(err).splitlines()[0][:200], raw)
    return con, "src"


def _time_expression(con, view: str, col: str, path: Path) -> str:
    """SQL for Unix seconds from the time column: integer seconds, milliseconds or date strings."""
    as_int = f"TRY_CAST(\"{col}\" AS BIGINT)"
    numeric, total, median = con.execute(f"SELECT count({as_int}), count(\"{col}\"), median({as_int}) FROM {view}").fetchall()[0]
    if total and numeric >= 0.5 * total:
        if median is not None and median > MILLISECONDS_ABOVE:
            log.info("%s: time column %r holds milliseconds (median %d); divided by 1000", path, col, median)
            return f"{as_int} // 1000"
        log.info("%s: time column %r read as Unix seconds", path, col)
        return as_int
    log.info("%s: time column %r read as date/time strings (UTC)", path, col)
    return f"CAST(epoch(TRY_CAST(\"{col}\" AS TIMESTAMP)) AS BIGINT)"


def _malformed_json(con, path: Path, rejects: RejectLog, stream: str) -> None:
    """DuckDB skips lines it cannot parse: find them (only when some are missing) and reject them."""
    import orjson

    from reczero.data.sources import iter_line_bytes

    rows = con.execute("SELECT count(*) FROM src").fetchall()[0][0]
    lines = sum(1 for _ in iter_line_bytes(path, RejectLog(), stream))   # a counting pass, logs nothing
    if lines == rows:
        return
    for number, line in iter_line_bytes(path, rejects, stream):
        try:
            if type(orjson.loads(line)) is dict:
                continue
        except orjson.JSONDecodeError:
            pass
        rejects.count(stream)
        rejects.reject(stream, path, number, "malformed_json", "not a JSON object", line)
