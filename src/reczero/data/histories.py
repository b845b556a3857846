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

import base64
import logging
from collections import Counter
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from reczero.config import SampleOptions
from reczero.data import schema as S
from reczero.data.sources import BATCH_ROWS

log = logging.getLogger(__name__)

EARLIER = "ORDER BY timestamp RANGE BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING"
ORDER = "ORDER BY timestamp, _rid"
SAMPLE_BATCH_ROWS = 32_768
COMPRESSION = "none"           # 1.5-2x cheaper to write and to read than zstd, files ~1.4x larger
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


def _encoded(entry: pa.StructType) -> pa.StructType:
    return pa.struct([pa.field(f.name, pa.dictionary(pa.int32(), f.type)) if f.name == "review" else f for f in entry])


# what the split batches hold in memory: SAMPLE_SCHEMA with the snippets as dictionary arrays
ENCODED_USER_ENTRY = _encoded(S.USER_HISTORY_ENTRY)
ENCODED_ITEM_ENTRY = _encoded(S.ITEM_HISTORY_ENTRY)
ENCODED_SAMPLE = pa.schema([pa.field(f.name, pa.list_(ENCODED_USER_ENTRY)) if f.name == "user_history" else
                            pa.field(f.name, pa.list_(ENCODED_ITEM_ENTRY)) if f.name == "item_history" else f
                            for f in S.SAMPLE_SCHEMA])


USER_ORDER = "ORDER BY user_id, timestamp, _rid"
ITEM_ORDER = "ORDER BY item_id, timestamp, _rid"


def build_histories(con, opts: SampleOptions) -> History:
    """Table ``ev`` (per kept interaction: counts, averages, where its histories lie) and the entries.

    DuckDB computes, per kept interaction, the counts and averages and its position in user order
    (``ug``: all kept interactions sorted by user, time, input order) and in item order (``ig``);
    a target's history is then the ``u_len`` rows before its own in user order, starting at
    ``u_start`` (the same for items). Needs ``raw`` (the text), so it runs on ``con``.
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
        SELECT _rid, user_id, item_id, rating, timestamp, user_n, user_avg, item_n, item_avg, ug, ig,
          ug - upos + user_n - least(user_n, {opts.history}) AS u_start, least(user_n, {opts.history}) AS u_len,
          ig - ipos + item_n - least(item_n, {opts.item_history}) AS i_start, least(item_n, {opts.item_history}) AS i_len
        FROM w""")
    if not (opts.history or opts.item_history):
        return History(np.zeros(0, np.int64), np.zeros(0, np.int64), {})
    # one unsorted fetch; the two orders are index arrays, so no sort ever carries the text
    table = con.sql(f"""
        SELECT e.ug, e.ig, e.user_id, e.item_id, e.rating, e.timestamp, c.title, c.attributes,
               substr(coalesce(r.review, r.summary), 1, {opts.snippet_chars}) AS review
        FROM ev e JOIN raw r ON r._rid = e._rid LEFT JOIN cat c ON c.item_id = e.item_id""").to_arrow_table()
    fields = {f.name: f.type for f in (*S.USER_HISTORY_ENTRY, *S.ITEM_HISTORY_ENTRY)}
    columns = {name: table.column(name).combine_chunks().cast(tp) for name, tp in fields.items()}
    reviews = columns.pop("review").dictionary_encode()      # nulls stay null indices
    codes = pc.fill_null(reviews.indices, -1).to_numpy().astype(np.int32)
    return History(_inverse(table.column("ug")), _inverse(table.column("ig")), columns, codes, reviews.dictionary)


@dataclass
class History:
    """The kept interactions as history entries: ``columns`` in fetch order, and where each
    position of user order (``user_at``) and item order (``item_at``) lies among them.

    Review snippets are held once each (``snippets``, distinct values) with each entry's index
    into them (``snippet_of``, -1 for none): a batch's history lists then carry their snippets as a
    dictionary array of only the distinct snippets they use, which Parquet stores as the column
    chunk's dictionary page as is — no copy and no hash of each of the ~20 snippets per sample.
    """

    user_at: np.ndarray
    item_at: np.ndarray
    columns: dict[str, pa.Array]
    snippet_of: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int32))
    snippets: pa.Array = field(default_factory=lambda: pa.array([], pa.string()))

    def lists(self, starts: pa.Array, lengths: pa.Array, by: str) -> pa.ListArray:
        """Per row, the entries at ``[start, start + length)`` of user (``by="user"``) or item order."""
        entry = ENCODED_USER_ENTRY if by == "user" else ENCODED_ITEM_ENTRY
        n = lengths.to_numpy().astype(np.int64)
        offsets = np.zeros(len(n) + 1, np.int64)
        np.cumsum(n, out=offsets[1:])
        if offsets[-1] == 0:
            return pa.ListArray.from_arrays(pa.array(np.zeros(len(n) + 1, np.int32)), pa.array([], entry))
        start = starts.to_numpy().astype(np.int64)
        at = self.user_at if by == "user" else self.item_at
        rows = at[np.repeat(start - offsets[:-1], n) + np.arange(offsets[-1])]
        taken = pa.array(rows)
        values = [self._snippets(rows) if f.name == "review" else self.columns[f.name].take(taken) for f in entry]
        return pa.ListArray.from_arrays(pa.array(offsets.astype(np.int32)),
                                        pa.StructArray.from_arrays(values, fields=list(entry)))

    def _snippets(self, rows: np.ndarray) -> pa.DictionaryArray:
        codes = self.snippet_of[rows]
        have = codes >= 0
        used, index = np.unique(codes[have], return_inverse=True)
        indices = np.zeros(len(codes), np.int32)
        indices[have] = index
        return pa.DictionaryArray.from_arrays(pa.array(indices, mask=~have), self.snippets.take(pa.array(used)))


