"""Interactions + items -> the prepared-dataset layout of DESIGN.md (``write_prepared``).

This is the one place that builds prepared datasets: ``data prepare`` (real dumps) and
``data synth`` (RecWorld) both call :func:`write_prepared`. What it chose, and why:

* **One columnar engine, out of core.** Everything after reading runs in DuckDB with a
  ``memory_limit`` and a ``temp_directory`` in the output folder, so a dump of tens of millions of
  reviews spills to disk instead of growing the process. Inputs may be in-memory Arrow tables (or
  lists of batches, which are taken over and freed once the histories are built) or Parquet files
  (what ``prepare`` spills to: read into memory up to ``IN_MEMORY_BYTES`` of columns, streamed
  beyond); never Python objects.
* **``interactions.parquet`` without a text sort.** DuckDB sorts only the keys; the rows are then
  taken from memory in that order, in a thread while the histories are built (DuckDB's sort of
  the rows with their text cost ~2x the CPU at 1M reviews; it remains the out-of-core path).
* **Every interaction is kept or rejected with one reason**, checked in this order:
  ``missing_field`` (null/empty user, item, rating or time), ``bad_rating`` (outside the scale),
  ``unknown_item`` (an item table was given and lacks the item, or ``--item-filter`` dropped it),
  then ``duplicate`` (same (user, item) among the valid ones; the earliest by (timestamp, input
  order) is kept), then ``filtered`` (k-core ``min_user``/``min_item``, iterated to a fixed point),
  then ``out_of_window`` (``--since``/``--until``, see :mod:`reczero.data.filters`). Item records are
  checked the same way (``missing_field``, ``duplicate`` item id: the first is kept), then by the
  rules of ``--item-filter`` (:mod:`reczero.data.filters`), which may read the optional item
  columns ``raw_title`` and ``price`` (:data:`~reczero.data.filters.ITEM_CHECK_FIELDS`).
* **No leakage.** A target at time T sees only interactions with timestamp < T: counts and
  averages use a ``RANGE ... 1 PRECEDING`` frame over integer seconds, so same-second ties are
  excluded; histories are the last N of exactly those rows (see ``histories.py`` for how this
  stays linear in rows x window).
* **Every interaction is a potential target**; its history may hold earlier interactions of any
  split (what a deployed system would have seen), never the target itself.
* **Splits.** ``temporal``: interactions ranked by (timestamp, input order) and cut at the
  ``split_ratios`` fractions, so the fractions are exact and train <= valid <= test in time.
  ``leave-last``: per user, last -> test, second last -> valid, the rest -> train.
  ``min_history`` and ``max_samples`` choose targets only (the interactions stay in
  ``interactions.parquet`` and in histories); caps are drawn with ``numpy`` under ``seed``.
* History review snippets are the review text (else the summary) cut to ``snippet_chars``.
* **Implicit data** (``scale=None``: a source without ratings, e.g. ``sequences``): the same
  pipeline with ``rating`` null throughout — it is then not checked (no ``missing_field`` or
  ``bad_rating`` for it), the averages are null, and the manifest says ``"implicit": true`` with
  ``"rating_scale": null``. An implicit input that carries a rating is refused (a reader bug, not
  data to guess about). Explicit datasets say ``"implicit": false``.
"""

from __future__ import annotations

import logging
import shutil
import time
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from reczero import __version__
from reczero.config import SampleOptions, save_config, to_dict
from reczero.data import schema as S
from reczero.data.filters import ITEM_CHECK_FIELDS, apply_window, item_rule_cases
from reczero.data.filters import REJECT_DETAIL as FILTER_DETAIL
from reczero.data.histories import (
    build_histories,
    choose_targets,
    fetch_to_parquet,
    scalar,
    write_parquet,
    write_splits,
)
from reczero.data.sources import BATCH_ROWS, RejectLog
from reczero.errors import DataError

log = logging.getLogger(__name__)

Input = pa.Table | list[pa.RecordBatch] | str | Path
ITEMS_INPUT = pa.schema([*S.ITEMS_SCHEMA, *ITEM_CHECK_FIELDS])   # item batches; the check columns optional

