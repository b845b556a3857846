"""`reczero eval` of an R2ec run: a killed eval resumes from its chunks to the same rankings and
metrics as an uninterrupted one (reasoning only the missing samples), the chunk fingerprint refuses
another evaluation, and `--backend vllm` (a stand-in engine that runs the real tiny model greedily)
reads token ids, stops at <answer> and ranks exactly like the transformers backend.

The run is built the way the trainer saves one (a model with <answer> added, its resolved
``R2ecRecipe`` as ``config.yaml``), from the session's tiny model with larger random weights, so
that greedy reasoning depends on the prompt and some of it stops at <answer> before the limit.
"""

from __future__ import annotations

import json
import shutil
import sys
import types
from pathlib import Path

import pandas as pd
import pytest
import torch

from reczero import cli
from reczero.evaluate import ChunkStore
from reczero.r2ec import evaluate as R
from reczero.r2ec.model import R2ecModel

LIMIT, BATCH = 12, 2             # chunks of BATCH * CHUNK_BATCHES = 8 samples: 8 + 4
STEADY = ("eval_seconds", "created")   # the only metrics that may differ between two runs


@pytest.fixture(scope="module")
def r2ec_run(r2ec_world, r2ec_model, tmp_path_factory) -> Path:
    from reczero.config import R2ecRecipe, save_config
    from reczero.models import load_model
    from reczero.r2ec.model import add_answer_token

    run = tmp_path_factory.mktemp("r2ec-eval") / "run"
    model, tokenizer = load_model(r2ec_model)
    torch.manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.5)
    answer = add_answer_token(model, tokenizer)
    with torch.no_grad():            # (tied) <answer> row: greedy reasoning stops early for some prompts
        model.get_output_embeddings().weight[answer] = 1.7 * torch.randn(16, generator=torch.Generator().manual_seed(1))
    model.save_pretrained(run / "model")
    tokenizer.save_pretrained(run / "model")
    save_config(R2ecRecipe(data=str(r2ec_world), model=str(r2ec_model), out=str(run), history_window=4,
                           max_prompt_tokens=256, max_completion_length=6), run)
    return run


def run_eval(run: Path, data: Path, out: Path, *extra: str) -> int:
    return cli.main(["eval", "--model", str(run), "--data", str(data), "--split", "test", "--limit", str(LIMIT),
                     "--batch-size", str(BATCH), "--max-new-tokens", "6", "--out", str(out), *extra])


def results(out: Path) -> tuple[pd.DataFrame, dict]:
    metrics = json.loads((out / "metrics.json").read_text())
    return pd.read_parquet(out / "rankings.parquet"), {k: v for k, v in metrics.items() if k not in STEADY}


@pytest.fixture
def reasoned(monkeypatch) -> list[int]:
    """The number of prompts each call of the transformers reasoning got."""
    calls: list[int] = []
    real = R2ecModel.reason

    def counting(self, prompts, **kw):
        calls.append(len(prompts))
        return real(self, prompts, **kw)

    monkeypatch.setattr(R2ecModel, "reason", counting)
    return calls


@pytest.fixture(scope="module")
def whole(r2ec_run, r2ec_world, tmp_path_factory) -> Path:
    """An uninterrupted transformers eval of the first LIMIT test samples."""
    out = tmp_path_factory.mktemp("whole") / "e"
    assert run_eval(r2ec_run, r2ec_world, out) == 0
    return out


