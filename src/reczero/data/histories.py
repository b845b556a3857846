"""Targets, splits and leakage-free histories for :func:`reczero.data.samples.write_prepared`.

Works on the DuckDB tables that ``write_prepared`` builds: ``st`` (every parsed interaction with
its reject ``reason``, NULL when kept), ``raw`` (the interactions with their text) and ``cat``
(the kept items). What it chose, and why (``bench/prepare.py`` measures it, ``bench/RESULTS.md``):

* Order is always (timestamp, input order ``_rid``): deterministic, and ties at the same second
  keep the order of the dump.
* Counts, averages and history windows come from one numpy sort of the kept rows by (user, time,
  input order) — and one by item: a row's earlier interactions are the rows of its group before its
  first same-second tie (so ties are excluded), their mean a difference of prefix sums. O(n log n),
  ~3x cheaper than the equivalent DuckDB window functions (eight windows, six sorts).
* Histories: a target's ``c`` earlier interactions are the ``c`` rows before its tie group in that
  order, so its history is a slice of it; only (start, length) pairs are kept per target, and each
  batch of targets gets its lists with one vectorised ``take`` of the entry columns. Cost: linear
  in targets x window — the size of the output itself. The entry columns (ids, rating, time,
  snippet; title and attributes by item) are read with pyarrow straight from the interactions
  input, so no text passes through a DuckDB join or sort. Since (user, item) pairs are unique
  after the dedupe, an item's earlier reviews are all by other users.
* Review snippets (and the ids and titles), which recur in up to ``history + item_history``
  samples, are numbered once (``dictionary_encode``); a batch's history lists carry them as
  dictionary arrays of just the values they use, which Parquet writes as the row group's dictionary
  page as it is: no copy and no hash per occurrence. The file still declares ``SAMPLE_SCHEMA``
  (plain strings), so readers see no difference.
* Split files are written uncompressed (``COMPRESSION``): their bulk is the snippet dictionary
  pages, where lz4 saves ~1.6x of disk but costs ~45% of the writing; the histories' leaf columns
  get no min/max statistics (never used). A writer thread overlaps the next batch.
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

ORDER = "ORDER BY timestamp, _rid"
SAMPLE_BATCH_ROWS = 32_768
FLAG_RATIO = 8                 # see History._dictionary
COMPRESSION = "none"           # split files: lz4 is ~1.6x smaller but ~1.8x dearer to write (see module doc)
DICTIONARY_PAGE_BYTES = 64 << 20   # room for a row group's distinct snippets (~30 MiB at the default windows)


def choose_targets(con, opts: SampleOptions, n_kept: int) -> dict[str, int]:
    """Table ``tgt(_rid, timestamp, split)`` of chosen targets (needs ``ev``: :func:`build_histories`);
    returns targets dropped by reason."""
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
          SELECT _rid, timestamp, {split} AS split, user_n FROM ev)
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


CODED = ("user_id", "item_id", "title", "review")   # history strings carried as per-batch dictionaries


def _encoded(entry: pa.StructType) -> pa.StructType:
    return pa.struct([pa.field(f.name, pa.dictionary(pa.int32(), f.type)) if f.name in CODED else f for f in entry])


# what the split batches hold in memory: SAMPLE_SCHEMA with the coded history strings as dictionary arrays
ENCODED_USER_ENTRY = _encoded(S.USER_HISTORY_ENTRY)
ENCODED_ITEM_ENTRY = _encoded(S.ITEM_HISTORY_ENTRY)
ENCODED_SAMPLE = pa.schema([pa.field(f.name, pa.list_(ENCODED_USER_ENTRY)) if f.name == "user_history" else
                            pa.field(f.name, pa.list_(ENCODED_ITEM_ENTRY)) if f.name == "item_history" else f
                            for f in S.SAMPLE_SCHEMA])


def build_histories(con, opts: SampleOptions, interactions: pa.Table | Path) -> History:
    """Table ``ev`` (per kept interaction: counts, averages, where its histories lie) and the entries.

    Per kept interaction, in numpy over the (user, time, input order) sort of the kept rows: the
    number and mean rating of the user's interactions strictly before its second, and where its
    history lies in that order (the ``u_len`` rows before its first same-second tie, from
    ``u_start``); the same for items. ``ev`` goes back into DuckDB for the target queries. The
    entries themselves are read straight from ``interactions`` (what ``raw`` shows, row ``_rid``
    = row number) with pyarrow, so no text passes through DuckDB, a join or a sort.
    """
    kept = con.sql("SELECT _rid, user_id, item_id, rating, timestamp FROM st WHERE reason IS NULL").to_arrow_table()
    rid, rating, ts = (kept.column(name).to_numpy() for name in ("_rid", "rating", "timestamp"))
    user = _earlier(_codes(kept.column("user_id")), ts, rid, rating, opts.history)
    item = _earlier(_codes(kept.column("item_id")), ts, rid, rating, opts.item_history)
    ev = pa.table({"_rid": rid, "user_id": kept.column("user_id"), "item_id": kept.column("item_id"),
                   "rating": kept.column("rating"), "timestamp": ts,     # the Arrow column: null stays null
                   "user_n": user.n, "user_avg": user.avg, "item_n": item.n, "item_avg": item.avg,
                   "u_start": user.start, "u_len": user.length, "i_start": item.start, "i_len": item.length})
    con.register("ev_arrow", ev)
    con.execute("CREATE TABLE ev AS SELECT * FROM ev_arrow")
    con.unregister("ev_arrow")
    if not (opts.history or opts.item_history):
        return History(np.zeros(0, np.int64), np.zeros(0, np.int64), {})
    columns = _entry_columns(interactions, opts.snippet_chars)
    items = con.sql("SELECT item_id, title, attributes FROM cat").to_arrow_table()
    at_item = pc.index_in(columns["item_id"], value_set=items.column("item_id"))   # null: not a kept item
    for name in ("title", "attributes"):
        columns[name] = items.column(name).combine_chunks().take(at_item)
    fields = {f.name: f.type for f in (*S.USER_HISTORY_ENTRY, *S.ITEM_HISTORY_ENTRY)}
    columns = {name: columns[name].cast(fields[name]) for name in fields}
    coded = {}
    for name in CODED:
        values = columns.pop(name).dictionary_encode()      # nulls stay null indices
        coded[name] = (pc.fill_null(values.indices, -1).to_numpy().astype(np.int32), values.dictionary)
    return History(user.at, item.at, columns, coded)


@dataclass
class Earlier:
    """Per kept row (in ``ev`` order): ``n`` earlier interactions of its user (or item), their mean
    rating ``avg`` (null when none, or when they have no ratings: implicit data), and its history
    window ``[start, start + length)`` in the group order; ``at[p]`` is the ``_rid`` at position
    ``p`` of that order."""

    n: np.ndarray
    avg: pa.Array
    start: np.ndarray
    length: np.ndarray
    at: np.ndarray


def _codes(ids: pa.ChunkedArray) -> np.ndarray:
    return ids.combine_chunks().dictionary_encode().indices.to_numpy()


def _earlier(group: np.ndarray, ts: np.ndarray, rid: np.ndarray, rating: np.ndarray, window: int) -> Earlier:
    """Counts, means and windows over the interactions strictly before each row's second, per group.

    Sort by (group, time, input order); a row's earlier interactions are the rows from its group's
    first to its own (time, ...) tie group's first: ``tie_start - block_start`` of them, summed by a
    prefix sum. O(n log n) for the sort, O(n) after it.
    """
    order = np.lexsort((rid, ts, group))
    g, t = group[order], ts[order]
    pos = np.arange(len(order))
    block = np.ones(len(order), bool)
    block[1:] = g[1:] != g[:-1]
    tie = block.copy()
    tie[1:] |= t[1:] != t[:-1]
    block_start = np.maximum.accumulate(np.where(block, pos, 0))
    tie_start = np.maximum.accumulate(np.where(tie, pos, 0))
    n = tie_start - block_start
    total = np.zeros(len(order) + 1)
    np.cumsum(rating[order], out=total[1:])
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = (total[tie_start] - total[block_start]) / n
    length = np.minimum(n, window)
    back = np.empty_like(order)
    back[order] = pos                         # row -> its position in the order
    # null where there is nothing to average: no earlier row (0/0), or null ratings (NaN, implicit data)
    return Earlier(n=n[back], avg=pa.array(mean[back], mask=np.isnan(mean)[back]), start=(tie_start - length)[back],
                   length=length[back], at=rid[order])


def _entry_columns(interactions: pa.Table | Path, snippet_chars: int) -> dict[str, pa.Array]:
    """Every input row's ids, rating, time and review snippet (the review, else the summary, cut to
    ``snippet_chars`` characters), in input order; the full texts are read one batch at a time."""
    names = S.INTERACTIONS_SCHEMA.names
    if isinstance(interactions, pa.Table):
        batches = interactions.select(names).to_batches(BATCH_ROWS)
    else:
        batches = pq.ParquetFile(interactions).iter_batches(BATCH_ROWS, columns=names)
    parts: dict[str, list] = {name: [] for name in ("user_id", "item_id", "rating", "timestamp", "review")}
    for batch in batches:
        batch = batch.select(names).cast(S.INTERACTIONS_SCHEMA)     # as ``raw`` casts them
        for name in ("user_id", "item_id", "rating", "timestamp"):
            parts[name].append(batch.column(name))
        review, summary = (pc.utf8_slice_codeunits(batch.column(name), 0, snippet_chars) for name in ("review", "summary"))
        parts["review"].append(pc.coalesce(review, summary))       # cut first: coalesce copies what it is given
    return {name: pa.concat_arrays(arrays) if arrays else pa.array([], S.INTERACTIONS_SCHEMA.field(name).type)
            for name, arrays in parts.items()}


@dataclass
class History:
    """The kept interactions as history entries, by input row: ``columns``, and where each position
    of user order (``user_at``) and item order (``item_at``) lies among them.

    The strings (``coded``: ids, title, review snippet) are held once each, as ``(codes, values)``:
    each row's index into the distinct ``values`` (-1 for none). A batch's history lists carry them
    as dictionary arrays of only the values they use, which Parquet writes as the column chunk's
    dictionary page as is: no copy and no hash of each of the ~20 snippets per sample.
    """

    user_at: np.ndarray
    item_at: np.ndarray
    columns: dict[str, pa.Array]
    coded: dict[str, tuple[np.ndarray, pa.Array]] = field(default_factory=dict)

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
        values = [self._dictionary(f.name, rows) if f.name in self.coded else self.columns[f.name].take(taken)
                  for f in entry]
        return pa.ListArray.from_arrays(pa.array(offsets.astype(np.int32)),
                                        pa.StructArray.from_arrays(values, fields=list(entry)))

    def _dictionary(self, name: str, rows: np.ndarray) -> pa.DictionaryArray:
        """The rows' values of ``name`` as a dictionary array of just the distinct values they use.

        Which codes are used: a flag per distinct value while there are at most ``FLAG_RATIO``
        times as many as rows (a pass over the flags is then cheaper than a sort), else a sort —
        so the cost stays O(rows log rows) per batch however large the dataset.
        """
        codes, values = self.coded[name]
        codes = codes[rows]
        have = codes >= 0
        present = codes[have]
        if len(values) <= FLAG_RATIO * len(codes):
            flags = np.zeros(len(values), bool)
            flags[present] = True
            used = np.flatnonzero(flags)
            renumber = np.zeros(len(values), np.int32)
            renumber[used] = np.arange(len(used), dtype=np.int32)
            index = renumber[present]
        else:
            used, index = np.unique(present, return_inverse=True)
        indices = np.zeros(len(codes), np.int32)
        indices[have] = index
        return pa.DictionaryArray.from_arrays(pa.array(indices, mask=~have), values.take(pa.array(used)))


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


def fetch_to_parquet(con, sql: str, path: Path, schema: pa.Schema, compression: str = "zstd") -> int:
    """Stream a query's result into a Parquet file with exactly ``schema``; returns the row count."""
    reader = con.sql(sql).to_arrow_reader(BATCH_ROWS)
    return write_parquet(path, schema, (pa.Table.from_batches([batch]) for batch in reader), compression)


def write_parquet(path: Path, schema: pa.Schema, tables: Iterable[pa.Table], compression: str = COMPRESSION,
                  encoded: pa.Schema | None = None, dictionary: bool | list[str] = True, *,
                  compression_level: int | None = None, statistics: list[str] | None = None) -> int:
    """Write tables (cast to ``schema``) into one Parquet file; returns the row count.

    ``dictionary``: dictionary-encode all columns, or only those named. ``statistics``: the columns
    that get min/max statistics (default: every column that is not nested).
    ``encoded``: the tables come in this schema instead, equal to ``schema`` but with some string
    columns as dictionary arrays; these are written as the column's dictionary page directly, and
    the file still declares ``schema`` (its ``ARROW:schema``), so every reader sees plain strings.
    Each table is written in a background thread while the next one is produced (pyarrow releases
    the GIL), so building and compressing overlap on two cores.
    """
    n = 0
    target = encoded or schema
    if statistics is None:
        statistics = [f.name for f in target if not pa.types.is_nested(f.type)]   # min/max of history leaves: never used
    with pq.ParquetWriter(path, target, compression=compression, compression_level=compression_level,
                          use_dictionary=dictionary, write_statistics=statistics,
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
