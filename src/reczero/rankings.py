"""Full-ranking evaluation of next-item recommenders: ``rankings.parquet`` and its ``metrics.json``.

The protocol (DESIGN.md, R2EC.md), and why each choice:

* **Full ranking over the catalog** (:class:`ItemCatalog`): every item known at training time, i.e.
  every item id among the train split's targets and the train split's user histories. No sampled
  negatives: sampled metrics reorder methods (Krichene & Rendle, KDD 2020).
* **The user's history is masked** (``mask_history=True``): the items of the row's
  ``user_history`` window (``--history`` long) are not recommendable and never outrank the target.
  ``--no-mask-history`` keeps them, for repeat-consumption data. A target that is itself in the
  masked history cannot be recommended: it is ranked last (counted in ``n_targets_in_history``).
* **Ties are ranked pessimistically**: the target's rank is the number of catalog items scored at
  least as high as the target (itself included), so a constant scorer ranks every target last and
  earns nothing. ``top_items`` breaks ties by catalog order (what a deployed list would show);
  ``rank <= K`` still implies the target is in ``top_items[:K]``.
* **Unknown targets are misses, never dropped**: a target item absent from the catalog has a null
  ``rank`` (a miss at every K, reciprocal rank 0) and still counts in ``n``.
* **Memory**: users are scored in blocks of ``block_size`` rows (by default ~16M scores, 64 MiB of
  float32 per block) and the top-K comes from ``numpy.argpartition``; a users x items matrix is
  never built in full.
* **One writer** (:func:`write_rankings`), as :func:`reczero.predictions.write_results` is for
  ratings (both write their file pair through :func:`reczero.predictions.write_result_files`): it
  refuses bad frames, writes the Parquet file atomically and computes ``metrics.json`` from the
  very Arrow table it wrote, so the two always agree.

Ranking reads the split's ``sample_id, user_id, item_id, user_n, user_history`` (item ids, and
their timestamps where a trainer asks for them); it never reads ratings, so implicit datasets
(``rating`` null) rank like any other.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from reczero import metrics as M
from reczero.errors import DataError, ReczeroError
from reczero.predictions import METRICS, read_metrics, write_result_files

log = logging.getLogger(__name__)

RANKING_KS = (5, 10, 20)
RANKINGS = "rankings.parquet"
COLUMNS = ("sample_id", "user_id", "item_id", "rank", "user_n", "top_items", "top_scores")
ROW_COLUMNS = ["sample_id", "user_id", "item_id", "user_n", "user_history"]
BLOCK_SCORES = 1 << 24          # scores per block: 64 MiB of float32


def rankings_schema():
    import pyarrow as pa

    return pa.schema([
        ("sample_id", pa.string()), ("user_id", pa.string()), ("item_id", pa.string()),
        ("rank", pa.int64()), ("user_n", pa.int64()),
        ("top_items", pa.list_(pa.string())), ("top_scores", pa.list_(pa.float32())),
    ])


# ----------------------------------------------------------------------------------------------
# The catalog and the ranking input
# ----------------------------------------------------------------------------------------------


class ItemCatalog:
    """The items known at training time: ``ids`` (a ``pandas.Index``, sorted) -> dense index 0..n-1.

    >>> cat = ItemCatalog(["b", "a", "b"])
    >>> list(cat.ids), cat.index(["a", "zz", "b"]).tolist()
    (['a', 'b'], [0, -1, 1])
    """

    def __init__(self, item_ids: Sequence[str]) -> None:
        import pandas as pd

        ids = pd.Index(pd.unique(pd.Series(list(item_ids), dtype=object))).astype(str).sort_values()
        if len(ids) == 0:
            raise DataError("the item catalog is empty: no item is known at training time")
        self.ids = ids

    @classmethod
    def from_rows(cls, rows) -> ItemCatalog:
        """The catalog of a train split read by :func:`load_ranking_rows`: targets and history items."""
        import pyarrow as pa
        import pyarrow.compute as pc

        values, _ = list_values(rows["history"])
        items = pa.chunked_array([pa.array(rows["item_id"], pa.string()), values.cast(pa.string())])
        return cls(pc.unique(items.drop_null()).to_pylist())

    @classmethod
    def from_data(cls, data_dir: str | Path) -> ItemCatalog:
        return cls.from_rows(load_ranking_rows(data_dir, "train"))

    def __len__(self) -> int:
        return len(self.ids)

    def index(self, item_ids) -> np.ndarray:
        """Dense indices (int64) of ``item_ids`` (a sequence or an Arrow array of strings); -1 for
        an id unknown at training time."""
        import pyarrow as pa
        import pyarrow.compute as pc

        if len(item_ids) == 0:
            return np.empty(0, dtype=np.int64)
        if not isinstance(item_ids, pa.Array | pa.ChunkedArray):
            item_ids = pa.array(list(item_ids), pa.string())
        found = pc.index_in(item_ids.cast(pa.string()), value_set=self._arrow_ids)   # C++ hashing
        return found.fill_null(-1).to_numpy().astype(np.int64)

    @property
    def _arrow_ids(self):
        import pyarrow as pa

        if getattr(self, "_arrow", None) is None:
            self._arrow = pa.array(list(self.ids), pa.string())
        return self._arrow

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(list(self.ids)) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> ItemCatalog:
        path = Path(path)
        try:
            ids = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise DataError(f"{path}: not a readable item catalog ({err})") from err
        if not isinstance(ids, list):
            raise DataError(f"{path}: expected a JSON list of item ids")
        return cls(ids)


def load_ranking_rows(data_dir: str | Path, split: str, *, timestamps: bool = False):
    """The ranking input of a split: ``sample_id, user_id, item_id, user_n`` and ``history`` (the
    ``user_history`` window's item ids, oldest first); with ``timestamps`` also ``timestamp`` and
    ``history_timestamps``. Never reads ratings.

    DuckDB reads only the ``item_id`` (and ``timestamp``) leaves of the nested history, not its
    titles and review snippets, and the lists stay Arrow-backed (``pandas.ArrowDtype``): a train
    split of 10^5 rows x 50 history entries loads in about a second. Iterating ``history`` yields
    Python lists; :func:`list_values` gives the flat Arrow values for vectorised work.
    """
    import duckdb
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    from reczero.data import schema

    schema.read_manifest(data_dir)
    path = schema.split_path(data_dir, split)
    if not path.is_file():
        raise DataError(f"{path}: split file missing")
    wanted = ROW_COLUMNS + (["timestamp"] if timestamps else [])
    missing = [c for c in wanted if c not in pq.read_schema(path).names]
    if missing:
        raise DataError(f"{path}: missing column(s) {', '.join(missing)} of the prepared-sample schema")
    extra = (", timestamp, coalesce([h.timestamp for h in user_history], []) AS history_timestamps"
             if timestamps else "")
    query = (f"SELECT sample_id, user_id, item_id, user_n, coalesce([h.item_id for h in user_history], []) AS history"
             f"{extra} FROM read_parquet(?)")
    with duckdb.connect() as con:
        table = con.sql(query, params=[str(path)]).to_arrow_table()
    return table.to_pandas(types_mapper=lambda t: pd.ArrowDtype(t) if pa.types.is_list(t) else None)


def list_values(column):
    """``(values, lengths)`` of a list column (Arrow-backed or Python lists): the flat values as an
    Arrow array and each row's list length as int64 numpy (a null list has length 0)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    arr = column.array.__arrow_array__() if hasattr(column, "array") and hasattr(column.array, "__arrow_array__") \
        else pa.array(list(column))
    arr = arr.combine_chunks() if isinstance(arr, pa.ChunkedArray) else arr
    lengths = pc.list_value_length(arr).fill_null(0).to_numpy().astype(np.int64)
    return pc.list_flatten(arr), lengths


# ----------------------------------------------------------------------------------------------
# Ranking
# ----------------------------------------------------------------------------------------------


def full_ranking(score_block: Callable[[np.ndarray], np.ndarray], histories: Sequence[Sequence[str]],
                 targets: Sequence[str], catalog: ItemCatalog, *, mask_history: bool = True, top_k: int = 20,
                 block_size: int | None = None):
    """Rank every catalog item for each row; returns a DataFrame ``rank, top_items, top_scores``.

    ``score_block(rows)`` gets an int64 array of row positions (into ``histories`` / ``targets``)
    and returns float32 scores of shape ``(len(rows), len(catalog))``, higher = better (``-inf``
    allowed, NaN refused). ``rank`` (pandas ``Int64``) is pessimistic on ties and ``<NA>`` for a
    target unknown to the catalog; ``top_items``/``top_scores`` hold the best ``top_k`` items that
    are not masked, ties in catalog order. The frame's ``attrs`` record ``n_items``,
    ``mask_history`` and ``n_targets_in_history`` for :func:`write_rankings`.
    """
    import pandas as pd

    n, n_items = len(targets), len(catalog)
    if len(histories) != n:
        raise ValueError(f"{len(histories)} histories for {n} targets")
    if top_k < 1:
        raise ValueError(f"top_k must be >= 1, got {top_k}")
    block = block_size or max(1, BLOCK_SCORES // n_items)
    target_idx = catalog.index(list(targets))
    lengths = np.fromiter((len(h) for h in histories), dtype=np.int64, count=n)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    flat = catalog.index([item for h in histories for item in h]) if mask_history else None
    ranks = np.zeros(n, dtype=np.int64)
    in_history = 0
    top_items: list[list[str]] = []
    top_scores: list[np.ndarray] = []
    k = min(top_k, n_items)
    ids = np.asarray(catalog.ids, dtype=object)
    for start in range(0, n, block):
        rows = np.arange(start, min(start + block, n), dtype=np.int64)
        scores = np.array(score_block(rows), dtype=np.float32)     # a copy: masking writes into it
        if scores.shape != (len(rows), n_items):
            raise ReczeroError(f"score_block returned shape {scores.shape}; expected ({len(rows)}, {n_items})")
        if np.isnan(scores).any():
            raise ReczeroError(f"score_block returned NaN scores for rows {start}..{rows[-1]}")
        if flat is not None:
            lo, hi = offsets[rows[0]], offsets[rows[-1] + 1]
            cols = flat[lo:hi]
            r = np.repeat(np.arange(len(rows)), lengths[rows])
            known = cols >= 0
            scores[r[known], cols[known]] = -np.inf
            in_history += np.unique(r[known & (cols == target_idx[rows][r])]).size
        t = target_idx[rows]
        hit = t >= 0
        target_score = np.full(len(rows), np.inf, dtype=np.float32)     # unknown rows: rank unused
        target_score[hit] = scores[np.flatnonzero(hit), t[hit]]
        ranks[rows] = (scores >= target_score[:, None]).sum(axis=1)
        best, best_scores = top_k_columns(scores, k)
        for items, values in zip(best, best_scores, strict=True):
            keep = np.isfinite(values) | (values > 0)              # masked items (-inf) are not recommended
            top_items.append(ids[items[keep]].tolist())
            top_scores.append(values[keep])
    rank = pd.array(np.where(target_idx >= 0, ranks, 0), dtype="Int64")
    rank[target_idx < 0] = pd.NA
    frame = pd.DataFrame({"rank": rank, "top_items": top_items, "top_scores": top_scores})
    frame.attrs.update(n_items=n_items, mask_history=bool(mask_history), n_targets_in_history=in_history)
    if in_history:
        log.warning("%d target(s) are in their own masked history and were ranked last; "
                    "use --no-mask-history for repeat-consumption data", in_history)
    return frame


def top_k_columns(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """``(columns, scores)`` of the ``k`` best scores of each row, best first, ties broken by column
    (catalog) index, so the list is deterministic (``argpartition`` alone picks arbitrary ties).
    Both arrays are ``(n_rows, min(k, n_items))``; masked (-inf) entries stay in for the caller to drop.
    Used by :func:`full_ranking` and by ``reczero serve``'s ``/v1/recommend``.

    >>> cols, vals = top_k_columns(np.array([[0.1, 0.9, 0.5, 0.9]]), 3)
    >>> cols.tolist(), vals.tolist()
    ([[1, 3, 2]], [[0.9, 0.9, 0.5]])
    """
    n_rows, n_items = scores.shape
    k = min(k, n_items)
    if k == n_items:
        part = np.tile(np.arange(n_items), (n_rows, 1))
    else:
        kth = -np.partition(-scores, k - 1, axis=1)[:, k - 1:k]    # the k-th largest score of each row
        greater = scores > kth
        room = k - greater.sum(axis=1, keepdims=True)              # how many ties at kth still fit
        equal = scores == kth
        chosen = greater | (equal & (np.cumsum(equal, axis=1, dtype=np.int32) <= room))
        part = np.nonzero(chosen)[1].reshape(n_rows, k)
    part_scores = np.take_along_axis(scores, part, axis=1)
    order = np.lexsort((part, -part_scores), axis=1)             # score desc, then catalog order
    return np.take_along_axis(part, order, axis=1), np.take_along_axis(part_scores, order, axis=1)


def rank_rows(score_block: Callable[[np.ndarray], np.ndarray], rows, catalog: ItemCatalog, *,
              mask_history: bool = True, top_k: int = 20, block_size: int | None = None):
    """:func:`full_ranking` of the rows of :func:`load_ranking_rows`: the complete frame of
    :data:`COLUMNS` that :func:`write_rankings` takes (``attrs`` as full_ranking's)."""
    ranked = full_ranking(score_block, list(rows["history"]), list(rows["item_id"]), catalog,
                          mask_history=mask_history, top_k=top_k, block_size=block_size)
    frame = rows[["sample_id", "user_id", "item_id", "user_n"]].reset_index(drop=True)
    for col in ("rank", "top_items", "top_scores"):
        frame[col] = ranked[col]
    frame = frame[list(COLUMNS)]
    frame.attrs.update(ranked.attrs)
    return frame


# ----------------------------------------------------------------------------------------------
# Per-sample values and metrics
# ----------------------------------------------------------------------------------------------


def per_sample_ndcg(ranks, k: int) -> np.ndarray:
    """NDCG@k of each sample, ``1/log2(rank+1)`` if ``rank <= k`` else 0; a null/NaN rank is 0.
    For paired bootstraps with :func:`reczero.metrics.bootstrap_mean`.

    >>> per_sample_ndcg([1, 3, None, 30], 10).round(3).tolist()
    [1.0, 0.5, 0.0, 0.0]
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    r = M.miss_ranks(ranks)
    return np.where(r <= k, 1.0 / np.log2(r + 1.0), 0.0)


def compute_ranking_metrics(table, *, method: str, split: str, n_items: int, mask_history: bool) -> dict[str, Any]:
    """The ``metrics.json`` content of a rankings Arrow table (as written by :func:`write_rankings`)."""
    from reczero.predictions import HISTORY_BUCKETS

    ranks = M.miss_ranks(table.column("rank").to_pandas())
    user_n = table.column("user_n").to_numpy()
    out: dict[str, Any] = {"task": "ranking", "method": method, "split": split, "n": int(len(ranks))}
    for k in RANKING_KS:
        out[f"hit@{k}"] = M.hit_at_k(ranks, k)
    for k in RANKING_KS:
        out[f"ndcg@{k}"] = M.ndcg_at_k(ranks, k)
    out["mrr"] = M.mrr(ranks)
    out["n_items"] = int(n_items)
    out["n_unknown_targets"] = int(np.isinf(ranks).sum())
    out["mask_history"] = bool(mask_history)
    out["ndcg@10_by_history"] = [
        {"bucket": label, "n": int(mask.sum()), "ndcg@10": M.ndcg_at_k(ranks[mask], 10) if mask.any() else None}
        for label, lo, hi in HISTORY_BUCKETS
        for mask in [(user_n >= lo) & ((user_n <= hi) if hi is not None else True)]
    ]
    return out


def _table(frame, n_items: int):
    """Validate a rankings frame and convert it to an Arrow table of :func:`rankings_schema`."""
    import pandas as pd
    import pyarrow as pa

    missing = [c for c in COLUMNS if c not in frame.columns]
    if missing:
        raise ReczeroError(f"rankings lack column(s) {', '.join(missing)}; expected {', '.join(COLUMNS)}")
    if len(frame) == 0:
        raise ReczeroError("rankings are empty: nothing to score")
    df = frame.reset_index(drop=True)[list(COLUMNS)].copy()
    dup = df["sample_id"].duplicated()
    if dup.any():
        raise ReczeroError(f"rankings: sample_id {df.loc[dup, 'sample_id'].iloc[0]!r} occurs more than once")
    rank = pd.to_numeric(df["rank"], errors="coerce").astype("Float64")
    bad = rank.notna() & ((rank < 1) | (rank > n_items) | (rank != rank.round()))
    if bad.any():
        i = int(np.flatnonzero(bad.to_numpy(dtype=bool, na_value=False))[0])
        raise ReczeroError(f"rankings: sample_id {df['sample_id'].iloc[i]!r} has rank {rank.iloc[i]:g}; "
                           f"expected an integer in 1..{n_items} (n_items) or null for an unknown target")
    df["rank"] = rank.astype("Int64")
    if df["user_n"].isna().any():
        raise ReczeroError("rankings: 'user_n' must be set on every row")
    lengths = df["top_items"].map(len).to_numpy()
    if (lengths != df["top_scores"].map(len).to_numpy()).any():
        raise ReczeroError("rankings: 'top_items' and 'top_scores' differ in length on some row")
    schema = rankings_schema()
    try:
        return pa.Table.from_pandas(df, schema=schema, preserve_index=False)
    except (pa.ArrowInvalid, pa.ArrowTypeError) as err:
        raise ReczeroError(f"rankings do not fit the schema {schema}: {err}") from err


def write_rankings(out_dir: str | Path, frame, *, method: str, split: str, data_dir: str | Path | None = None,
                   extra: dict[str, Any] | None = None, n_items: int | None = None,
                   mask_history: bool | None = None) -> dict[str, Any]:
    """Write ``OUT/rankings.parquet`` and ``OUT/metrics.json`` (computed from it); return the metrics.

    ``frame`` has the columns of :data:`COLUMNS` (what :func:`rank_rows` returns). ``n_items`` and
    ``mask_history`` default to ``frame.attrs`` (set by :func:`full_ranking`). With ``data_dir``
    the dataset path and its ranking ceiling (``manifest["ranking_ceiling"][split]``, RecWorld)
    are recorded. ``extra`` keys are added but may not replace a metric.
    """
    n_items = n_items if n_items is not None else frame.attrs.get("n_items")
    mask_history = mask_history if mask_history is not None else frame.attrs.get("mask_history")
    if n_items is None or mask_history is None:
        raise ReczeroError("write_rankings: n_items and mask_history are needed (pass them, or a frame from rank_rows)")
    table = _table(frame, int(n_items))
    result = compute_ranking_metrics(table, method=method, split=split, n_items=int(n_items),
                                     mask_history=bool(mask_history))
    result["n_targets_in_history"] = int(frame.attrs.get("n_targets_in_history", 0))
    if data_dir is not None:
        from reczero.data import schema

        manifest = schema.read_manifest(data_dir)
        result["data"] = str(data_dir)
        result["ranking_ceiling"] = (manifest.get("ranking_ceiling") or {}).get(split)
    return write_result_files(out_dir, RANKINGS, table, result, extra=extra)


@dataclass
class RankingResults:
    """One method's rankings on one split, as written by :func:`write_rankings`."""

    dir: Path
    metrics: dict[str, Any]
    rankings: Any       # pandas DataFrame; ``rank`` is ``Int64`` with <NA> for unknown targets


def read_rankings(out_dir: str | Path) -> RankingResults:
    """Read ``metrics.json`` and ``rankings.parquet`` from a directory written by :func:`write_rankings`."""
    import pyarrow.parquet as pq

    out = Path(out_dir)
    metrics = read_metrics(out, RANKINGS, "the output of a ranking `reczero eval` or `reczero baseline`")
    if metrics.get("task") != "ranking":
        raise DataError(f"{out / METRICS}: not a ranking result (task={metrics.get('task')!r})")
    frame = pq.read_table(out / RANKINGS).to_pandas()
    frame["rank"] = frame["rank"].astype("Int64")
    return RankingResults(out, metrics, frame)