def test_killed_eval_resumes_to_the_same_rankings(r2ec_run, r2ec_world, whole, tmp_path, monkeypatch, reasoned):
    out = tmp_path / "killed"
    real_write = ChunkStore.write

    def killing_write(self, frame):
        if self.files():
            raise KeyboardInterrupt            # "killed" while the second chunk was reasoned
        return real_write(self, frame)

    monkeypatch.setattr(ChunkStore, "write", killing_write)
    assert run_eval(r2ec_run, r2ec_world, out) == 130
    assert len(list((out / "partial").glob("chunk-*.parquet"))) == 1 and not (out / "rankings.parquet").exists()
    first = pd.read_parquet(out / "partial" / "chunk-00001.parquet")
    assert len(first) == 8 and first["user_vector"].map(len).eq(16).all()
    assert first["reasoning_ids"].map(len).sub(first["sampled_tokens"]).isin([0, 1]).all()  # <answer> appended or sampled

    monkeypatch.setattr(ChunkStore, "write", real_write)
    reasoned.clear()
    assert run_eval(r2ec_run, r2ec_world, out) == 0
    assert sum(reasoned) == LIMIT - 8                          # only the samples no chunk held
    resumed, metrics = results(out)
    expected, expected_metrics = results(whole)
    pd.testing.assert_frame_equal(resumed, expected)
    assert metrics == expected_metrics and metrics["n"] == LIMIT and metrics["backend"] == "transformers"
    chunks = pd.concat([pd.read_parquet(f) for f in sorted((out / "partial").glob("chunk-*.parquet"))])
    assert metrics["reasoning_tokens_mean"] == pytest.approx(chunks["sampled_tokens"].mean())
    lengths = set(chunks["sampled_tokens"])
    assert 6 in lengths and min(lengths) < 6                   # some cut at the limit, some stopped at <answer>

    reasoned.clear()                                           # a finished eval reruns without reasoning
    assert run_eval(r2ec_run, r2ec_world, out) == 0 and reasoned == []
    reasoned.clear()                                           # a larger --limit reasons only the new samples
    assert run_eval(r2ec_run, r2ec_world, out, "--limit", str(LIMIT + 4)) == 0
    assert sum(reasoned) == 4 and results(out)[1]["n"] == LIMIT + 4


def test_fingerprint_refuses_another_evaluation(r2ec_run, r2ec_world, whole, tmp_path, capsys):
    out = tmp_path / "e"
    shutil.copytree(whole / "partial", out / "partial")
    assert run_eval(r2ec_run, r2ec_world, out, "--max-new-tokens", "5") == 2
    err = capsys.readouterr().err
    assert "different evaluation" in err and "max_new_tokens: 6 then, 5 now" in err


class StandInLLM:
    """``vllm.LLM`` as the R2ec eval uses it, generating with the real tiny model one prompt at a time
    (greedy, stopping at ``stop_token_ids`` and keeping the stop id, as vLLM does)."""

    seen: dict = {}

    def __init__(self, model, **kw):
        from reczero.models import load_model

        self.model, self.tokenizer = load_model(model)
        StandInLLM.seen.update(model=model, init=kw, prompts=[])

    def generate(self, prompts, params, use_tqdm=True):
        from transformers import GenerationConfig

        StandInLLM.seen["params"] = params
        StandInLLM.seen["prompts"] += prompts
        config = GenerationConfig(max_new_tokens=params["max_tokens"], do_sample=False, bos_token_id=None,
                                  eos_token_id=params["stop_token_ids"], pad_token_id=self.tokenizer.pad_token_id)
        outputs = []
        for prompt in prompts:
            ids = torch.tensor([prompt["prompt_token_ids"]])
            new = self.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), generation_config=config)
            outputs.append(types.SimpleNamespace(outputs=[types.SimpleNamespace(token_ids=new[0, ids.shape[1]:].tolist())]))
        return outputs


