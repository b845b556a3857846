"""Full-ranking evaluation: hand-computed ranks, the protocol's rules, the writer, and the blocked
fast path against a brute-force reference."""

import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from reczero import metrics as M
from reczero.config import SampleOptions
from reczero.data import schema
from reczero.errors import ReczeroError
from reczero.rankings import (
    RANKING_KS,
    ItemCatalog,
    full_ranking,
    load_ranking_rows,
    per_sample_ndcg,
    rank_rows,
    read_rankings,
    write_rankings,
)

CATALOG = ItemCatalog(["a", "b", "c", "d", "e"])


def fixed(matrix):
    """A score_block over a fixed (n, n_items) matrix."""
    matrix = np.asarray(matrix, dtype=np.float32)
    return lambda rows: matrix[rows]


def frame_of(ranked, targets, user_n=None):
    n = len(targets)
    frame = pd.DataFrame({"sample_id": [f"s{i}" for i in range(n)], "user_id": [f"u{i}" for i in range(n)],
                          "item_id": targets, "user_n": user_n if user_n is not None else [3] * n})
    for col in ("rank", "top_items", "top_scores"):
        frame[col] = ranked[col]
    frame.attrs.update(ranked.attrs)
    return frame


def test_hand_computed_ranks_with_masking_ties_and_unknown_targets():
    scores = [[0.9, 0.5, 0.5, 0.1, 0.7],     # target c ties with b: pessimistic rank 4 (a, e, b, c)
              [0.9, 0.5, 0.5, 0.1, 0.7],     # history {a, e} masked: target c ranks 2 (b, c)
              [0.1, 0.2, 0.3, 0.4, 0.5],     # target "zz" unknown: a miss, rank null
              [1.0, 1.0, 1.0, 1.0, 1.0]]     # constant: last among the 4 unmasked items
    histories = [[], ["a", "e"], ["b"], ["d", "unknown-item"]]
    ranked = full_ranking(fixed(scores), histories, ["c", "c", "zz", "b"], CATALOG, top_k=3)
    assert ranked["rank"].tolist() == [4, 2, pd.NA, 4]
    assert ranked["top_items"].tolist() == [["a", "e", "b"], ["b", "c", "d"], ["e", "d", "c"], ["a", "b", "c"]]
    assert ranked["top_scores"][1].dtype == np.float32 and ranked["top_scores"][1].tolist() == [0.5, 0.5, 0.10000000149011612]
    assert ranked.attrs == {"n_items": 5, "mask_history": True, "n_targets_in_history": 0}
    unmasked = full_ranking(fixed(scores), histories, ["c", "c", "zz", "b"], CATALOG, top_k=3, mask_history=False)
    assert unmasked["rank"].tolist() == [4, 4, pd.NA, 5]


def test_a_constant_scorer_earns_nothing_and_ranks_every_target_last(tmp_path):
    rng = np.random.default_rng(0)
    ids = [f"i{j}" for j in range(50)]
    catalog = ItemCatalog(ids)
    histories = [list(rng.choice(ids[1:], size=rng.integers(0, 6), replace=False)) for _ in range(40)]
    targets = ["i0"] * 40        # the first item in catalog order: a tie-breaking by index would favour it
    ranked = full_ranking(lambda rows: np.zeros((len(rows), 50), np.float32), histories, targets, catalog)
    assert ranked["rank"].tolist() == [50 - len(h) for h in histories]
    metrics = write_rankings(tmp_path, frame_of(ranked, targets), method="constant", split="test")
    assert all(metrics[f"hit@{k}"] == 0.0 and metrics[f"ndcg@{k}"] == 0.0 for k in RANKING_KS)


def test_unknown_targets_are_misses_never_dropped(tmp_path):
    scores = np.tile(np.array([5, 4, 3, 2, 1], np.float32), (4, 1))
    targets = ["a", "b", "new-1", "new-2"]
    ranked = full_ranking(fixed(scores), [[]] * 4, targets, CATALOG)
    metrics = write_rankings(tmp_path, frame_of(ranked, targets), method="m", split="test")
    assert metrics["n"] == 4 and metrics["n_unknown_targets"] == 2
    assert metrics["hit@5"] == 0.5 and metrics["mrr"] == (1 + 1 / 2) / 4
    assert metrics["ndcg@5"] == (1 + 1 / np.log2(3)) / 4
    back = read_rankings(tmp_path)
    assert back.rankings["rank"].isna().tolist() == [False, False, True, True]
    assert back.rankings["item_id"].tolist() == targets


