"""The demo: the claims' logic, and the whole pipeline at micro sizes (every stage for real), with
finished stages skipped on a rerun."""

from __future__ import annotations

import json

import pytest

from reczero import cli, demo


def m(mae, pf=0.0):
    return {"mae": mae, "rmse": mae + 0.2, "parse_failure_rate": pf, "n": 100}


def test_claims_hold_and_fail():
    metrics = {"global": m(0.85), "median": m(0.83), "user": m(0.80), "item": m(0.76), "avg-blend": m(0.72),
               "reczero": m(0.70), "sft-only": m(0.75), "recone": m(0.65)}
    assert [h for _, h in demo.claims(metrics)] == [True, True, True, True]
    metrics["recone"] = m(0.74)
    assert [h for _, h in demo.claims(metrics)] == [True, True, False, False]
    metrics["recone"] = m(0.745)                     # 0.005 below SFT-only: a tie, not an ordering
    assert demo.claims(metrics)[1][1] is False


def test_claims_need_parsed_answers():
    # a model that only returns the fallback (user average) must not be credited with its MAE
    metrics = {"global": m(0.85), "median": m(0.83), "reczero": m(0.70, pf=1.0)}
    assert demo.claims(metrics)[0][1] is False
    assert demo.claims(metrics)[1][1] is None          # RecOne missing: not decided


MICRO = {
    "data": {"users": 40, "items": 24, "max_samples": "valid=16,test=12"},
    "baselines": ["global", "median", "user", "mf"],
    "baseline": {},
    "base": {"size": "tiny", "pretrain_epochs": 0.05, "format_warmup_steps": 2, "batch_size": 4, "seq_len": 128,
             "eval_samples": 4, "vocab_size": 600},
    "reczero": {"max_steps": 1, "num_generations": 2, "per_device_train_batch_size": 2, "max_completion_length": 8,
                "eval_steps": 0, "max_prompt_tokens": 256, "learning_rate": 1e-3},
    "teacher": {"n": 8},
    "sft": {"max_steps": 1, "per_device_train_batch_size": 4, "eval_steps": 0, "max_prompt_tokens": 256},
    "recone": {"max_steps": 1, "num_generations": 2, "per_device_train_batch_size": 2, "max_completion_length": 8,
               "eval_steps": 0, "max_prompt_tokens": 256},
    "eval": {"max_new_tokens": 8, "batch_size": 8, "max_prompt_tokens": 256},
    "prompt": {"prompt_averages": "end"},
}


@pytest.fixture(scope="module")
def micro_demo(tmp_path_factory):
    """One micro demo for the module: its output directory and what it printed."""
    import contextlib
    import io

    out = tmp_path_factory.mktemp("micro") / "demo"
    printed = io.StringIO()
    with pytest.MonkeyPatch.context() as mp, contextlib.redirect_stdout(printed):
        mp.setattr(demo, "demo_settings", lambda quick: MICRO)
        assert cli.main(["demo", "--quick", "--out", str(out), "--jobs", "2"]) == 0
    return out, printed.getvalue()


def test_micro_demo_runs_every_stage_and_skips_on_rerun(micro_demo, monkeypatch, capsys):
    out, text = micro_demo
    for stage in ["data", "baseline-mf", "base", "reczero", "teacher", "sft-only", "recone", "eval-recone", "report"]:
        assert f"== {stage}: done" in text, stage
    assert "Bayes floor" in text and "report.html" in text
    assert "2 lanes, 2 at a time" in text         # RecZero's lane and RecOne's ran side by side, logs in OUT/logs
    lanes = {lane: (out / "logs" / f"{lane}.log").read_text() for lane in ("reczero", "recone")}
    assert "GRPO plan\n" in lanes["reczero"] and "SFT plan\n" in lanes["recone"]   # real runs say their plan
    assert "dry run" not in lanes["reczero"] + lanes["recone"]
    for name in ["reczero", "sft-only", "recone", "global", "mf"]:
        metrics = json.loads((out / "runs" / name / "eval" / "test" / "metrics.json").read_text())
        assert metrics["n"] == 12                       # every method on the same capped test split
    for stage in ["reczero", "sft-only", "recone", "recone/eval/test"]:     # the prompt section reaches every stage
        assert "prompt_averages: end" in (out / "runs" / stage / "config.yaml").read_text(), stage
    html = (out / "report" / "report.html").read_text()
    assert "RecOne-tiny" in html and "data:image/png;base64" in html

    monkeypatch.setattr(demo, "demo_settings", lambda quick: MICRO)
    assert cli.main(["demo", "--quick", "--out", str(out)]) == 0
    again = capsys.readouterr().out
    assert "== base: already done" in again and "== recone: already done" in again