INTERACTIONS_ZSTD_LEVEL = 1      # ~1.3x cheaper than level 3, ~3% larger
IN_MEMORY_BYTES = 1 << 30         # a Parquet input up to this many bytes of columns is read into memory
INTERACTIONS_ROW_GROUP = 131_072
DUCKDB_MEMORY_LIMIT = "1536MB"   # leaves room under the 3 GiB budget for Python, Arrow and the reader

REJECT_DETAIL = {
    "missing_field": "user, item, rating or timestamp is missing",
    "bad_rating": "rating outside the rating scale",
    "unknown_item": "item id not in the item metadata, or its item was dropped (see the items' rejects)",
    "duplicate": "(user, item) already seen earlier; the earliest is kept",
    "filtered": "removed by the k-core filter",
} | FILTER_DETAIL


def write_prepared(out_dir: str | Path, interactions: Input, items: Input | None,
                   opts: SampleOptions, *, scale: S.RatingScale | None, source: str, rejects: RejectLog | None,
                   inputs: list[dict], extra: dict | None = None) -> dict:
    """Write items, interactions, train/valid/test samples, rejects and the manifest into ``out_dir``.

    ``interactions`` / ``items``: Arrow tables, lists of record batches or Parquet paths of
    ``INTERACTIONS_SCHEMA`` / ``ITEMS_SCHEMA`` (``items`` may be None or empty: items are then
    synthesised from the interactions with empty text; item batches may add the columns of
    ``ITEM_CHECK_FIELDS`` for ``opts.item_filter``). A list is emptied: its batches are then
    held here alone, so their memory is freed as soon as they are no longer needed. ``rejects``
    already holds what the reader rejected (None: a new log is opened on
    ``out_dir/rejects.jsonl``); it is closed on return. ``inputs`` describe the raw
    files (path, bytes, sha256, truncated). ``extra`` is merged into the manifest. ``scale`` None
    makes an implicit dataset (every ``rating`` must then be null). Returns the manifest.
    """
    started = time.perf_counter()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if rejects is None:
        rejects = RejectLog(out / S.REJECTS)
    tmp = out / ".duckdb-tmp"
    con = _connect(tmp)
    file = inputs[0]["path"] if inputs else source
    try:
        rows = _in_memory(interactions, S.INTERACTIONS_SCHEMA)    # read once: checks, interactions.parquet, histories
        del interactions
        n_rows = _register(con, "raw", rows, S.INTERACTIONS_SCHEMA)
        n_item_rows = _register(con, "raw_items", _in_memory(items, ITEMS_INPUT), ITEMS_INPUT) if items is not None else 0
        read = n_rows + sum(rejects.rejected["interactions"].values())
        items_read = n_item_rows + sum(rejects.rejected["items"].values())
        for stream, n in (("interactions", read), ("items", items_read)):
            if rejects.read[stream] and rejects.read[stream] != n:
                log.warning("%s: the reader counted %d records read but %d are accounted for (kept + rejected)",
                            stream, rejects.read[stream], n)
        if scale is None and (rated := scalar(con, "SELECT count(rating) FROM raw")):
            raise DataError(f"{file}: {rated:,} interactions carry a rating, but the dataset is prepared as implicit "
                            f"(source {source!r} has no ratings)")
        has_meta = _prepare_items(con, n_item_rows, rejects, file, opts.item_filter)
        window = _flag_interactions(con, scale, has_meta, opts)
        _list_rejects(con, "st", "interactions", rejects, file)
        if not has_meta:
            con.execute("CREATE TABLE cat AS SELECT DISTINCT item_id, '' AS title, []::VARCHAR[] AS attributes, "
                        "'' AS description FROM st WHERE reason IS NULL")
        fetch_to_parquet(con, "SELECT item_id, title, attributes, description FROM cat ORDER BY item_id",
                          out / S.ITEMS, S.ITEMS_SCHEMA)
        kept = scalar(con, "SELECT count(*) FROM st WHERE reason IS NULL")
        if kept == 0:
            raise DataError(f"{file}: no interaction left after checks and filters (read {read}, "
                            f"rejected {dict(rejects.rejected['interactions'])}); see {out / S.REJECTS}")
        with ThreadPoolExecutor(1) as pool:     # interactions.parquet is written while the histories are built
            written = _write_interactions(con, rows, out / S.INTERACTIONS, pool)
            history = build_histories(con, opts, rows)
            written.result()
        if isinstance(rows, pa.Table):      # the last use of the input: free it before the split files
            con.unregister("raw_arrow")
        del rows
        pa.default_memory_pool().release_unused()   # hand it back to the OS (mimalloc keeps freed pages)
        dropped = choose_targets(con, opts, kept)
        splits = write_splits(con, history, opts, out)
        del history
        n_users = scalar(con, "SELECT count(DISTINCT user_id) FROM st WHERE reason IS NULL")
        n_items = scalar(con, "SELECT count(*) FROM cat")
    finally:
        con.close()
        shutil.rmtree(tmp, ignore_errors=True)
        rejects.close()
    manifest: dict[str, Any] = {
        "source": source,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "reczero_version": __version__,
        "inputs": inputs,
        "options": to_dict(opts),
        "implicit": scale is None,
        "rating_scale": scale.to_dict() if scale is not None else None,
        "counts": {"read": read, "kept": kept, "rejected": dict(rejects.rejected["interactions"])},
        "items_counts": {"read": items_read, "kept": n_items if has_meta else 0,
                         "rejected": dict(rejects.rejected["items"])},
        "items_synthesised": 0 if has_meta else n_items,
        "truncated": list(rejects.truncated),
        "window": window,
        "splits": splits,
        "targets_dropped": dropped,
        "n_users": n_users,
        "n_items": n_items,
        "n_interactions": kept,
        "seconds": round(time.perf_counter() - started, 2),
    }
    manifest.update(extra or {})
    save_config(opts, out)
    S.write_manifest(out, manifest)
    log.info("%s: %d read, %d kept, rejected %s; splits %s (%.1f s)", out, read, kept,
             dict(rejects.rejected["interactions"]) or "none", splits, manifest["seconds"])
    return manifest


