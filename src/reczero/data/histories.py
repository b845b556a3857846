"""Targets, splits and leakage-free histories for :func:`reczero.data.samples.write_prepared`.

Works on the DuckDB tables that ``write_prepared`` builds: ``st`` (every parsed interaction with
its reject ``reason``, NULL when kept), ``raw`` (the interactions with their text) and ``cat``
(the kept items). What it chose, and why:

* Order is always (timestamp, input order ``_rid``): deterministic, and ties at the same second
  keep the order of the dump.
* ``user_n``/``user_avg``/``item_n``/``item_avg`` use a ``RANGE BETWEEN UNBOUNDED PRECEDING AND
  1 PRECEDING`` frame on integer seconds: exactly the interactions strictly before the target's
  second (DuckDB evaluates these with segment trees, so heavy users cost n log n, not n^2).
* Histories: sort all kept interactions by (user, time, input order) into one "entry table";
  a target's ``c`` earlier interactions are the ``c`` rows before it in its user's block, so its
  history is the slice ``[block start + c - N, block start + c)``. DuckDB computes only these
  (start, length) pairs; the entry table is held as Arrow arrays (one row per interaction: ids,
  title, attributes, rating, snippet, time) and each batch of targets gets its lists with one
  vectorised ``take``. Cost: linear in targets x window — the size of the output itself — with no
  list of all earlier rows per target (a window ``list()`` in DuckDB was ~5x slower and
  spilled). The same for items. Since (user, item) pairs are unique after the dedupe, an item's
  earlier reviews are all by other users.
* Split files are written with a dictionary page limit large enough that each review snippet is
  stored once per row group although it recurs in many samples' histories (2-3x smaller files,
  cheaper to write and read), lz4-compressed, in a writer thread that overlaps the next batch.
* Caps (``max_samples``) pick positions with ``numpy.random.default_rng([seed, split index])``
  over the split's targets in time order, then keep time order: the same options give the same
  samples on any machine and DuckDB version.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from reczero.config import SampleOptions
from reczero.data import schema as S
from reczero.data.sources import BATCH_ROWS

log = logging.getLogger(__name__)

EARLIER = "ORDER BY timestamp RANGE BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING"
ORDER = "ORDER BY timestamp, _rid"
SAMPLE_BATCH_ROWS = 32_768
COMPRESSION = "lz4"            # 1.5-2x cheaper to write and to read than zstd, files ~1.4x larger
DICTIONARY_PAGE_BYTES = 64 << 20   # a review recurs in up to history + item_history samples: dictionary
                                   # encoding then stores it once per row group (2-3x smaller, faster)


def choose_targets(con, opts: SampleOptions, n_kept: int) -> dict[str, int]:
    """Table ``tgt(_rid, timestamp, split)`` of chosen targets; returns targets dropped by reason."""
    if opts.split == "temporal":
        r_train, r_valid, _ = opts.parsed_split_ratios()
        n_train = round(r_train * n_kept)
        n_train_valid = round((r_train + r_valid) * n_kept)
        split = (f"CASE WHEN row_number() OVER ({ORDER}) <= {n_train} THEN 'train' "
                 f"WHEN row_number() OVER ({ORDER}) <= {n_train_valid} THEN 'valid' ELSE 'test' END")
    else:
        split = ("CASE row_number() OVER (PARTITION BY user_id ORDER BY timestamp DESC, _rid DESC) "
                 "WHEN 1 THEN 'test' WHEN 2 THEN 'valid' ELSE 'train' END")
    con.execute(f"""
        CREATE TABLE tgt AS SELECT _rid, timestamp, split FROM (
          SELECT _rid, timestamp, {split} AS split, count(*) OVER (PARTITION BY user_id {EARLIER}) AS user_n
          FROM st WHERE reason IS NULL)
        WHERE user_n >= {opts.min_history}""")
    dropped: Counter = Counter()
    dropped["min_history"] = n_kept - scalar(con, "SELECT count(*) FROM tgt")
    caps = opts.parsed_max_samples()
    for name in (s for s in S.SPLITS if s in caps):
        cap = caps[name]
        rids = con.execute(f"SELECT _rid FROM tgt WHERE split = '{name}' {ORDER}").fetchnumpy()["_rid"]
        if len(rids) <= cap:
            continue
        rng = np.random.default_rng([opts.seed, S.SPLITS.index(name)])
        chosen = pa.table({"_rid": np.asarray(rids)[rng.choice(len(rids), size=cap, replace=False)]})
        con.register("chosen_arrow", chosen)
        con.execute(f"DELETE FROM tgt WHERE split = '{name}' AND _rid NOT IN (SELECT _rid FROM chosen_arrow)")
        con.unregister("chosen_arrow")
        dropped["max_samples"] += len(rids) - cap
        log.info("max_samples: kept %d of %d %s targets (seed %d)", cap, len(rids), name, opts.seed)
    return {k: v for k, v in dropped.items() if v}


USER_ORDER = "ORDER BY user_id, timestamp, _rid"
ITEM_ORDER = "ORDER BY item_id, timestamp, _rid"


def write_splits(con, opts: SampleOptions, out: Path) -> dict[str, int]:
    """Build the samples of the chosen targets and write ``{train,valid,test}.parquet``; returns sizes.

    DuckDB computes, per kept interaction, the counts and averages and where its history lies in
    the entry tables (all interactions sorted by user, resp. item, then time): ``u_start``/``u_len``
    and ``i_start``/``i_len``. The entry tables are then held as Arrow arrays and each batch of
    targets gets its history lists with one vectorised ``take``: the cost is a copy of the output.
    """
    con.execute(f"""
        CREATE TABLE ev AS
        WITH w AS (
          SELECT _rid, user_id, item_id, rating, timestamp,
            count(*) OVER (PARTITION BY user_id {EARLIER}) AS user_n,
            avg(rating) OVER (PARTITION BY user_id {EARLIER}) AS user_avg,
            count(*) OVER (PARTITION BY item_id {EARLIER}) AS item_n,
            avg(rating) OVER (PARTITION BY item_id {EARLIER}) AS item_avg,
            row_number() OVER (PARTITION BY user_id {ORDER}) - 1 AS upos,
            row_number() OVER (PARTITION BY item_id {ORDER}) - 1 AS ipos,
            row_number() OVER ({USER_ORDER}) - 1 AS ug,
            row_number() OVER ({ITEM_ORDER}) - 1 AS ig
          FROM st WHERE reason IS NULL)
        SELECT _rid, user_id, item_id, rating, timestamp, user_n, user_avg, item_n, item_avg,
          ug - upos + user_n - least(user_n, {opts.history}) AS u_start, least(user_n, {opts.history}) AS u_len,
          ig - ipos + item_n - least(item_n, {opts.item_history}) AS i_start, least(item_n, {opts.item_history}) AS i_len
        FROM w""")
    con.execute(f"""
        CREATE VIEW entries AS
        SELECT e._rid, e.user_id, e.item_id, e.rating, e.timestamp, c.title, c.attributes,
               substr(coalesce(r.review, r.summary), 1, {opts.snippet_chars}) AS review
        FROM ev e JOIN raw r ON r._rid = e._rid LEFT JOIN cat c ON c.item_id = e.item_id""")
    user_entries = _entries(con, "item_id, title, attributes, rating, review, timestamp", USER_ORDER,
                            S.USER_HISTORY_ENTRY) if opts.history else None
    item_entries = _entries(con, "user_id, rating, review, timestamp", ITEM_ORDER,
                            S.ITEM_HISTORY_ENTRY) if opts.item_history else None
    sizes = {}
    for split in S.SPLITS:
        reader = con.sql(f"""
            SELECT '{split}-' || e.user_id || '-' || e.item_id || '-' || CAST(e.timestamp AS VARCHAR) AS sample_id,
                   e.user_id, e.item_id, e.rating, e.timestamp, c.title AS item_title,
                   c.attributes AS item_attributes, c.description AS item_description,
                   e.user_n, e.item_n, e.user_avg, e.item_avg, e.u_start, e.u_len, e.i_start, e.i_len
            FROM ev e JOIN tgt t ON t._rid = e._rid LEFT JOIN cat c ON c.item_id = e.item_id
            WHERE t.split = '{split}' ORDER BY e.timestamp, e._rid""").to_arrow_reader(SAMPLE_BATCH_ROWS)
        sizes[split] = write_parquet(S.split_path(out, split), S.SAMPLE_SCHEMA, (
            _sample_table(batch, user_entries, item_entries) for batch in reader))
    return sizes


def _sample_table(batch: pa.RecordBatch, user_entries: pa.StructArray | None,
                  item_entries: pa.StructArray | None) -> pa.Table:
    cols = {name: batch.column(name) for name in batch.schema.names}
    cols["user_history"] = _slices(user_entries, cols, "u", S.USER_HISTORY_ENTRY)
    cols["item_history"] = _slices(item_entries, cols, "i", S.ITEM_HISTORY_ENTRY)
    return pa.table({name: cols[name] for name in S.SAMPLE_SCHEMA.names}).cast(S.SAMPLE_SCHEMA)


def _entries(con, columns: str, order: str, entry: pa.DataType) -> pa.StructArray:
    """All kept interactions as one struct array in ``order`` (positions match ``u_start``/``i_start``)."""
    table = con.sql(f"SELECT {columns} FROM entries {order}").to_arrow_table()
    fields = list(entry)
    arrays = [table.column(f.name).combine_chunks().cast(f.type) for f in fields]
    return pa.StructArray.from_arrays(arrays, fields=fields)


def _slices(entries: pa.StructArray | None, cols: dict, prefix: str, entry: pa.DataType) -> pa.ListArray:
    """Per row, ``entries[start : start + len]`` as a list (one vectorised take for the batch)."""
    lengths = cols[f"{prefix}_len"].to_numpy().astype(np.int64)
    offsets = np.zeros(len(lengths) + 1, np.int64)
    np.cumsum(lengths, out=offsets[1:])
    if entries is None or offsets[-1] == 0:
        return pa.ListArray.from_arrays(pa.array(np.zeros(len(lengths) + 1, np.int32)), pa.array([], entry))
    starts = cols[f"{prefix}_start"].to_numpy().astype(np.int64)
    index = np.repeat(starts - offsets[:-1], lengths) + np.arange(offsets[-1])
    return pa.ListArray.from_arrays(pa.array(offsets.astype(np.int32)), entries.take(pa.array(index)))


def scalar(con, sql: str):
    """The single value of a one-row, one-column query (the result is fully consumed)."""
    return con.execute(sql).fetchall()[0][0]


def fetch_to_parquet(con, sql: str, path: Path, schema: pa.Schema) -> int:
    """Stream a query's result into a Parquet file with exactly ``schema``; returns the row count."""
    reader = con.sql(sql).to_arrow_reader(BATCH_ROWS)
    return write_parquet(path, schema, (pa.Table.from_batches([batch]) for batch in reader))


def write_parquet(path: Path, schema: pa.Schema, tables: Iterable[pa.Table], compression: str = COMPRESSION) -> int:
    """Write tables (cast to ``schema``) into one Parquet file; returns the row count.

    Each table is written in a background thread while the next one is produced (pyarrow releases
    the GIL), so building and compressing overlap on two cores.
    """
    n = 0
    with pq.ParquetWriter(path, schema, compression=compression, dictionary_pagesize_limit=DICTIONARY_PAGE_BYTES) as writer, ThreadPoolExecutor(1) as pool:
        pending = None
        for table in tables:
            table = table if table.schema.equals(schema) else table.cast(schema)
            if pending is not None:
                pending.result()
            pending = pool.submit(writer.write_table, table)
            n += table.num_rows
        if pending is not None:
            pending.result()
    return n
