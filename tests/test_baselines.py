"""Baselines: planted models are recovered, fallbacks are named, and `reczero baseline` writes a run."""

import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from reczero import cli
from reczero.baselines import BASELINES, make_baseline
from reczero.config import ConfigError, SampleOptions
from reczero.data import schema
from reczero.predictions import read_results

SCALE = schema.RatingScale(1.0, 5.0)


def planted(n_users=150, n_items=80, n=7000, rank=0, noise=0.3, seed=0):
    """Ratings = 3.4 + b_u + b_i (+ p_u . q_i of the given rank) + noise, not rounded or clipped."""
    rng = np.random.default_rng(seed)
    b_u, b_i = rng.normal(0, 0.4, n_users), rng.normal(0, 0.4, n_items)
    p, q = rng.normal(0, 0.6, (n_users, max(rank, 1))), rng.normal(0, 0.6, (n_items, max(rank, 1)))
    pairs = rng.choice(n_users * n_items, size=n, replace=False)
    u, i = pairs // n_items, pairs % n_items
    truth = 3.4 + b_u[u] + b_i[i] + (np.sum(p[u] * q[i], axis=1) if rank else 0.0)
    df = pd.DataFrame({"user_id": [f"u{x}" for x in u], "item_id": [f"i{x}" for x in i],
                       "rating": truth + rng.normal(0, noise, n), "truth": truth})
    cut = int(0.8 * n)
    return df.iloc[:cut].reset_index(drop=True), df.iloc[cut:].reset_index(drop=True), (b_u, b_i)


def rmse_to_truth(model, test):
    return float(np.sqrt(np.mean((model.predict(test) - test["truth"]) ** 2)))


@pytest.mark.parametrize("method", ["bias", "mf", "svdpp"])
def test_collaborative_baselines_recover_a_planted_bias_model(method):
    train, test, _ = planted()
    valid, train = train.iloc[:500], train.iloc[500:]
    model = make_baseline(method, scale=schema.RatingScale(0, 7), seed=0).fit(train, valid)
    # noise is 0.3; a model that learned the biases is far closer to the truth than the global mean (~0.55)
    assert rmse_to_truth(model, test) < 0.2
    assert rmse_to_truth(make_baseline("global").fit(train), test) > 0.45


def test_bias_baseline_recovers_the_biases_themselves():
    train, _, (b_u, b_i) = planted(n=9000)
    model = make_baseline("bias", scale=schema.RatingScale(0, 7)).fit(train)
    users = model.index_.users.str[1:].astype(int)
    assert np.corrcoef(model.b_u_, b_u[users])[0, 1] > 0.95
    items = model.index_.items.str[1:].astype(int)
    assert np.corrcoef(model.b_i_, b_i[items])[0, 1] > 0.95


@pytest.mark.parametrize("method", ["mf", "svdpp"])
def test_factorisation_beats_bias_on_low_rank_data(method):
    train, test, _ = planted(rank=3, n=9000)
    valid, train = train.iloc[:600], train.iloc[600:]
    bias = rmse_to_truth(make_baseline("bias", scale=schema.RatingScale(-5, 12)).fit(train), test)
    mf = make_baseline(method, scale=schema.RatingScale(-5, 12), seed=0).fit(train, valid)
    assert rmse_to_truth(mf, test) < 0.8 * bias
    assert mf.history_ and "val_mae" in mf.history_[0]


def test_mf_is_reproducible_under_a_seed():
    train, test, _ = planted(n=3000)
    a = make_baseline("mf", seed=3, epochs=3).fit(train).predict(test)
    b = make_baseline("mf", seed=3, epochs=3).fit(train).predict(test)
    assert np.array_equal(a, b)


def test_unknown_users_and_items_fall_back_and_predictions_are_clipped():
    train = pd.DataFrame({"user_id": ["a", "a", "b", "b"], "item_id": ["x", "y", "x", "y"], "rating": [5.0, 5, 5, 1]})
    query = pd.DataFrame({"user_id": ["a", "zz", "a", "zz"], "item_id": ["x", "x", "qq", "qq"], "rating": [5.0] * 4})
    for method in ("bias", "mf", "svdpp"):
        values, fallback = make_baseline(method, scale=SCALE, epochs=2).fit(train).predict_with_fallback(query)
        assert fallback.tolist() == [None, "item_bias", "user_bias", "global_mean"]
        assert values[3] == pytest.approx(4.0) and ((values >= 1) & (values <= 5)).all()