def _in_memory(data: Input, schema: pa.Schema) -> pa.Table | Path:
    """``data`` as an Arrow table of ``schema`` (its chunks as they come: ``_take`` reads across
    them), or as a Parquet path when it is a file of more than ``IN_MEMORY_BYTES`` of columns (every
    stage then streams it). A list of batches is emptied. Columns of ``ITEM_CHECK_FIELDS`` that
    the input lacks are added as nulls."""
    if isinstance(data, list):
        table = pa.Table.from_batches(data) if data else schema.empty_table()
        data.clear()
    elif isinstance(data, pa.Table):
        table = data
    else:
        import pyarrow.parquet as pq

        path = Path(data)
        if not path.is_file():
            return path                     # _register names it
        meta = pq.ParquetFile(path).metadata
        size = sum(meta.row_group(g).column(c).total_uncompressed_size
                   for g in range(meta.num_row_groups) for c in range(meta.num_columns))
        if size > IN_MEMORY_BYTES:
            log.info("%s: %.1f GB of columns: streamed from disk, sorted by DuckDB", path, size / 1e9)
            return path
        have = pq.read_schema(path)
        _check_columns(have, schema, str(path))
        table = pq.read_table(path, columns=[n for n in schema.names if n in have.names],
                              use_threads=False)   # threads: ~3x the CPU, no gain
    _check_columns(table.schema, schema, "input table")
    for f in (f for f in schema if f.name not in table.schema.names):     # an optional check column
        table = table.append_column(f, pa.nulls(table.num_rows, f.type))
    return table.select(schema.names).cast(schema)


def _take(table: pa.Table, rows: np.ndarray) -> pa.Table:
    """``table.take(rows)`` in one chunk. Across chunks, pyarrow's take concatenates them first
    (~4x the cost); here each chunk gives its rows and one more take restores the order."""
    batches = table.to_batches()
    if len(batches) == 1:
        return pa.Table.from_batches(batches).take(pa.array(rows))
    starts = np.cumsum([0] + [b.num_rows for b in batches])
    chunk = np.searchsorted(starts, rows, side="right") - 1
    by_chunk = np.argsort(chunk, kind="stable")
    bounds = np.searchsorted(chunk[by_chunk], np.arange(len(batches) + 1))
    parts = [batches[c].take(pa.array(rows[by_chunk[lo:hi]] - starts[c]))
             for c, (lo, hi) in enumerate(zip(bounds[:-1], bounds[1:], strict=True)) if hi > lo]
    back = np.empty_like(by_chunk)
    back[by_chunk] = np.arange(len(by_chunk))
    return pa.Table.from_batches(parts, table.schema).combine_chunks().take(pa.array(back))


