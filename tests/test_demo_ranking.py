"""The ranking part of the demo: its claims' logic, the R2ec warm-up's quote, and the whole part at
micro sizes (every stage for real: world, popularity, SASRec, a base warmed up for R2ec, three RecPO
runs, full-ranking evaluation, report), with finished stages skipped on a rerun."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from reczero import cli, demo

MICRO_RANKING = {
    "data": {"users": 40, "items": 24, "choice_temperature": 2.5, "history": 20, "max_samples": "valid=8,test=8"},
    "prompt": {"history_window": 4, "history_attributes": True, "max_prompt_tokens": 256},
    "baselines": ["popularity", "sasrec"],
    "baseline": {"epochs": 1},
    "base": {"size": "tiny", "pretrain_epochs": 0.05, "rating_lists": False, "format_warmup_steps": 2,
             "batch_size": 4, "seq_len": 128, "eval_samples": 2, "vocab_size": 600},
    "r2ec": {"max_steps": 1, "num_generations": 2, "per_device_train_batch_size": 4, "max_completion_length": 6,
             "eval_steps": 0, "learning_rate": 1e-3, "temperature": 1.0, "save_steps": 1},
    "variants": {"r2ec-no-reasoning": {"per_device_train_batch_size": 4}},
    "eval": {"max_new_tokens": 6, "batch_size": 8},
}


def metric(ndcg):
    return {"ndcg@10": ndcg, "hit@10": min(1.0, 2 * ndcg), "n": 400}


def test_ranking_claims_need_the_gap_and_a_paired_interval_above_zero():
    rng = np.random.default_rng(0)
    ids = [f"s{i}" for i in range(400)]
    good = pd.DataFrame({"sample_id": ids, "rank": rng.integers(1, 6, 400)})       # near the top
    poor = pd.DataFrame({"sample_id": ids, "rank": rng.integers(20, 200, 400)})    # never in the top 10
    metrics = {"r2ec": metric(0.45), "popularity": metric(0.0), "r2ec-no-reasoning": metric(0.0),
               "r2ec-item-loss-only": metric(0.0), "sasrec": metric(0.0)}
    rankings = {"r2ec": good, "popularity": poor, "r2ec-no-reasoning": poor, "r2ec-item-loss-only": poor}
    checked = demo.ranking_claims(metrics, rankings)
    assert [h for _, h in checked] == [True, True, True, True]
    assert "95% interval" in checked[0][0] and "95% interval" not in checked[3][0]   # no SASRec rankings given
    # the same NDCG@10 in the table but the rankings differ on 3 samples: noise, not an ordering
    nearly = good.copy()
    nearly.loc[:2, "rank"] = 50
    assert demo.ranking_claims(metrics, {"r2ec": good, "popularity": nearly})[0][1] is False
    # a gap under MIN_NDCG_GAP is a tie, whatever the interval says
    close = {**metrics, "popularity": metric(0.45 - demo.MIN_NDCG_GAP / 2)}
    assert demo.ranking_claims(close)[0][1] is False
    assert demo.ranking_claims({"r2ec": metric(0.1)})[0][1] is None                 # popularity missing


def test_r2ec_reasoning_quotes_the_newest_history_items():
    from reczero.config import R2ecPromptOptions
    from reczero.models.corpus import r2ec_reasoning

    history = [{"title": f"T{i}", "attributes": [f"a{i}", "b"] if i % 2 else []} for i in range(6)]
    sample = {"user_history": history}
    assert r2ec_reasoning(sample, R2ecPromptOptions(history_attributes=True)) == "Latest: a5, b; T4; a3, b."
    assert r2ec_reasoning(sample, R2ecPromptOptions()) == "Latest: T5; T4; T3."        # attributes not shown
    assert r2ec_reasoning(sample, R2ecPromptOptions(history_window=1)) == "Latest: T5."
    assert r2ec_reasoning({"user_history": None}, R2ecPromptOptions()) == "No history yet."


@pytest.fixture(scope="module")
def micro_ranking(tmp_path_factory):
    """The micro ranking part, run once for the module: its output directory and what it printed."""
    import contextlib
    import io

    out = tmp_path_factory.mktemp("micro") / "demo"
    printed = io.StringIO()
    with pytest.MonkeyPatch.context() as mp, contextlib.redirect_stdout(printed):
        mp.setattr(demo, "demo_settings", lambda quick: {"parts": ["rating", "ranking"], "ranking": MICRO_RANKING})
        assert cli.main(["demo", "--quick", "--task", "ranking", "--out", str(out)]) == 0
    return out, printed.getvalue()


def test_micro_ranking_part_runs_every_stage_and_skips_on_rerun(micro_ranking, monkeypatch, capsys):
    from transformers import AutoTokenizer

    from reczero.r2ec.model import answer_token_id

    out, text = micro_ranking
    root = out / "ranking"
    for stage in ["ranking-data", "ranking-baseline-popularity", "ranking-baseline-sasrec", "ranking-base",
                  "ranking-r2ec", "ranking-r2ec-no-reasoning", "ranking-r2ec-item-loss-only",
                  "ranking-eval-r2ec", "ranking-report"]:
        assert f"== {stage}: done" in text, stage
    assert "== data" not in text and "== reczero" not in text            # --task ranking: no rating stage
    assert json.loads((root / "data" / "manifest.json").read_text())["world"]["choice_temperature"] == 2.5
    # the base is warmed up for R2ec: <answer> is one token of its own tokenizer, and its card says so
    answer_token_id(AutoTokenizer.from_pretrained(root / "base"))
    assert "Format warm-up for R2ec" in (root / "base" / "README.md").read_text()
    metrics = {}
    for name in ["popularity", "sasrec", "r2ec", "r2ec-no-reasoning", "r2ec-item-loss-only"]:
        metrics[name] = json.loads((root / "runs" / name / "eval" / "test" / "metrics.json").read_text())
        assert metrics[name]["method"] == name and metrics[name]["n"] == 8     # one capped test split for all
    assert metrics["r2ec-no-reasoning"]["no_reasoning"] is True and metrics["r2ec"]["no_reasoning"] is False
    recipe = (root / "runs" / "r2ec-item-loss-only" / "config.yaml").read_text()
    assert "token_loss: false" in recipe and "history_attributes: true" in recipe     # the prompt section reached it
    assert "ranking ceiling" in text and "user prompt: the newest 4 history items" in text
    assert "R2ec-tiny is above popularity" in text and "R2ec-tiny is above its no-reasoning ablation" in text
    assert (root / "report" / "report.html").is_file()

    monkeypatch.setattr(demo, "demo_settings", lambda quick: {"parts": ["ranking"], "ranking": MICRO_RANKING})
    assert cli.main(["demo", "--quick", "--out", str(out)]) == 0           # the recipe's parts: ranking only here
    again = capsys.readouterr().out
    assert "== ranking-base: already done" in again and "== ranking-r2ec: already done" in again


@pytest.mark.parametrize("quick", [True, False])
def test_shipped_ranking_settings_resolve(quick):
    from reczero.config import BaseConfig, BaselineConfig, EvalConfig, R2ecRecipe, SynthConfig, resolve

    s = demo.demo_settings(quick)["ranking"]
    p = s["prompt"]
    resolve(SynthConfig, None, {**s["data"], "out": "o"})
    assert s["data"]["history"] >= p["history_window"]
    for method in s["baselines"]:
        resolve(BaselineConfig, None, {**s.get("baseline", {}), "method": method, "data": "d", "out": "o"})
    resolve(BaseConfig, None, {**s["base"], **p, "format_warmup": "r2ec", "data": "d", "out": "o"})
    for name, change in demo.R2EC_RUNS.items():
        resolve(R2ecRecipe, None, {**s["r2ec"], **change, **s.get("variants", {}).get(name, {}), **p,
                                   "data": "d", "model": "m", "out": "o"})
    resolve(EvalConfig, None, {**s["eval"], "model": "m", "data": "d"})
