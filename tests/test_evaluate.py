"""`reczero eval` end to end on a tiny random model: honest fallback, exact metrics, resume, batching.

The tiny random Qwen2 writes gibberish, so its own completions never parse; a wrapper around the
real generation forces some completions to parsable answers (and some to tagged but unusable ones,
e.g. an off-scale rating), so that both paths of the scoring are exercised on one run.
"""

from __future__ import annotations

import json
import math
import os
import sys
import types
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from reczero import cli, evaluate, generation, rewards
from reczero.data import schema

N_TEST = 12
GLOBAL_MEAN_TRAIN = [2.0, 4.0, 5.0]            # train mean 11/3: the last-resort fallback


def _sample(split: str, k: int, rating: float, user_avg: float | None, item_avg: float | None) -> dict:
    user, item, ts = f"u{k % 4}", f"i{k % 5}", 1_000 + k
    history = [] if user_avg is None else [
        {"item_id": f"i{(k + j) % 5}", "title": f"Film {j}", "attributes": ["drama"], "rating": float(user_avg),
         "review": "fine " * (k % 4 + 1), "timestamp": ts - 10 + j} for j in range(k % 3 + 1)]
    reviews = [] if item_avg is None else [
        {"user_id": "u9", "rating": float(item_avg), "review": "ok", "timestamp": ts - 5}]
    return {"sample_id": schema.sample_id(split, user, item, ts), "user_id": user, "item_id": item, "rating": rating,
            "timestamp": ts, "item_title": f"Film {k}", "item_attributes": ["drama", "comedy"][: k % 2 + 1],
            "item_description": "A film about " + "things " * k, "user_history": history, "item_history": reviews,
            "user_n": len(history), "item_n": len(reviews), "user_avg": user_avg, "item_avg": item_avg}


def write_prepared(root: Path) -> Path:
    """A small prepared dataset: the test split mixes known and unknown user/item averages."""
    root.mkdir(parents=True, exist_ok=True)
    rows = {
        "train": [_sample("train", k, r, None, None) for k, r in enumerate(GLOBAL_MEAN_TRAIN)],
        "valid": [_sample("valid", k, 3.0, 3.0, 3.0) for k in range(2)],
        "test": [_sample("test", k, float(k % 5 + 1), [3.5, None, None][k % 3], [2.5, 4.0, None][k % 3])
                 for k in range(N_TEST)],
    }
    for split, samples in rows.items():
        pq.write_table(pa.Table.from_pylist(samples, schema=schema.SAMPLE_SCHEMA), schema.split_path(root, split))
    n = sum(len(v) for v in rows.values())
    schema.write_manifest(root, {"source": "test", "rating_scale": {"min": 1.0, "max": 5.0, "step": 1.0},
                                 "counts": {"read": n, "kept": n, "rejected": {}},
                                 "splits": {k: len(v) for k, v in rows.items()}})
    return root


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    """A run directory holding a tiny random model (RUN/model)."""
    from conftest import make_test_model

    run = tmp_path_factory.mktemp("run") / "tiny-run"
    make_test_model(run / "model")
    return run


@pytest.fixture()
def data(tmp_path) -> Path:
    return write_prepared(tmp_path / "data")


def forced(prompt: str, real: str) -> str:
    """Deterministic per prompt: a good answer, an off-scale answer, or the model's own gibberish."""
    k = len(prompt) % 3
    if k == 0:
        return f"<analyze user>x</analyze user><rate>{len(prompt) % 5 + 1}</rate>"
    if k == 1:
        return "<rate>9</rate>"                    # tagged, but off the 1-5 scale: a parse failure
    return real


@pytest.fixture()
def forcing(monkeypatch):
    """Wrap the real generation; ``calls`` counts prompts per call; ``kill_on`` raises on that call."""
    real_generate = generation.generate
    state = {"calls": [], "kill_on": None}

    def wrapper(model, tokenizer, prompts, **kw):
        state["calls"].append(len(prompts))
        if state["kill_on"] == len(state["calls"]):
            raise KeyboardInterrupt
        return [forced(p, c) for p, c in zip(prompts, real_generate(model, tokenizer, prompts, **kw), strict=True)]

    monkeypatch.setattr(generation, "generate", wrapper)
    return state