def _write_interactions(con, rows: pa.Table | Path, path: Path, pool: ThreadPoolExecutor) -> Future:
    """Start writing ``interactions.parquet`` in ``pool``: the kept rows in (timestamp, input order),
    zstd level 1.

    Only the keys are sorted (in DuckDB: 16 bytes a row); the rows, text and all, are then taken in
    that order from ``rows`` in memory, so no text goes through a sort. Given a path (an input too
    large for memory), DuckDB sorts the rows with their text, out of core, on its own cursor: the
    same rows, at ~2x the CPU.
    """
    if not isinstance(rows, pa.Table):
        sql = f"""COPY (SELECT r.user_id, r.item_id, r.rating, r.timestamp, r.review, r.summary FROM raw r
                        JOIN st s ON r._rid = s._rid AND s.reason IS NULL ORDER BY r.timestamp, r._rid)
                  TO '{path.as_posix()}' (FORMAT parquet, COMPRESSION zstd, COMPRESSION_LEVEL {INTERACTIONS_ZSTD_LEVEL})"""
        cursor = con.cursor()

        def copy() -> None:
            with cursor:
                cursor.execute(sql)
        return pool.submit(copy)
    order = con.sql("SELECT _rid FROM st WHERE reason IS NULL ORDER BY timestamp, _rid").fetchnumpy()["_rid"]
    batches = (_take(rows, order[at:at + INTERACTIONS_ROW_GROUP]) for at in range(0, len(order), INTERACTIONS_ROW_GROUP))
    return pool.submit(write_parquet, path, S.INTERACTIONS_SCHEMA, batches, compression="zstd",
                       compression_level=INTERACTIONS_ZSTD_LEVEL, dictionary=["user_id", "item_id"],
                       statistics=["user_id", "item_id", "rating", "timestamp"])


def _connect(tmp: Path):
    import duckdb

    tmp.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect()
    con.execute(f"SET memory_limit = '{DUCKDB_MEMORY_LIMIT}'")
    con.execute(f"SET temp_directory = '{tmp.as_posix()}'")
    con.execute("SET preserve_insertion_order = false")   # every output below has an explicit ORDER BY
    return con


def _register(con, name: str, data: pa.Table | Path, schema: pa.Schema) -> int:
    """Expose ``data`` as view ``name`` with the schema's columns plus ``_rid`` (input order)."""
    if isinstance(data, str | Path):
        path = Path(data)
        if not path.is_file():
            raise DataError(f"{path}: Parquet file not found")
        import pyarrow.parquet as pq

        have = pq.read_schema(path)
        _check_columns(have, schema, str(path))
        source = {f.name: f'"{f.name}"' if f.name in have.names else "NULL" for f in schema}   # NULL: a check column
        cols = ", ".join(f'CAST({source[f.name]} AS {_duck_type(f.type)}) AS "{f.name}"' for f in schema)
        con.execute(f"CREATE VIEW {name} AS SELECT {cols}, file_row_number AS _rid "
                    f"FROM read_parquet('{path.as_posix()}', file_row_number = true)")
    else:
        _check_columns(data.schema, schema, f"{name} table")
        table = data.select(schema.names).cast(schema)
        table = table.append_column("_rid", pa.array(np.arange(table.num_rows, dtype=np.int64)))
        con.register(f"{name}_arrow", table)
        con.execute(f"CREATE VIEW {name} AS SELECT * FROM {name}_arrow")
    return scalar(con, f"SELECT count(*) FROM {name}")


def _check_columns(have: pa.Schema, want: pa.Schema, where: str) -> None:
    required = [n for n in want.names if n not in ITEM_CHECK_FIELDS.names]
    missing = [n for n in required if n not in have.names]
    if missing:
        raise DataError(f"{where}: missing columns {missing}; expected {required}")


def _duck_type(tp: pa.DataType) -> str:
    return {pa.string(): "VARCHAR", pa.float64(): "DOUBLE", pa.int64(): "BIGINT",
            pa.list_(pa.string()): "VARCHAR[]"}[tp]


