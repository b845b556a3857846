"""Metrics against hand-computed values and edge cases (docstrings run as doctests), and the
results writer: metrics.json agrees exactly with predictions.parquet."""

import doctest
import json
import math

import numpy as np
import pandas as pd
import pytest

from reczero import metrics as M
from reczero.errors import ReczeroError
from reczero.predictions import fallback_prediction, read_results, write_results


def test_doctests():
    result = doctest.testmod(M)
    assert result.attempted >= 7 and result.failed == 0


def test_mae_rmse_by_hand():
    y, p = [4, 3, 5, 1], [3.5, 3, 2, 2]
    # |errors| = 0.5, 0, 3, 1 -> MAE 4.5/4; squares 0.25, 0, 9, 1 -> RMSE sqrt(10.25/4)
    assert M.mae(y, p) == pytest.approx(1.125)
    assert M.rmse(y, p) == pytest.approx(math.sqrt(10.25 / 4))
    assert M.mae([2.0], [2.0]) == 0.0 and M.rmse([2.0], [2.0]) == 0.0


def test_rmse_at_least_mae():
    rng = np.random.default_rng(0)
    y, p = rng.normal(size=50), rng.normal(size=50)
    assert M.rmse(y, p) >= M.mae(y, p)


def test_pearson_by_hand_and_constant():
    # y = [1,2,3,4], p = [2,1,4,3]: deviations (-1.5,-.5,.5,1.5) and (-.5,-1.5,1.5,.5) -> cov 3/4... r = 3/5
    assert M.pearson([1, 2, 3, 4], [2, 1, 4, 3]) == pytest.approx(0.6)
    assert M.pearson([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    assert math.isnan(M.pearson([1, 2, 3], [2, 2, 2]))


@pytest.mark.parametrize("fn", [M.mae, M.rmse, M.pearson])
def test_empty_and_nan_and_shape_rejected(fn):
    with pytest.raises(ValueError, match="empty"):
        fn([], [])
    with pytest.raises(ValueError, match="NaN"):
        fn([1.0, 2.0], [1.0, float("nan")])
    with pytest.raises(ValueError, match="3 values but y_pred has 2"):
        fn([1, 2, 3], [1, 2])


def test_ranking_metrics_by_hand():
    ranks = [1, 2, 5, 20]
    assert M.hit_at_k(ranks, 1) == 0.25
    assert M.hit_at_k(ranks, 5) == 0.75
    expected = (1 + 1 / math.log2(3) + 1 / math.log2(6)) / 4
    assert M.ndcg_at_k(ranks, 5) == pytest.approx(expected)
    assert M.ndcg_at_k([1, 1], 10) == 1.0
    with pytest.raises(ValueError, match="1-based"):
        M.hit_at_k([0, 1], 5)
    with pytest.raises(ValueError, match="k must be"):
        M.ndcg_at_k([1], 0)
    with pytest.raises(ValueError, match="empty"):
        M.ndcg_at_k([], 5)


def test_target_ranks_pessimistic_ties():
    scores = np.array([[0.3, 0.1, 0.9, 0.3], [0.0, 0.0, 0.0, 0.0]])
    # row 0, target 0 (score .3): item 2 is higher, item 3 ties -> rank 3; row 1 all tie -> last
    assert M.target_ranks(scores, [0, 1]).tolist() == [3, 4]
    assert M.target_ranks(scores, [2, 3]).tolist() == [1, 4]
    with pytest.raises(ValueError, match="one target per row"):
        M.target_ranks(scores, [0])


# ----------------------------------------------------------------------------------------------
# write_results: metrics.json agrees exactly with predictions.parquet
# ----------------------------------------------------------------------------------------------

def _predictions(n=40, seed=0):
    rng = np.random.default_rng(seed)
    rating = rng.integers(1, 6, n).astype(float)
    parsed = rng.random(n) > 0.25
    return pd.DataFrame({
        "sample_id": [f"test-{k}" for k in range(n)], "user_id": [f"u{k % 7}" for k in range(n)],
        "item_id": [f"i{k % 5}" for k in range(n)], "rating": rating,
        "prediction": np.round(rng.uniform(1, 5, n), 3), "parsed": parsed,
        "fallback": np.where(parsed, None, "user_avg"), "completion": ["<rate>3</rate>"] * n,
        "user_n": rng.integers(0, 20, n),
    })


def test_write_results_agrees_exactly_with_the_parquet(tmp_path):
    df = _predictions()
    written = write_results(tmp_path, df, method="m", split="test", extra={"model": "tiny"})
    res = read_results(tmp_path)
    assert res.metrics == json.loads((tmp_path / "metrics.json").read_text()) == written
    p = res.predictions
    assert res.metrics["n"] == len(p) == len(df)
    assert res.metrics["mae"] == M.mae(p["rating"], p["prediction"])
    assert res.metrics["rmse"] == M.rmse(p["rating"], p["prediction"])
    assert res.metrics["parse_failure_rate"] == float((~p["parsed"]).mean())
    assert res.metrics["mae_parsed_only"] == M.mae(p.loc[p.parsed, "rating"], p.loc[p.parsed, "prediction"])
    assert res.metrics["n_distinct_predictions"] == p["prediction"].nunique()
    assert res.metrics["fallback_counts"] == {"user_avg": int((~p["parsed"]).sum())}
    buckets = {b["bucket"]: b for b in res.metrics["mae_by_history"]}
    assert sum(b["n"] for b in buckets.values()) == len(p)
    big = p[p["user_n"] > 10]
    assert buckets[">10"]["mae"] == M.mae(big["rating"], big["prediction"])
    assert res.metrics["model"] == "tiny" and res.metrics["bayes_mae"] is None
    assert not list(tmp_path.glob(".*tmp*"))


def test_constant_predictions_have_null_pearson_and_zero_std(tmp_path):
    df = _predictions().assign(prediction=4.0, parsed=True, fallback=None)
    m = write_results(tmp_path, df, method="median", split="test")
    assert m["pearson"] is None and m["pred_std"] == 0.0 and m["n_distinct_predictions"] == 1
    assert m["mae_parsed_only"] == m["mae"]
    m = write_results(tmp_path, df.assign(parsed=False, fallback="global_mean"), method="x", split="test")
    assert m["mae_parsed_only"] is None and m["parse_failure_rate"] == 1.0


@pytest.mark.parametrize("change, message", [
    (lambda d: d.drop(columns="user_n"), "lack column"),
    (lambda d: d.iloc[:0], "empty"),
    (lambda d: d.assign(prediction=np.r_[np.nan, d["prediction"].to_numpy()[1:]]), "finite 'prediction'"),
    (lambda d: d.assign(sample_id="same"), "more than once"),
    (lambda d: d.assign(parsed=False, fallback=None), "name no fallback"),
])
def test_write_results_refuses_bad_frames(tmp_path, change, message):
    with pytest.raises(ReczeroError, match=message):
        write_results(tmp_path, change(_predictions()), method="m", split="test")
    assert not (tmp_path / "metrics.json").exists()


def test_extra_may_not_overwrite_a_metric(tmp_path):
    with pytest.raises(ReczeroError, match="overwrite"):
        write_results(tmp_path, _predictions(), method="m", split="test", extra={"mae": 0.0})


def test_fallback_prediction_order():
    nan = float("nan")
    assert fallback_prediction({"user_avg": 4.2, "item_avg": 3.0}, 3.5) == (4.2, "user_avg")
    assert fallback_prediction({"user_avg": nan, "item_avg": 3.0}, 3.5) == (3.0, "item_avg")
    assert fallback_prediction(pd.Series({"user_avg": None, "item_avg": nan}), 3.5) == (3.5, "global_mean")


def test_paired_mae_difference_sees_noise_and_signal():
    rng = np.random.default_rng(0)
    y = rng.integers(1, 6, 1000).astype(float)
    good = np.clip(y + rng.normal(0, 0.5, y.size).round(), 1, 5)
    bad = np.full(y.size, 4.0)
    d, lo, hi = M.paired_mae_difference(y, good, bad)
    assert d == pytest.approx(M.mae(y, good) - M.mae(y, bad))
    assert lo <= d <= hi < 0                       # clearly better: the whole interval below zero
    d, lo, hi = M.paired_mae_difference(y, good, good.copy())
    assert (d, lo, hi) == (0.0, 0.0, 0.0)          # identical predictions: no difference at all
    twin = np.where(rng.random(y.size) < 0.5, good, np.clip(good + rng.choice([-1, 1], y.size), 1, 5))
    d, lo, hi = M.paired_mae_difference(y, twin, good)
    assert lo < hi and lo < d < hi


def test_paired_mae_difference_checks_lengths():
    with pytest.raises(ValueError):
        M.paired_mae_difference([1, 2], [1, 2], [1])