def test_a_target_in_its_own_masked_history_is_ranked_last():
    ranked = full_ranking(fixed([[5, 4, 3, 2, 1]]), [["a"]], ["a"], CATALOG)
    assert ranked["rank"].tolist() == [5] and ranked.attrs["n_targets_in_history"] == 1
    assert full_ranking(fixed([[5, 4, 3, 2, 1]]), [["a"]], ["a"], CATALOG, mask_history=False)["rank"].tolist() == [1]


def brute_force(scores, histories, targets, ids, mask, k):
    """One row at a time, in plain Python: the reference for the blocked path."""
    ranks, tops = [], []
    for row, history, target in zip(scores, histories, targets, strict=True):
        banned = set(history) if mask else set()
        pool = [(float(s), j) for j, s in enumerate(row) if ids[j] not in banned]
        if target in ids and target not in banned:
            t = float(row[ids.index(target)])
            ranks.append(sum(1 for s, _ in pool if s >= t))
        elif target in ids:
            ranks.append(len(ids))
        else:
            ranks.append(None)
        tops.append([ids[j] for _, j in sorted(pool, key=lambda p: (-p[0], p[1]))[:k]])
    return ranks, tops


@pytest.mark.parametrize("mask", [True, False])
@pytest.mark.parametrize("block_size", [1, 7, None])
def test_blocked_fast_path_equals_brute_force_on_random_scores(mask, block_size):
    rng = np.random.default_rng(block_size or 0)
    ids = [f"item{j:03d}" for j in range(60)]
    catalog = ItemCatalog(ids)
    n = 45
    scores = rng.integers(0, 8, size=(n, 60)).astype(np.float32)      # few values: many ties
    histories = [list(rng.choice(ids + ["ghost"], size=rng.integers(0, 10), replace=False)) for _ in range(n)]
    targets = [ids[j] if j < 60 else "new" for j in rng.integers(0, 64, size=n)]
    calls = []

    def score_block(rows):
        calls.append(len(rows))
        return scores[rows]

    ranked = full_ranking(score_block, histories, targets, catalog, mask_history=mask, top_k=10, block_size=block_size)
    ranks, tops = brute_force(scores, histories, targets, ids, mask, 10)
    assert [None if pd.isna(r) else int(r) for r in ranked["rank"]] == ranks
    assert ranked["top_items"].tolist() == tops
    assert max(calls) <= (block_size or n) and sum(calls) == n
    for r, top, target in zip(ranked["rank"], ranked["top_items"], targets, strict=True):
        if not pd.isna(r) and r <= 10:       # rank <= K implies the target is in the top-K list
            assert target in top[:r]


def test_metrics_agree_exactly_with_the_file_written(tmp_path):
    rng = np.random.default_rng(3)
    ids = [f"i{j}" for j in range(300)]
    n = 500
    scores = rng.normal(size=(n, 300)).astype(np.float32)
    targets = [ids[j] if j < 300 else "unseen" for j in rng.integers(0, 320, size=n)]
    histories = [list(rng.choice(ids, size=5, replace=False)) for _ in range(n)]
    user_n = rng.integers(0, 30, size=n)
    ranked = full_ranking(fixed(scores), histories, targets, ItemCatalog(ids), block_size=64)
    written = write_rankings(tmp_path, frame_of(ranked, targets, user_n), method="random", split="valid",
                             extra={"seed": 3})
    back = read_rankings(tmp_path)
    assert back.metrics == written and json.loads((tmp_path / "metrics.json").read_text()) == written
    table = pq.read_table(tmp_path / "rankings.parquet")
    assert table.schema.field("rank").type == pa.int64() and table.schema.field("top_scores").type == pa.list_(pa.float32())
    r = back.rankings["rank"].to_numpy(dtype=np.float64, na_value=np.inf)
    for k in RANKING_KS:
        assert written[f"hit@{k}"] == float(np.mean(r <= k))
        assert written[f"ndcg@{k}"] == float(np.mean(np.where(r <= k, 1.0 / np.log2(r + 1.0), 0.0)))
        assert written[f"ndcg@{k}"] == float(np.mean(per_sample_ndcg(back.rankings["rank"], k)))
    assert written["mrr"] == float(np.mean(1.0 / r))
    assert written["n"] == n and written["n_items"] == 300 and written["mask_history"] is True
    assert written["n_unknown_targets"] == targets.count("unseen") and written["seed"] == 3
    buckets = {b["bucket"]: b for b in written["ndcg@10_by_history"]}
    cold = user_n == 0
    assert buckets["0"]["n"] == int(cold.sum())
    assert buckets["0"]["ndcg@10"] == (M.ndcg_at_k(r[cold], 10) if cold.any() else None)
    mean, lo, hi = M.bootstrap_mean(per_sample_ndcg(back.rankings["rank"], 10), n_boot=200)
    assert mean == written["ndcg@10"] and lo <= mean <= hi