def _inverse(order: pa.ChunkedArray) -> np.ndarray:
    """``at[order[k]] = k``: from each row's position in an order to the row at each position."""
    pos = order.to_numpy()
    at = np.empty(len(pos), np.int64)
    at[pos] = np.arange(len(pos))
    return at


def write_splits(con, history: History, opts: SampleOptions, out: Path) -> dict[str, int]:
    """Write ``{train,valid,test}.parquet`` for the targets in ``tgt``; returns the sizes.

    Runs on its own DuckDB cursor, so that ``con`` stays free for other work meanwhile (building a
    batch — DuckDB, ``take`` — and encoding it — Parquet — release the GIL).
    """
    cursor = con.cursor()
    sizes = {}
    try:
        for split in S.SPLITS:
            reader = cursor.sql(f"""
                SELECT '{split}-' || e.user_id || '-' || e.item_id || '-' || CAST(e.timestamp AS VARCHAR) AS sample_id,
                       e.user_id, e.item_id, e.rating, e.timestamp, c.title AS item_title,
                       c.attributes AS item_attributes, c.description AS item_description,
                       e.user_n, e.item_n, e.user_avg, e.item_avg, e.u_start, e.u_len, e.i_start, e.i_len
                FROM ev e JOIN tgt t ON t._rid = e._rid LEFT JOIN cat c ON c.item_id = e.item_id
                WHERE t.split = '{split}' ORDER BY e.timestamp, e._rid""").to_arrow_reader(SAMPLE_BATCH_ROWS)
            sizes[split] = write_parquet(S.split_path(out, split), S.SAMPLE_SCHEMA,
                                         (_sample_table(batch, history) for batch in reader), encoded=ENCODED_SAMPLE)
    finally:
        cursor.close()
    return sizes


def _sample_table(batch: pa.RecordBatch, history: History) -> pa.Table:
    cols = {name: batch.column(name) for name in batch.schema.names}
    cols["user_history"] = history.lists(cols["u_start"], cols["u_len"], "user")
    cols["item_history"] = history.lists(cols["i_start"], cols["i_len"], "item")
    return pa.table({name: cols[name] for name in S.SAMPLE_SCHEMA.names}).cast(ENCODED_SAMPLE)


def scalar(con, sql: str):
    """The single value of a one-row, one-column query (the result is fully consumed)."""
    return con.execute(sql).fetchall()[0][0]


def fetch_to_parquet(con, sql: str, path: Path, schema: pa.Schema) -> int:
    """Stream a query's result into a Parquet file with exactly ``schema``; returns the row count."""
    reader = con.sql(sql).to_arrow_reader(BATCH_ROWS)
    return write_parquet(path, schema, (pa.Table.from_batches([batch]) for batch in reader))


def write_parquet(path: Path, schema: pa.Schema, tables: Iterable[pa.Table], compression: str = COMPRESSION,
                  encoded: pa.Schema | None = None, dictionary: bool | list[str] = True) -> int:
    """Write tables (cast to ``schema``) into one Parquet file; returns the row count.

    ``dictionary``: dictionary-encode all columns, or only those named.
    ``encoded``: the tables come in this schema instead, equal to ``schema`` but with some string
    columns as dictionary arrays; these are written as the column's dictionary page directly, and
    the file still declares ``schema`` (its ``ARROW:schema``), so every reader sees plain strings.
    Each table is written in a background thread while the next one is produced (pyarrow releases
    the GIL), so building and compressing overlap on two cores.
    """
    n = 0
    target = encoded or schema
    flat = [f.name for f in target if not pa.types.is_nested(f.type)]    # min/max of history leaves: never used
    with pq.ParquetWriter(path, target, compression=compression, use_dictionary=dictionary, write_statistics=flat,
                          dictionary_pagesize_limit=DICTIONARY_PAGE_BYTES, store_schema=encoded is None) as writer, ThreadPoolExecutor(1) as pool:
        if encoded is not None:
            writer.add_key_value_metadata({"ARROW:schema": base64.b64encode(schema.serialize().to_pybytes())})
        pending = None
        for table in tables:
            table = table if table.schema.equals(target) else table.cast(target)
            if pending is not None:
                pending.result()
            pending = pool.submit(writer.write_table, table)
            n += table.num_rows
        if pending is not None:
            pending.result()
    return n
