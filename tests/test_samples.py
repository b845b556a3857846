"""write_prepared: rejects, dedupe, k-core, splits, windows, caps and — above all — no leakage."""

import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from reczero.config import SampleOptions
from reczero.data import schema as S
from reczero.data.samples import write_prepared

SCALE = S.RatingScale(1.0, 5.0)


def table(rows):
    """rows: (user, item, rating, timestamp[, review])"""
    cols = list(zip(*[(*r, *([f"review {r[0]} {r[1]}"] if len(r) == 4 else [])) for r in rows], strict=True))
    return pa.table({"user_id": cols[0], "item_id": cols[1], "rating": [float(x) for x in cols[2]],
                     "timestamp": cols[3], "review": cols[4], "summary": [None] * len(rows)})


def prepare(tmp_path, rows, items=None, name="out", **opts):
    out = tmp_path / name
    manifest = write_prepared(out, table(rows) if isinstance(rows, list) else rows, items,
                              SampleOptions(**opts), scale=SCALE, source="test", rejects=None, inputs=[])
    return out, manifest


def samples(out):
    return pd.concat([pq.read_table(S.split_path(out, s)).to_pandas().assign(split=s) for s in S.SPLITS],
                     ignore_index=True)


def rejects(out):
    return [json.loads(line) for line in (out / S.REJECTS).read_text().splitlines()]


def random_rows(n=600, users=25, items=30, span=40, seed=0):
    rng = np.random.default_rng(seed)
    pairs, rows = set(), []
    while len(rows) < n:
        u, i = f"u{rng.integers(users)}", f"i{rng.integers(items)}"
        if (u, i) not in pairs:
            pairs.add((u, i))
            rows.append((u, i, int(rng.integers(1, 6)), int(rng.integers(0, span))))   # many same-second ties
    return rows


def test_no_leakage_and_exact_histories(tmp_path):
    rows = random_rows()
    out, manifest = prepare(tmp_path, rows, history=4, item_history=3)
    inter = pd.DataFrame(rows, columns=["user_id", "item_id", "rating", "timestamp"]).reset_index(names="order")
    got = samples(out)
    assert len(got) == len(rows) == manifest["counts"]["kept"]
    for s in got.itertuples():
        earlier_u = inter[(inter.user_id == s.user_id) & (inter.timestamp < s.timestamp)].sort_values(["timestamp", "order"])
        earlier_i = inter[(inter.item_id == s.item_id) & (inter.timestamp < s.timestamp)].sort_values(["timestamp", "order"])
        assert all(h["timestamp"] < s.timestamp for h in s.user_history)
        assert all(h["timestamp"] < s.timestamp for h in s.item_history)
        assert s.user_n == len(earlier_u) and s.item_n == len(earlier_i)
        assert [h["item_id"] for h in s.user_history] == list(earlier_u.item_id[-4:])
        assert [h["user_id"] for h in s.item_history] == list(earlier_i.user_id[-3:])
        if len(earlier_u):
            assert s.user_avg == pytest.approx(earlier_u.rating.mean())
        else:
            assert pd.isna(s.user_avg)
        if len(earlier_i):
            assert s.item_avg == pytest.approx(earlier_i.rating.mean())
        else:
            assert pd.isna(s.item_avg)


def test_same_second_ties_are_excluded(tmp_path):
    out, _ = prepare(tmp_path, [("u", "a", 5, 10), ("u", "b", 1, 10), ("u", "c", 3, 11), ("v", "a", 2, 10)],
                     split_ratios="0.0,0.0,1.0")
    got = samples(out).set_index("item_id")
    tied = got[got.user_id == "u"]
    assert list(tied.loc["a"].user_history) == [] and list(tied.loc["b"].user_history) == []
    assert tied.loc["b"].user_n == 0 and pd.isna(tied.loc["b"].user_avg)
    assert [h["item_id"] for h in tied.loc["c"].user_history] == ["a", "b"] and tied.loc["c"].user_avg == 3.0
    v = got[got.user_id == "v"].iloc[0]
    assert v.item_n == 0 and list(v.item_history) == []      # u rated a in the same second


def test_windows_and_snippets_are_bounded(tmp_path):
    rows = [("u", f"i{k}", 4, k, "x" * 50) for k in range(8)] + [(f"v{k}", "i7", 2, 100 + k, "y" * 50) for k in range(6)]
    cols = list(zip(*rows, strict=True))
    t = pa.table({"user_id": cols[0], "item_id": cols[1], "rating": [float(x) for x in cols[2]],
                  "timestamp": cols[3], "review": cols[4], "summary": [None] * len(rows)})
    out, _ = prepare(tmp_path, t, history=3, item_history=2, snippet_chars=7)
    got = samples(out)
    assert got.user_history.map(len).max() == 3 and got.item_history.map(len).max() == 2
    assert all(len(h["review"]) <= 7 for hs in got.user_history for h in hs)
    last = got[(got.user_id == "v5")].iloc[0]
    assert [h["user_id"] for h in last.item_history] == ["v3", "v4"] and last.item_n == 6