def test_the_writer_refuses_bad_frames(tmp_path):
    ranked = full_ranking(fixed([[3, 2, 1, 0, 0]] * 2), [[], []], ["a", "b"], CATALOG)
    good = frame_of(ranked, ["a", "b"])
    with pytest.raises(ReczeroError, match="lack column"):
        write_rankings(tmp_path, good.drop(columns=["top_items"]), method="m", split="test")
    with pytest.raises(ReczeroError, match="occurs more than once"):
        write_rankings(tmp_path, good.assign(sample_id="same"), method="m", split="test")
    with pytest.raises(ReczeroError, match="rank 9"):
        write_rankings(tmp_path, good.assign(rank=[1, 9]), method="m", split="test")
    with pytest.raises(ReczeroError, match="rank 0"):
        write_rankings(tmp_path, good.assign(rank=[0, 1]), method="m", split="test")
    with pytest.raises(ReczeroError, match="overwrite"):
        write_rankings(tmp_path, good, method="m", split="test", extra={"mrr": 1.0})
    bare = pd.DataFrame(good)
    bare.attrs.clear()
    with pytest.raises(ReczeroError, match="n_items"):
        write_rankings(tmp_path, bare, method="m", split="test")
    assert not (tmp_path / "metrics.json").exists()
    assert write_rankings(tmp_path, bare, method="m", split="test", n_items=5, mask_history=False)["mask_history"] is False


@pytest.fixture(scope="module")
def implicit_data(tmp_path_factory):
    """A tiny prepared dataset whose split files then lose their rating columns (implicit data)."""
    from reczero.data.samples import write_prepared

    rng = np.random.default_rng(0)
    users = np.repeat(np.arange(12), 8)
    items = np.concatenate([rng.choice(30, size=8, replace=False) for _ in range(12)])
    n = len(users)
    table = pa.table({"user_id": [f"u{u}" for u in users], "item_id": [f"i{i}" for i in items],
                      "rating": np.full(n, 4.0), "timestamp": np.arange(n, dtype=np.int64) * 60,
                      "review": [None] * n, "summary": [None] * n}, schema=schema.INTERACTIONS_SCHEMA)
    out = tmp_path_factory.mktemp("implicit")
    write_prepared(out, table, None, SampleOptions(split="leave-last", history=4), scale=schema.RatingScale(1, 5),
                   source="table", rejects=None, inputs=[])
    for split in schema.SPLITS:
        path = schema.split_path(out, split)
        t = pq.read_table(path).drop_columns(["rating", "user_avg"])
        pq.write_table(t, path)
    return out


def test_ranking_rows_and_catalog_from_a_dataset_without_ratings(implicit_data, tmp_path):
    train = load_ranking_rows(implicit_data, "train", timestamps=True)
    assert {"sample_id", "user_id", "item_id", "user_n", "history", "timestamp", "history_timestamps"} <= set(train.columns)
    assert all(len(h) <= 4 for h in train["history"])
    assert all(list(ts) == sorted(ts) and (not ts or ts[-1] < t)
               for ts, t in zip(train["history_timestamps"], train["timestamp"], strict=True))
    catalog = ItemCatalog.from_rows(train)
    expected = set(train["item_id"]) | {i for h in train["history"] for i in h}
    assert set(catalog.ids) == expected
    test = load_ranking_rows(implicit_data, "test")
    frame = rank_rows(lambda rows: np.zeros((len(rows), len(catalog)), np.float32), test, catalog, top_k=5)
    metrics = write_rankings(tmp_path, frame, method="zero", split="test", data_dir=implicit_data)
    assert metrics["n"] == 12 and metrics["hit@20"] == 0.0 and metrics["data"] == str(implicit_data)
    catalog.save(tmp_path / "items.json")
    assert list(ItemCatalog.load(tmp_path / "items.json").ids) == list(catalog.ids)


def test_metrics_of_misses_and_mrr():
    assert M.mrr([1, 2, np.inf, 4]) == (1 + 0.5 + 0.25) / 4
    assert M.ndcg_at_k([np.inf], 10) == 0.0 and M.hit_at_k([np.inf, 1], 1) == 0.5
    with pytest.raises(ValueError, match="NaN"):
        M.hit_at_k([np.nan], 10)
    assert M.miss_ranks(pd.array([2, None], dtype="Int64")).tolist() == [2.0, np.inf]
