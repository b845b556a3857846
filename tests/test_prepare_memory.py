"""`data prepare` holds a dump in memory up to a budget and streams it from a spill beyond: both
give the same dataset. Also the chunk-aware take behind `interactions.parquet`."""

import json

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from fixtures_raw import write_amazon2018

from reczero import cli
from reczero.config import SampleOptions
from reczero.data import prepare as prepare_module
from reczero.data import samples as samples_module
from reczero.data import schema as S
from reczero.data.samples import _take, write_prepared

FILES = (S.ITEMS, S.INTERACTIONS, *(f"{s}.parquet" for s in S.SPLITS))


def _random_dump(directory, n=3000, seed=0):
    """An Amazon-2018 review file with many same-second ties, duplicate pairs and a few bad lines."""
    rng = np.random.default_rng(seed)
    lines = []
    for k in range(n):
        rec = {"overall": float(rng.integers(1, 6)), "reviewerID": f"U{rng.integers(150)}",
               "asin": f"B{rng.integers(60):03d}", "unixReviewTime": 1_400_000_000 + 86_400 * int(rng.integers(40)),
               "summary": f"s{k}"}
        if k % 7:
            rec["reviewText"] = f"review {k} " + "word " * int(rng.integers(0, 60))
        line = orjson.dumps(rec)
        lines.append(line[:20] if k % 500 == 3 else line)
    path = directory / "Books.json"
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def _prepare(reviews, meta, out):
    args = ["--input", reviews, "--out", out, "--history", 4, "--item-history", 3]
    assert cli.main(["-q", "data", "prepare", "--source", "amazon2018", *map(str, args),
                     *(["--meta", str(meta)] if meta else [])]) == 0


def _same_dataset(a, b):
    for name in FILES:
        ta, tb = pq.read_table(a / name), pq.read_table(b / name)
        if name == S.INTERACTIONS:       # DuckDB declares a column without nulls as required
            ta, tb = ta.cast(S.INTERACTIONS_SCHEMA), tb.cast(S.INTERACTIONS_SCHEMA)
        assert ta.equals(tb), name
    # rejects name the input file, the same in both runs
    assert (a / S.REJECTS).read_text() == (b / S.REJECTS).read_text()
    ma, mb = (json.loads((d / S.MANIFEST).read_text()) for d in (a, b))
    for key in ("counts", "items_counts", "splits", "n_users", "n_items", "truncated"):
        assert ma[key] == mb[key], key


@pytest.mark.parametrize("spill, stream", [(True, False), (True, True)])
@pytest.mark.parametrize("dump", ["fixture", "random"])
def test_spilled_input_gives_the_same_dataset(tmp_path, monkeypatch, dump, spill, stream):
    """In memory (the default at this size) vs spilled to Parquet and read back, vs spilled and
    streamed (DuckDB sorts interactions.parquet out of core): identical files."""
    if dump == "fixture":
        raw = write_amazon2018(tmp_path)
        reviews, meta = raw.reviews, raw.meta
    else:
        reviews, meta = _random_dump(tmp_path), None
    _prepare(reviews, meta, tmp_path / "memory")
    monkeypatch.setattr(prepare_module, "IN_MEMORY_BYTES", 0 if spill else prepare_module.IN_MEMORY_BYTES)
    monkeypatch.setattr(samples_module, "IN_MEMORY_BYTES", 0 if stream else samples_module.IN_MEMORY_BYTES)
    _prepare(reviews, meta, tmp_path / "spilled")
    _same_dataset(tmp_path / "memory", tmp_path / "spilled")
    inter = pq.read_table(tmp_path / "spilled" / S.INTERACTIONS)
    assert inter.num_rows > 0 and (inter.schema.equals(S.INTERACTIONS_SCHEMA) or stream)
    assert inter.column("timestamp").to_pylist() == sorted(inter.column("timestamp").to_pylist())


def test_a_list_of_batches_is_taken_over(tmp_path):
    rows = [("u1", "a", 5.0, 10, "r1"), ("u2", "a", 3.0, 20, "r2"), ("u1", "b", 4.0, 30, "r3")]
    table = pa.table({"user_id": [r[0] for r in rows], "item_id": [r[1] for r in rows],
                      "rating": [r[2] for r in rows], "timestamp": [r[3] for r in rows],
                      "review": [r[4] for r in rows], "summary": [None] * 3}, schema=S.INTERACTIONS_SCHEMA)
    batches = table.to_batches(max_chunksize=2)
    manifest = write_prepared(tmp_path / "out", batches, None, SampleOptions(), scale=S.RatingScale(1.0, 5.0),
                              source="test", rejects=None, inputs=[])
    assert batches == []                 # emptied: the caller holds no reference to the rows any more
    assert manifest["counts"]["kept"] == 3
    assert pq.read_table(tmp_path / "out" / S.INTERACTIONS).column("review").to_pylist() == ["r1", "r2", "r3"]


@pytest.mark.parametrize("chunks", [1, 2, 7])
def test_take_across_chunks_equals_take(chunks):
    rng = np.random.default_rng(chunks)
    n = 500
    table = pa.table({"k": np.arange(n), "s": [f"v{i}" * int(i % 5) or None for i in range(n)]})
    cuts = np.sort(rng.choice(np.arange(1, n), chunks - 1, replace=False))
    chunked = pa.Table.from_batches([b for lo, hi in zip([0, *cuts], [*cuts, n], strict=True)
                                     for b in table.slice(lo, hi - lo).to_batches()])
    assert chunked.column("k").num_chunks == chunks
    rows = rng.permutation(n)[:300]
    got = _take(chunked, rows)
    assert got.column("k").num_chunks == 1
    assert got.equals(table.take(pa.array(rows)))