def test_vllm_backend_reads_token_ids_and_ranks_like_transformers(r2ec_run, r2ec_world, whole, tmp_path,
                                                                 monkeypatch, reasoned):
    from reczero.models import load_tokenizer
    from reczero.r2ec.model import answer_token_id

    fake = types.ModuleType("vllm")
    fake.LLM, fake.SamplingParams = StandInLLM, lambda **kw: kw
    monkeypatch.setitem(sys.modules, "vllm", fake)
    out = tmp_path / "v"
    assert run_eval(r2ec_run, r2ec_world, out, "--backend", "vllm", "--vllm-gpu-memory-utilization", "0.3") == 0
    assert reasoned == []                                      # the reasoning came from the engine
    seen = StandInLLM.seen
    assert seen["model"] == str(r2ec_run / "model") and seen["init"]["gpu_memory_utilization"] == 0.3
    assert len(seen["prompts"]) == LIMIT
    assert all(set(p) == {"prompt_token_ids"} and all(isinstance(t, int) for t in p["prompt_token_ids"])
               for p in seen["prompts"])                       # token ids, never text
    answer = answer_token_id(load_tokenizer(r2ec_run / "model"))
    params = seen["params"]
    assert answer in params["stop_token_ids"] and params["temperature"] == 0 and params["max_tokens"] == 6

    rankings, metrics = results(out)
    expected, expected_metrics = results(whole)
    pd.testing.assert_frame_equal(rankings, expected)
    assert metrics["backend"] == "vllm"
    assert {k: v for k, v in metrics.items() if k != "backend"} == \
        {k: v for k, v in expected_metrics.items() if k != "backend"}


def test_vllm_gpu_share_must_be_a_fraction():
    from reczero.config import ConfigError, EvalConfig

    assert EvalConfig(model="m", data="d").vllm_gpu_memory_utilization is None   # 0.9 rating, 0.5 R2ec
    with pytest.raises(ConfigError, match="vllm_gpu_memory_utilization must be in"):
        EvalConfig(model="m", data="d", vllm_gpu_memory_utilization=1.5)


def test_vllm_backend_missing_or_lora_is_a_clear_error(r2ec_run, r2ec_world, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "vllm", None)             # import vllm -> ImportError
    assert run_eval(r2ec_run, r2ec_world, tmp_path / "e", "--backend", "vllm") == 2
    assert "'gpu' extra" in capsys.readouterr().err

    lora = tmp_path / "lora"
    shutil.copytree(r2ec_run, lora)
    (lora / "model" / "adapter_config.json").write_text("{}")
    assert run_eval(lora, r2ec_world, tmp_path / "l", "--backend", "vllm") == 2
    assert "holds LoRA adapters; merge them" in capsys.readouterr().err


def test_chunked_eval_ranks_like_the_in_memory_validation(r2ec_run, r2ec_world, whole):
    """The trainer's rank_split (one pass, no chunks) on the same samples: each chunk row's vector
    belongs to its sample id (the same batches, longest prompt first, give the same numbers)."""
    import numpy as np

    from reczero.data import schema
    from reczero.models import load_model
    from reczero.r2ec.item_table import ITEM_VECTORS, ItemTable
    from reczero.rankings import ItemCatalog, load_ranking_rows

    model, tokenizer = load_model(r2ec_run / "model")
    df = schema.load_split(r2ec_world, "test", LIMIT)
    rows = load_ranking_rows(r2ec_world, "test").head(LIMIT).reset_index(drop=True)
    opts = R.prompt_options(R.run_recipe(r2ec_run))
    frame = R.rank_split(R2ecModel(model, tokenizer), df, rows, ItemCatalog.from_data(r2ec_world),
                         ItemTable.load(r2ec_run / "model" / ITEM_VECTORS), opts, schema.rating_scale(r2ec_world),
                         max_new_tokens=6, batch_size=BATCH)
    written, metrics = results(whole)
    assert list(frame["sample_id"]) == list(written["sample_id"])
    assert frame["rank"].tolist() == written["rank"].tolist()
    assert [list(t) for t in frame["top_items"]] == [list(t) for t in written["top_items"]]
    for mine, theirs in zip(frame["top_scores"], written["top_scores"], strict=True):
        np.testing.assert_array_equal(np.asarray(mine, dtype=np.float32), theirs)
    assert frame.attrs["reasoning_tokens"] == pytest.approx(metrics["reasoning_tokens_mean"])