def test_bench_seeds_retrains_the_rl_stages_and_refuses_runs_of_another_recipe(micro_demo, monkeypatch, capsys):
    import copy
    import importlib.util
    from pathlib import Path

    path = Path(__file__).parents[1] / "bench" / "seeds.py"
    spec = importlib.util.spec_from_file_location("bench_seeds", path)
    seeds = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(seeds)
    out, _ = micro_demo
    monkeypatch.setattr(seeds, "demo_settings", lambda quick: MICRO)
    assert seeds.main([str(out), "--seeds", "0", "1", "--splits", "test", "valid", "--threads", "1"]) == 0
    text = capsys.readouterr().out
    assert "== train recone seed 1" in text and "== train recone seed 0" not in text   # seed 0: the demo's run
    for arm in ("recone", "reczero"):
        assert json.loads((out / "seeds" / f"{arm}-s1" / "done.json").read_text())["global_step"] == 1
        assert "seed: 1" in (out / "seeds" / f"{arm}-s1" / "config.yaml").read_text()
    test, valid = json.loads((out / "seeds" / "summary.json").read_text())
    assert test["split"] == "test" and valid["split"] == "valid"
    demo_mae = json.loads((out / "runs" / "recone" / "eval" / "test" / "metrics.json").read_text())["mae"]
    assert test["mae"]["recone"]["per_seed"][0] == pytest.approx(demo_mae)
    (pair,) = test["pairs"]
    assert pair["a"] == "recone" and pair["b"] == "reczero" and pair["seed_pairs"] == 4
    lo, hi = pair["ci"]
    assert lo <= pair["seed_averaged_diff"] <= hi
    assert "| recone | " in text and "seed-averaged" in text
    assert (out / "seeds" / "seeds.png").stat().st_size > 1000

    assert seeds.main([str(out), "--seeds", "0", "1", "--splits", "test"]) == 0     # finished: nothing retrained
    assert "== train" not in capsys.readouterr().out

    changed = copy.deepcopy(MICRO)
    changed["recone"]["learning_rate"] = 0.123
    monkeypatch.setattr(seeds, "demo_settings", lambda quick: changed)
    with pytest.raises(SystemExit, match="learning_rate"):
        seeds.main([str(out), "--seeds", "1", "--arms", "recone", "--splits", "test"])
    changed = copy.deepcopy(MICRO)
    changed["eval"]["max_new_tokens"] = 99                 # the runs match, their evaluations do not
    monkeypatch.setattr(seeds, "demo_settings", lambda quick: changed)
    with pytest.raises(SystemExit, match="max_new_tokens"):
        seeds.main([str(out), "--seeds", "1", "--arms", "recone", "--splits", "test"])


@pytest.mark.parametrize("quick", [True, False])
def test_shipped_demo_settings_resolve(quick):
    from reczero.config import (
        BaseConfig,
        EvalConfig,
        GRPORecipe,
        SFTRecipe,
        SynthConfig,
        TeacherConfig,
        resolve,
    )

    s = demo.demo_settings(quick)
    p = s.get("prompt", {})
    resolve(SynthConfig, None, {**s["data"], "out": "o"})
    assert s["base"].get("shipped", False) is quick       # only the quick demo starts from the shipped base
    resolve(BaseConfig, None, {**{k: v for k, v in s["base"].items() if k != "shipped"}, **p, "data": "d", "out": "o"})
    for stage in ("reczero", "recone"):
        resolve(GRPORecipe, None, {**s[stage], **p, "data": "d", "model": "m", "out": "o"})
    resolve(SFTRecipe, None, {**s["sft"], **p, "data": "d", "model": "m", "out": "o", "teacher_data": "t"})
    resolve(TeacherConfig, None, {**s["teacher"], **p, "data": "d", "out": "o", "heuristic": True})
    resolve(EvalConfig, None, {**s["eval"], **p, "model": "m", "data": "d"})


def test_claims_need_a_paired_interval_below_zero():
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(1)
    y = rng.integers(1, 6, 400).astype(float)
    ids = [f"s{i}" for i in range(y.size)]

    def preds(p):
        return pd.DataFrame({"sample_id": ids, "rating": y, "prediction": p})

    median = np.full(y.size, 4.0)
    close = np.clip(y + rng.choice([-1, 0, 0, 1], y.size), 1, 5)
    metrics = {"global": m(0.85), "median": m(0.83), "reczero": m(0.70)}
    text, holds = demo.claims(metrics, {"median": preds(median), "global": preds(np.full(y.size, 3.5)),
                                        "reczero": preds(close)})[0]
    assert holds is True and "vs median" in text and "[" in text
    # the table's MAEs are far apart, but the predictions differ on 3 samples: noise, not an ordering
    nearly = median.copy()
    nearly[:3] = y[:3]
    text, holds = demo.claims(metrics, {"median": preds(median), "global": preds(np.full(y.size, 3.5)),
                                        "reczero": preds(nearly)})[0]
    assert holds is False