def _prepare_items(con, n_item_rows: int, rejects: RejectLog, file: str, item_filter: str | None) -> bool:
    """Table ``cat`` of kept items (first record per id, passing ``item_filter``'s rules); returns
    whether any item metadata was kept."""
    if n_item_rows == 0:
        if item_filter is not None:
            raise DataError(f"{file}: --item-filter {item_filter} needs item metadata (--meta), and none was read")
        return False
    con.execute(f"""
        CREATE TABLE it AS SELECT *,
          CASE WHEN item_id IS NULL OR item_id = '' THEN 'missing_field'
               WHEN row_number() OVER (PARTITION BY item_id ORDER BY _rid) > 1 THEN 'duplicate'
               {item_rule_cases(con, item_filter, file)} END AS reason
        FROM raw_items""")
    _list_rejects(con, "it", "items", rejects, file)
    con.execute("CREATE TABLE cat AS SELECT item_id, title, coalesce(attributes, []::VARCHAR[]) AS attributes, "
                "description FROM it WHERE reason IS NULL")
    return scalar(con, "SELECT count(*) FROM cat") > 0


def _flag_interactions(con, scale: S.RatingScale | None, has_meta: bool, opts: SampleOptions) -> dict | None:
    """Table ``st`` (_rid, user_id, item_id, rating, timestamp, reason): reason NULL means kept.
    Without a ``scale`` (implicit data) the rating is not checked. Returns the manifest's
    ``window`` (:func:`reczero.data.filters.apply_window`; None without ``--since``/``--until``)."""
    unknown = "WHEN c.item_id IS NULL THEN 'unknown_item'" if has_meta else ""
    missing_rating = "OR r.rating IS NULL" if scale is not None else ""
    bad_rating = (f"WHEN isnan(r.rating) OR r.rating < {scale.lo} OR r.rating > {scale.hi} THEN 'bad_rating'"
                  if scale is not None else "")
    join = "LEFT JOIN (SELECT item_id FROM cat) c ON r.item_id = c.item_id" if has_meta else ""
    con.execute(f"""
        CREATE TABLE st AS
        WITH f AS (
          SELECT r._rid, r.user_id, r.item_id, r.rating, r.timestamp,
            CASE WHEN r.user_id IS NULL OR r.user_id = '' OR r.item_id IS NULL OR r.item_id = ''
                      {missing_rating} OR r.timestamp IS NULL THEN 'missing_field'
                 {bad_rating}
                 {unknown} END AS reason
          FROM raw r {join})
        SELECT _rid, user_id, item_id, rating, timestamp,
          CASE WHEN reason IS NULL AND row_number() OVER (PARTITION BY user_id, item_id, reason IS NULL
                                                          ORDER BY timestamp, _rid) > 1
               THEN 'duplicate' ELSE reason END AS reason
        FROM f""")
    rounds = 0
    while opts.min_user > 1 or opts.min_item > 1:
        n = scalar(con, f"""
            UPDATE st SET reason = 'filtered' WHERE reason IS NULL AND (
              user_id IN (SELECT user_id FROM st WHERE reason IS NULL GROUP BY user_id HAVING count(*) < {opts.min_user})
              OR item_id IN (SELECT item_id FROM st WHERE reason IS NULL GROUP BY item_id HAVING count(*) < {opts.min_item}))
            """)
        rounds += 1
        if n == 0:
            break
        log.info("k-core round %d: %d interactions filtered", rounds, n)
    return apply_window(con, opts)


def _list_rejects(con, table: str, stream: str, rejects: RejectLog, file: str) -> None:
    """Count and list every rejected row of ``table`` (reason not NULL) in the reject log."""
    cols = "user_id, item_id, rating, timestamp" if stream == "interactions" else "item_id, title, raw_title, price"
    reader = con.sql(f"SELECT reason, _rid, {cols} FROM {table} WHERE reason IS NOT NULL ORDER BY _rid"
                     ).to_arrow_reader(BATCH_ROWS)
    for batch in reader:
        for row in batch.to_pylist():
            reason, rid = row.pop("reason"), row.pop("_rid")
            if stream == "items":       # the check columns only where the source has them
                row = {k: v for k, v in row.items() if v is not None or k not in ITEM_CHECK_FIELDS.names}
            rejects.reject(stream, file, None, reason, f"{REJECT_DETAIL[reason]} (record #{rid + 1} parsed)", row)