def expected_fallback(row) -> tuple[float, str]:
    if not pd.isna(row["user_avg"]):
        return row["user_avg"], "user_avg"
    if not pd.isna(row["item_avg"]):
        return row["item_avg"], "item_avg"
    return float(np.mean(GLOBAL_MEAN_TRAIN)), "global_mean"


def run_eval(run: Path, data: Path, *extra: str) -> int:
    return cli.main(["-q", "eval", "--model", str(run), "--data", str(data), "--max-new-tokens", "6",
                     "--batch-size", "2", *extra])


def test_eval_scores_failures_with_fallback_and_metrics_match(tiny_run, data, tmp_path, forcing):
    out = tmp_path / "eval"
    assert run_eval(tiny_run, data, "--out", str(out)) == 0
    preds = pd.read_parquet(out / "predictions.parquet")
    metrics = json.loads((out / "metrics.json").read_text())
    split = schema.load_split(data, "test").set_index("sample_id")

    assert list(preds["sample_id"]) == list(split.index)              # split order, no duplicates
    assert 0 < preds["parsed"].sum() < len(preds)
    for row in preds.itertuples():
        sample = split.loc[row.sample_id]
        if row.parsed:
            assert row.completion.endswith(f"<rate>{int(row.prediction)}</rate>") and pd.isna(row.fallback)
        else:
            value, name = expected_fallback(sample)
            assert (row.prediction, row.fallback) == (pytest.approx(value), name)
    assert "<rate>9</rate>" in set(preds.loc[~preds["parsed"], "completion"])   # off-scale never "correct"
    assert set(preds.loc[~preds["parsed"], "fallback"]) == {"user_avg", "item_avg", "global_mean"}

    err = preds["prediction"] - preds["rating"]
    assert metrics["n"] == len(preds) == N_TEST
    assert metrics["mae"] == pytest.approx(err.abs().mean(), abs=1e-12)
    assert metrics["rmse"] == pytest.approx(math.sqrt((err ** 2).mean()), abs=1e-12)
    assert metrics["parse_failure_rate"] == pytest.approx(1 - preds["parsed"].mean(), abs=1e-12)
    # the format rate is that of the completions as written: a parsed "<rate>9</rate>"-only answer is not well formed
    assert metrics["format_rate"] == pytest.approx(
        preds["completion"].map(lambda t: rewards.check_format(t, "structured", schema.rating_scale(data))).mean())
    assert 0.0 <= metrics["format_rate"] <= 1 - metrics["parse_failure_rate"]
    assert metrics["method"] == "tiny-run" and metrics["split"] == "test"
    assert (out / "config.yaml").is_file()


def test_killed_eval_resumes_without_duplicates(tiny_run, data, tmp_path, forcing, monkeypatch):
    monkeypatch.setattr(evaluate, "CHUNK_BATCHES", 1)                  # one chunk per batch of 2
    out, fresh = tmp_path / "killed", tmp_path / "fresh"
    forcing["kill_on"] = 2
    assert run_eval(tiny_run, data, "--out", str(out)) == 130          # "killed" during the second chunk
    assert len(list((out / "partial").glob("chunk-*.parquet"))) == 1
    assert not (out / "predictions.parquet").exists()

    forcing.update(calls=[], kill_on=None)
    assert run_eval(tiny_run, data, "--out", str(out)) == 0
    assert sum(forcing["calls"]) == N_TEST - 2                         # only what was missing
    resumed = pd.read_parquet(out / "predictions.parquet")
    assert not resumed["sample_id"].duplicated().any() and len(resumed) == N_TEST

    assert run_eval(tiny_run, data, "--out", str(fresh)) == 0
    whole = pd.read_parquet(fresh / "predictions.parquet")
    cols = ["sample_id", "prediction", "parsed", "fallback"]
    pd.testing.assert_frame_equal(resumed[cols], whole[cols])

    forcing["calls"] = []                                              # a finished eval reruns for free
    assert run_eval(tiny_run, data, "--out", str(out)) == 0 and forcing["calls"] == []