def test_dedupe_keeps_earliest_and_counts_add_up(tmp_path):
    rows = [("u", "a", 2, 50), ("u", "a", 5, 10), ("u", "b", 9, 20), ("v", "a", 3, 30), ("v", "zz", 3, 31)]
    items = pa.table({"item_id": ["a", "b", "a"], "title": ["A", "B", "A again"], "attributes": [["x"], [], []],
                      "description": [None, "d", None]})
    out, manifest = prepare(tmp_path, rows, items=items)
    kept = pq.read_table(out / S.INTERACTIONS).to_pylist()
    assert [(r["user_id"], r["item_id"], r["timestamp"]) for r in kept] == [("u", "a", 10), ("v", "a", 30)]
    counts = manifest["counts"]
    assert counts == {"read": 5, "kept": 2, "rejected": {"duplicate": 1, "bad_rating": 1, "unknown_item": 1}}
    assert manifest["items_counts"] == {"read": 3, "kept": 2, "rejected": {"duplicate": 1}}
    reasons = sorted(r["reason"] for r in rejects(out))
    assert reasons == ["bad_rating", "duplicate", "duplicate", "unknown_item"]
    assert pq.read_table(out / S.ITEMS).column("title").to_pylist() == ["A", "B"]
    assert json.loads((out / S.MANIFEST).read_text())["counts"] == counts
    assert (out / "config.yaml").is_file()


def test_k_core_iterates_to_fixed_point(tmp_path):
    # u3 has one interaction -> removed; then item c has one left -> removed; then u2 has one left -> removed
    rows = [("u1", "a", 4, 1), ("u1", "b", 4, 2), ("u2", "a", 4, 3), ("u2", "c", 4, 4), ("u3", "c", 4, 5),
            ("u4", "a", 4, 6), ("u4", "b", 4, 7)]
    out, manifest = prepare(tmp_path, rows, min_user=2, min_item=2, split_ratios="1.0,0.0,0.0")
    kept = {(r["user_id"], r["item_id"]) for r in pq.read_table(out / S.INTERACTIONS).to_pylist()}
    assert kept == {("u1", "a"), ("u1", "b"), ("u4", "a"), ("u4", "b")}
    assert manifest["counts"]["rejected"] == {"filtered": 3}


def test_temporal_split_is_one_time_cut(tmp_path):
    out, manifest = prepare(tmp_path, random_rows(n=400), split_ratios="0.7,0.2,0.1")
    got = samples(out)
    assert manifest["splits"] == {"train": 280, "valid": 80, "test": 40}
    by = got.groupby("split").timestamp
    assert by.max()["train"] <= by.min()["valid"] and by.max()["valid"] <= by.min()["test"]
    assert got.sample_id.is_unique and all(sid.startswith(split + "-") for sid, split in zip(got.sample_id, got.split, strict=True))


def test_leave_last_split(tmp_path):
    rows = [("u", "a", 4, 1), ("u", "b", 4, 2), ("u", "c", 4, 3), ("v", "a", 2, 5), ("v", "b", 3, 4)]
    out, manifest = prepare(tmp_path, rows, split="leave-last")
    got = samples(out).set_index(["user_id", "item_id"]).split
    assert got[("u", "c")] == "test" and got[("u", "b")] == "valid" and got[("u", "a")] == "train"
    assert got[("v", "a")] == "test" and got[("v", "b")] == "valid"


def test_min_history_and_max_samples_are_deterministic(tmp_path):
    rows = random_rows(n=500, seed=3)
    opts = dict(min_history=2, max_samples="train=50,test=10")
    out1, m1 = prepare(tmp_path, rows, name="a", seed=7, **opts)
    out2, _ = prepare(tmp_path, rows, name="b", seed=7, **opts)
    out3, _ = prepare(tmp_path, rows, name="c", seed=8, **opts)
    ids = [list(samples(o).sample_id) for o in (out1, out2, out3)]
    assert ids[0] == ids[1] and ids[0] != ids[2]
    assert m1["splits"]["train"] == 50 and m1["splits"]["test"] == 10
    assert (samples(out1).user_n >= 2).all()
    assert m1["targets_dropped"]["min_history"] > 0 and m1["targets_dropped"]["max_samples"] > 0
    assert pq.read_table(out1 / S.INTERACTIONS).num_rows == 500      # caps choose targets, not interactions


def test_parquet_input_and_schema(tmp_path):
    path = tmp_path / "in.parquet"
    pq.write_table(table(random_rows(n=50)), path)
    out, manifest = prepare(tmp_path, path)
    assert manifest["counts"]["kept"] == 50 and manifest["items_synthesised"] == manifest["n_items"]
    for split in S.SPLITS:
        assert pq.read_schema(S.split_path(out, split)).equals(S.SAMPLE_SCHEMA)
    assert pq.read_schema(out / S.ITEMS).equals(S.ITEMS_SCHEMA)
    assert pq.read_table(out / S.INTERACTIONS).cast(S.INTERACTIONS_SCHEMA).num_rows == 50
