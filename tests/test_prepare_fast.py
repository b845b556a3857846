"""The fast paths of `data prepare` give exactly what the reference paths give.

* The JSON-lines reader recovers around lines the vectorised parser names as bad: the rows, rejects
  and line numbers equal the line loop's, and only the bad lines go through the line loop.
* Split files carry review snippets as per-batch dictionaries written directly: with repeated
  and missing review texts and many row groups, every history entry still holds its own review.
* ``_earlier`` (counts, means and windows strictly before each row's second) equals a brute force.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from reczero.config import SampleOptions
from reczero.data import histories
from reczero.data import schema as S
from reczero.data.samples import write_prepared
from reczero.data.sources import RejectLog, amazon2018
from reczero.data.sources import _jsonl as jsonl


def review_line(k: int) -> bytes:
    return json.dumps({"reviewerID": f"U{k % 37}", "asin": f"B{k % 53:03d}", "overall": float(1 + k % 5),
                       "unixReviewTime": 1_400_000_000 + 3600 * k, "reviewText": f"text {k}",
                       "summary": f"sum {k}", "vote": "1,234"}).encode()


BAD = {  # line index -> (bytes, reason); parse errors the vectorised parser reports with a row
    40: (b'{"reviewerID": "U1", "asin": "B1", "overall": 5', "malformed_json"),
    41: (b'{"reviewerID": "U1", "asin": "B1", "overall": "five", "unixReviewTime": 1400000000}', "bad_rating"),
    97: (b"[1, 2, 3]", "not_a_record"),
    230: (b'{"reviewerID": 77, "asin": "B7", "overall": 4, "unixReviewTime": 1400000000, "reviewText": "ok"}', None),
    231: (b"\xff\xfe not json", "malformed_json"),
    400: (b'{"reviewerID": "U9", "asin": "B9", "overall": 3, "unixReviewTime": "soon"}', "bad_timestamp"),
}


def read_all(path, vectorised):
    log = RejectLog(path.with_suffix(f".{vectorised}.jsonl"))
    table = pa.Table.from_batches(list(amazon2018.read_interactions(path, log, vectorised=vectorised,
                                                                     line_numbers=True)))
    log.close()
    rejected = {json.loads(x)["line"]: json.loads(x)["reason"] for x in log.path.read_text().splitlines()}
    return table, rejected, dict(log.read)


def test_reader_recovers_around_bad_lines(tmp_path, monkeypatch):
    monkeypatch.setattr(jsonl, "PIECE_BYTES", 8_000)        # ~60 lines a piece: several pieces hold bad lines
    lines = [BAD[k][0] if k in BAD else review_line(k) for k in range(500)]
    path = tmp_path / "reviews.json"
    path.write_bytes(b"\n".join(lines) + b"\n")
    parsed = []
    real = jsonl.parse_line
    monkeypatch.setattr(jsonl, "parse_line", lambda line, loose=None: parsed.append(line) or real(line, loose))
    fast = read_all(path, vectorised=True)
    line_loop = len(parsed)
    reference = read_all(path, vectorised=False)
    assert fast[0].equals(reference[0])
    assert fast[1:] == reference[1:]
    assert fast[1] == {k + 1: reason for k, (_, reason) in BAD.items() if reason}
    assert fast[0].num_rows == 500 - 5 and fast[2] == {"interactions": 500}
    assert line_loop <= 3 * len(BAD)          # only the named lines (and a few neighbours) took the line loop


def test_reader_bounds_retries_on_a_file_of_bad_lines(tmp_path, monkeypatch):
    monkeypatch.setattr(jsonl, "PIECE_BYTES", 4_000)
    lines = [review_line(k) if k % 2 else b'{"reviewerID": "U1", "overall": 5' for k in range(400)]
    path = tmp_path / "reviews.json"
    path.write_bytes(b"\n".join(lines) + b"\n")
    calls = []
    real = jsonl._vectorised
    monkeypatch.setattr(jsonl, "_vectorised", lambda *a: calls.append(1) or real(*a))
    fast, reference = read_all(path, vectorised=True), read_all(path, vectorised=False)
    assert fast[0].equals(reference[0]) and fast[1:] == reference[1:]
    pieces = -(-path.stat().st_size // 4_000)
    assert len(calls) <= (2 * jsonl.MAX_RETRIES + 1) * pieces


def test_split_snippets_survive_dictionary_writing(tmp_path, monkeypatch):
    monkeypatch.setattr(histories, "SAMPLE_BATCH_ROWS", 7)  # many row groups, each with its own dictionary
    rng = np.random.default_rng(3)
    n = 300
    texts = ["great", "bad", None, "great", "ok " * 90, "héllo wörld " * 30]
    reviews = [texts[k] if k < 6 else texts[rng.integers(6)] for k in range(n)]
    summaries = [None if k % 3 else f"summary {k}" for k in range(n)]
    pairs = rng.permutation(40 * 30)[:n]
    table = pa.table({"user_id": [f"u{p // 30}" for p in pairs], "item_id": [f"i{p % 30}" for p in pairs],
                      "rating": rng.integers(1, 6, n).astype(float), "timestamp": rng.integers(0, 60, n),
                      "review": reviews, "summary": summaries})
    out = tmp_path / "out"
    write_prepared(out, table, None, SampleOptions(history=5, item_history=4, snippet_chars=40),
                   scale=S.RatingScale(1.0, 5.0), source="test", rejects=None, inputs=[])
    by_pair = {(u, i): (r if r is not None else s) for u, i, r, s in zip(table["user_id"].to_pylist(),
               table["item_id"].to_pylist(), reviews, summaries, strict=True)}
    checked = 0
    for split in S.SPLITS:
        got = pq.read_table(S.split_path(out, split))
        assert got.schema.equals(S.SAMPLE_SCHEMA)
        assert pq.ParquetFile(S.split_path(out, split)).metadata.num_row_groups > 1 or got.num_rows <= 7
        for row in got.to_pylist():
            for h in row["user_history"]:
                text = by_pair[(row["user_id"], h["item_id"])]
                assert h["review"] == (text[:40] if text is not None else None)
                checked += 1
            for h in row["item_history"]:
                text = by_pair[(h["user_id"], row["item_id"])]
                assert h["review"] == (text[:40] if text is not None else None)
                checked += 1
    assert checked > 500


@pytest.mark.parametrize("seed", [0, 1])
def test_earlier_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    n = 400
    group, ts = rng.integers(0, 12, n), rng.integers(0, 30, n)          # many same-second ties
    rid, rating = rng.permutation(n).astype(np.int64), rng.integers(1, 6, n).astype(float)
    got = histories._earlier(group, ts, rid, rating, window=3)
    df = pd.DataFrame({"g": group, "t": ts, "rid": rid, "r": rating})
    order = df.sort_values(["g", "t", "rid"]).index.to_numpy()
    position = np.empty(n, np.int64)
    position[order] = np.arange(n)
    assert (got.at == rid[order]).all()
    avg = got.avg.to_numpy(zero_copy_only=False)
    for k in range(n):
        before = df[(df.g == group[k]) & (df.t < ts[k])]
        assert got.n[k] == len(before)
        assert (np.isnan(avg[k]) if before.empty else avg[k] == pytest.approx(before.r.mean()))
        window = sorted(position[before.index.to_numpy()])[-3:]
        assert list(range(got.start[k], got.start[k] + got.length[k])) == window
