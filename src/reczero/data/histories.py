"""Targets, splits and leakage-free histories for :func:`reczero.data.samples.write_prepared`.

Works on the DuckDB tables that ``write_prepared`` builds: ``st`` (every parsed interaction with
its reject ``reason``, NULL when kept), ``raw`` (the interactions with their text) and ``cat``
(the kept items). What it chose, and why:

* Order is always (timestamp, input order ``_rid``): deterministic, and ties at the same second
  keep the order of the dump.
* ``user_n``/``user_avg``/``item_n``/``item_avg`` use a ``RANGE BETWEEN UNBOUNDED PRECEDING AND
  1 PRECEDING`` frame on integer seconds: exactly the interactions strictly before the target's
  second (DuckDB evaluates these with segment trees, so heavy users cost n log n, not n^2).
* Histories: within a user's (or item's) partition the ``c`` rows earlier than the target come
  first, so the window is rows ``[c - N, c)``: ``ROWS BETWEEN (pos - c + N) PRECEDING AND
  (pos - c + 1) PRECEDING``, a per-row frame of at most N rows (an empty frame gives NULL -> []).
  Since (user, item) pairs are unique after the dedupe, an item's earlier reviews are all by
  other users.
* Caps (``max_samples``) pick positions with ``numpy.random.default_rng([seed, split index])``
  over the split's targets in time order, then keep time order: the same options give the same
  samples on any machine and DuckDB version.
"""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa

from reczero.config import SampleOptions
from reczero.data import schema as S

log = logging.getLogger(__name__)

EARLIER = "ORDER BY timestamp RANGE BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING"
ORDER = "ORDER BY timestamp, _rid"


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
    dropped["min_history"] = n_kept - con.execute("SELECT count(*) FROM tgt").fetchone()[0]
    for index, (name, cap) in enumerate(sorted(opts.parsed_max_samples().items(), key=lambda kv: S.SPLITS.index(kv[0]))):
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


def _window(partition: str, n: int, n_col: str, pos_col: str, entry: str) -> str:
    if n == 0:
        return f"[]::{'USER' if partition == 'user_id' else 'ITEM'}_ENTRY[]"
    return (f"coalesce(list({entry}) OVER (PARTITION BY {partition} {ORDER} "
            f"ROWS BETWEEN ({pos_col} - {n_col} + {n}) PRECEDING AND ({pos_col} - {n_col} + 1) PRECEDING), [])")


USER_ENTRY = ("struct_pack(item_id := item_id, title := title, attributes := attributes, rating := rating, "
              "review := snippet, timestamp := timestamp)")
ITEM_ENTRY = "struct_pack(user_id := user_id, rating := rating, review := snippet, timestamp := timestamp)"


def write_splits(con, opts: SampleOptions, out: Path) -> dict[str, int]:
    """Build the samples of the chosen targets and write ``{train,valid,test}.parquet``; returns sizes."""
    from reczero.data.samples import _fetch_to_parquet

    con.execute("""
        CREATE TYPE USER_ENTRY AS STRUCT(item_id VARCHAR, title VARCHAR, attributes VARCHAR[], rating DOUBLE,
                                        review VARCHAR, timestamp BIGINT);
        CREATE TYPE ITEM_ENTRY AS STRUCT(user_id VARCHAR, rating DOUBLE, review VARCHAR, timestamp BIGINT)""")
    con.execute(f"""
        CREATE TABLE ev AS
        SELECT s._rid, s.user_id, s.item_id, s.rating, s.timestamp, c.title, c.attributes, c.description,
               substr(coalesce(r.review, r.summary), 1, {opts.snippet_chars}) AS snippet
        FROM st s JOIN raw r ON r._rid = s._rid LEFT JOIN cat c ON c.item_id = s.item_id
        WHERE s.reason IS NULL""")
    con.execute(f"""
        CREATE TABLE samples AS
        WITH w AS (
          SELECT *,
            count(*) OVER (PARTITION BY user_id {EARLIER}) AS user_n,
            avg(rating) OVER (PARTITION BY user_id {EARLIER}) AS user_avg,
            count(*) OVER (PARTITION BY item_id {EARLIER}) AS item_n,
            avg(rating) OVER (PARTITION BY item_id {EARLIER}) AS item_avg,
            row_number() OVER (PARTITION BY user_id {ORDER}) - 1 AS upos,
            row_number() OVER (PARTITION BY item_id {ORDER}) - 1 AS ipos
          FROM ev),
        h AS (
          SELECT _rid, user_id, item_id, rating, timestamp, title, attributes, description,
                 user_n, item_n, user_avg, item_avg,
                 {_window("user_id", opts.history, "user_n", "upos", USER_ENTRY)} AS user_history,
                 {_window("item_id", opts.item_history, "item_n", "ipos", ITEM_ENTRY)} AS item_history
          FROM w)
        SELECT t.split, h.* FROM h JOIN tgt t ON h._rid = t._rid""")
    sizes = {}
    for split in S.SPLITS:
        sizes[split] = _fetch_to_parquet(con, f"""
            SELECT split || '-' || user_id || '-' || item_id || '-' || CAST(timestamp AS VARCHAR) AS sample_id,
                   user_id, item_id, rating, timestamp, title AS item_title, attributes AS item_attributes,
                   description AS item_description, user_history, item_history, user_n, item_n, user_avg, item_avg
            FROM samples WHERE split = '{split}' {ORDER}""", S.split_path(out, split), S.SAMPLE_SCHEMA)
    return sizes