def test_constants_and_prompt_only_baselines():
    train = pd.DataFrame({"user_id": list("abcd"), "item_id": list("wxyz"), "rating": [1.0, 4, 4, 5]})
    nan = float("nan")
    df = pd.DataFrame({"user_avg": [4.0, nan, nan, 4.5], "item_avg": [2.0, 3.0, nan, 4.9]})
    assert make_baseline("global").fit(train).predict(df).tolist() == [3.5] * 4
    assert make_baseline("median").fit(train).predict(df).tolist() == [4.0] * 4
    values, fallback = make_baseline("user").fit(train).predict_with_fallback(df)
    assert values.tolist() == [4.0, 3.0, 3.5, 4.5] and fallback.tolist() == [None, "item_avg", "global_mean", None]
    values, fallback = make_baseline("item").fit(train).predict_with_fallback(df)
    assert values.tolist() == [2.0, 3.0, 3.5, 4.9] and fallback.tolist() == [None, None, "global_mean", None]
    values, fallback = make_baseline("avg-blend", scale=SCALE).fit(train).predict_with_fallback(df)
    # 4 + 2 - 3.5 = 2.5; no user avg -> item avg; nothing -> global; 4.5 + 4.9 - 3.5 = 5.9 -> clipped to 5
    assert values.tolist() == [2.5, 3.0, 3.5, 5.0]
    assert fallback.tolist() == [None, "item_avg", "global_mean", None]


def test_make_baseline_rejects_unknown_names_and_hparams():
    assert set(BASELINES) == {"global", "median", "user", "item", "avg-blend", "bias", "mf", "svdpp"}
    with pytest.raises(ConfigError, match="unknown baseline"):
        make_baseline("svd")
    with pytest.raises(ConfigError, match="takes no factors"):
        make_baseline("bias", factors=3)
    with pytest.raises(Exception, match="fit"):
        make_baseline("mf").predict(pd.DataFrame({"user_id": ["a"], "item_id": ["b"]}))


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    from reczero.data.samples import write_prepared

    train, test, _ = planted(n_users=60, n_items=40, n=1500, seed=1)
    df = pd.concat([train, test], ignore_index=True)
    n = len(df)
    table = pa.table({"user_id": df["user_id"], "item_id": df["item_id"],
                      "rating": np.clip(np.round(df["rating"]), 1, 5).astype(float),
                      "timestamp": np.arange(n, dtype=np.int64) * 60, "review": [None] * n, "summary": [None] * n},
                     schema=schema.INTERACTIONS_SCHEMA)
    out = tmp_path_factory.mktemp("prepared")
    write_prepared(out, table, None, SampleOptions(), scale=SCALE, source="table", rejects=None, inputs=[])
    return out


@pytest.mark.parametrize("method", ["median", "avg-blend", "mf"])
def test_run_baseline_through_the_cli(prepared, tmp_path, capsys, method):
    run = tmp_path / method
    assert cli.main(["baseline", "--method", method, "--data", str(prepared), "--out", str(run), "--epochs", "4"]) == 0
    assert "MAE" in capsys.readouterr().out
    assert (run / "config.yaml").is_file()
    for split in ("valid", "test"):
        res = read_results(run / "eval" / split)
        expected = pd.read_parquet(schema.split_path(prepared, split))
        assert res.metrics["n"] == len(expected) == len(res.predictions)
        assert res.predictions["sample_id"].tolist() == expected["sample_id"].tolist()
        assert res.metrics["mae"] == float(np.mean(np.abs(res.predictions["prediction"] - res.predictions["rating"])))
        assert res.metrics["parse_failure_rate"] == 0.0 and res.metrics["method"] == method
    if method == "mf":
        log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
        assert 1 <= len(log) <= 4 and "val_mae" in log[0]


def test_run_baseline_errors_are_one_line(prepared, tmp_path, capsys):
    rc = cli.main(["baseline", "--method", "mf", "--data", str(tmp_path / "nope"), "--out", str(tmp_path / "r")])
    assert rc == 2 and "not a prepared dataset" in capsys.readouterr().err
    rc = cli.main(["baseline", "--method", "mf", "--data", str(prepared), "--out", str(tmp_path / "r"), "--splits", "tset"])
    assert rc == 2 and "splits" in capsys.readouterr().err