def test_limit_default_out_and_fingerprint(tiny_run, data, forcing, capsys):
    assert run_eval(tiny_run, data, "--limit", "4", "--method", "mine") == 0
    out = tiny_run / "eval" / "test"
    preds = pd.read_parquet(out / "predictions.parquet")
    assert list(preds["sample_id"]) == list(schema.load_split(data, "test", 4)["sample_id"])
    assert json.loads((out / "metrics.json").read_text())["method"] == "mine"
    assert "MAE" in capsys.readouterr().out

    assert run_eval(tiny_run, data, "--limit", "4", "--max-new-tokens", "7") == 2   # other generation length
    assert "different evaluation" in capsys.readouterr().err
    weights = next((tiny_run / "model").glob("*.safetensors"))
    os.utime(weights, ns=(weights.stat().st_atime_ns, weights.stat().st_mtime_ns + 10**9))   # "retrained"
    assert run_eval(tiny_run, data, "--limit", "4") == 2
    assert "weights" in capsys.readouterr().err


def test_plain_model_path_needs_out(tiny_run, data, capsys):
    assert run_eval(tiny_run / "model", data) == 2
    assert "--out is required" in capsys.readouterr().err


def test_batched_generation_equals_one_at_a_time(tiny_run):
    import torch

    from reczero.models import load_model

    model, tokenizer = load_model(tiny_run / "model")
    torch.manual_seed(0)
    with torch.no_grad():            # larger random weights, so greedy output depends on the prompt
        for p in model.parameters():
            p.normal_(0.0, 0.5)
    prompts = [tokenizer.apply_chat_template([{"role": "user", "content": "film " * k + "rating?"}],
                                             tokenize=False, add_generation_prompt=True) for k in (1, 9, 3, 14, 6, 2)]
    batched = generation.generate(model, tokenizer, prompts, batch_size=4, max_new_tokens=8, progress=False)
    single = [generation.generate(model, tokenizer, [p], batch_size=1, max_new_tokens=8, progress=False)[0]
              for p in prompts]
    assert batched == single
    assert len(set(batched)) > 1                                       # not one constant answer


def test_default_backend_never_imports_vllm(tiny_run, data, tmp_path, forcing, monkeypatch):
    touched = []
    fake = types.ModuleType("vllm")
    fake.__getattr__ = lambda name: touched.append(name)               # any `from vllm import X` is seen
    monkeypatch.setitem(sys.modules, "vllm", fake)
    assert run_eval(tiny_run, data, "--out", str(tmp_path / "e"), "--limit", "2") == 0
    assert touched == []


def test_vllm_backend_missing_is_a_clear_error(tiny_run, data, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "vllm", None)                     # import vllm -> ImportError
    assert run_eval(tiny_run, data, "--out", str(tmp_path / "e"), "--backend", "vllm") == 2
    assert "'gpu' extra" in capsys.readouterr().err


def test_vllm_backend_with_a_stand_in_engine(tiny_run, data, tmp_path, monkeypatch):
    """The vLLM branch's contract (LLM + greedy SamplingParams, outputs in order) on a stand-in."""
    seen = {}

    class LLM:
        def __init__(self, model, **kw):
            seen["model"] = model

        def generate(self, prompts, params, use_tqdm=True):
            seen["params"] = params
            return [types.SimpleNamespace(outputs=[types.SimpleNamespace(text="<rate>3</rate>")]) for _ in prompts]

    fake = types.ModuleType("vllm")
    fake.LLM, fake.SamplingParams = LLM, lambda **kw: kw
    monkeypatch.setitem(sys.modules, "vllm", fake)
    out = tmp_path / "v"
    assert run_eval(tiny_run, data, "--out", str(out), "--backend", "vllm", "--max-new-tokens", "5") == 0
    assert seen["model"] == str(tiny_run / "model")
    assert seen["params"]["temperature"] == 0 and seen["params"]["max_tokens"] == 5
    preds = pd.read_parquet(out / "predictions.parquet")
    assert preds["parsed"].all() and (preds["prediction"] == 3.0).all()
