"""The R2ec probes of bench/ run on a tiny world: the headroom ranker at β = 0 is exactly the
popularity baseline (same catalogue, same protocol), the two-tower probe trains and validates, and the
sample-size probe scores its bag-of-attributes model against that same popularity figure."""

from __future__ import annotations

import importlib.util
import math
import re
from pathlib import Path

import numpy as np

BENCH = Path(__file__).parents[1] / "bench"


def _script(name: str):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _popularity_ndcg(world, split: str) -> float:
    """The popularity baseline's NDCG@10 on ``split``, computed here with the library's protocol."""
    from reczero.baselines import make_ranker
    from reczero.rankings import load_ranking_rows, per_sample_ndcg, rank_rows

    popularity = make_ranker("popularity").fit(load_ranking_rows(world, "train", timestamps=True))
    rows = load_ranking_rows(world, split)
    return per_sample_ndcg(rank_rows(lambda block: popularity.score([rows["history"].iloc[int(i)] for i in block]),
                                     rows, popularity.catalog)["rank"], 10).mean()


def test_headroom_at_beta_zero_is_the_popularity_baseline(r2ec_world, capsys):
    assert _script("ranking_headroom").main(["--data", str(r2ec_world), "--betas", "0", "3"]) == 0
    out = capsys.readouterr().out
    expected = _popularity_ndcg(r2ec_world, "valid")
    assert f"beta 0: {expected:.4f}" in out
    assert re.search(r"beta 3: 0\.\d{4}", out)
    line = re.search(r"popularity NDCG@10 (\S+); .* \(beta (\S+), chosen on valid\) (\S+); difference (\S+)", out)
    assert line and float(line.group(2)) in (0.0, 3.0)
    assert math.isclose(float(line.group(3)) - float(line.group(1)), float(line.group(4)), abs_tol=2e-4)


def test_two_tower_probe_trains_and_validates(r2ec_world, r2ec_model, capsys):
    assert _script("r2ec_two_tower").main(["--data", str(r2ec_world), "--base", str(r2ec_model), "--steps", "2",
                                           "--users", "4", "--eval-every", "1"]) == 0
    out = capsys.readouterr().out
    scores = [float(x) for x in re.findall(r"valid NDCG@10 (\d\.\d{4})", out)]
    losses = [float(x) for x in re.findall(r"loss (\d+\.\d+)", out)]
    assert len(scores) == 3 and len(losses) == 2 and all(np.isfinite(losses))
    final = re.search(r"final model, test \(\d+ samples\): NDCG@10 (\S+); popularity (\S+); difference (\S+) \[(\S+), (\S+)\]",
                      out)
    assert final and math.isclose(float(final.group(2)), _popularity_ndcg(r2ec_world, "test"), abs_tol=1e-4)
    assert math.isclose(float(final.group(1)) - float(final.group(2)), float(final.group(3)), abs_tol=2e-4)
    assert float(final.group(4)) <= float(final.group(3)) <= float(final.group(5))


def test_sample_size_probe_scores_against_the_popularity_baseline(r2ec_world, capsys):
    assert _script("ranking_sample_size").main(["--data", str(r2ec_world), "--users", "40", "80", "--seeds", "0",
                                                "--epochs", "2", "--dim", "8"]) == 0
    out = capsys.readouterr().out
    expected = _popularity_ndcg(r2ec_world, "test")
    assert f"popularity test NDCG@10 {expected:.4f}" in out
    lines = re.findall(r"users (\d+) seed 0: valid (\S+) \(epoch ([12])\); test (\S+), - popularity (\S+) \[(\S+), (\S+)\]", out)
    assert [int(line[0]) for line in lines] == [40, 80]
    for _, _, _, score, diff, lo, hi in lines:
        assert math.isclose(float(score) - expected, float(diff), abs_tol=2e-4)
        assert float(lo) <= float(diff) <= float(hi)
