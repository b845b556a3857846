"""RecPO for real on a tiny Qwen2 and a tiny RecWorld: parameters change in a real step, a killed
run resumes to the same final step with the same samples per step, the best model and its item
table are saved, `reczero eval` of the run writes rankings.parquet and metrics.json, the ablations
run, the item loss's logQ correction and uniform negatives reach it, and every paper recipe prints
its plan with --dry-run without loading weights."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from reczero import cli
from reczero.train import r2ec as T

FAST = ["--num-generations", "2", "--per-device-train-batch-size", "4", "--max-completion-length", "6",
        "--history-window", "4", "--max-prompt-tokens", "256", "--learning-rate", "0.05", "--eval-steps", "0",
        "--temperature", "1.0"]


def _log(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]


def test_a_real_step_changes_every_parameter_and_logs_recpo(r2ec_world, r2ec_model, tmp_path):
    run = tmp_path / "run"
    assert cli.main(["train", "r2ec", "--data", str(r2ec_world), "--model", str(r2ec_model), "--out", str(run),
                     "--max-steps", "2", "--eval-steps", "2", "--eval-samples", "6", *FAST[:-4], "--temperature", "1.0"]) == 0
    before = load_file(r2ec_model / "model.safetensors")
    after = load_file(run / "model" / "model.safetensors")
    for name, value in before.items():
        if "embed_tokens" in name:           # one row longer: <answer> was added
            assert after[name].shape[0] == value.shape[0] + 1
            assert not torch.equal(after[name][: value.shape[0]], value)
        else:
            assert not torch.equal(after[name], value), f"{name} did not change"
    steps = [r for r in _log(run) if "reward" in r]
    assert [r["step"] for r in steps] == [1, 2]
    for r in steps:
        for key in ("reward", "rollout_ndcg", "rollout_ndcg@10", "advantage_spread", "reasoning_length",
                    "entropy", "token_loss", "item_loss"):
            assert key in r, key
        assert 0 <= r["reward"] <= 1 and 0 < r["reasoning_length"] <= 6 and len(r["samples"]) == 2
    valid = [r for r in _log(run) if "valid_ndcg@10" in r]
    assert [r["step"] for r in valid] == [2] and 0 <= valid[0]["valid_ndcg@10"] <= 1
    done = json.loads((run / "done.json").read_text())
    assert done["best_step"] == 2 and done["global_step"] == 2
    assert (run / "model" / "item_vectors.pt").is_file()

    # reczero eval of the run: greedy reasoning, full ranking; the saved item table is reused
    assert cli.main(["eval", "--model", str(run), "--data", str(r2ec_world), "--split", "test", "--limit", "12",
                     "--max-new-tokens", "6"]) == 0
    from reczero.rankings import read_rankings

    res = read_rankings(run / "eval" / "test")
    assert res.metrics["n"] == 12 and res.metrics["system"] == "r2ec" and res.metrics["n_items"] == 24
    assert res.rankings["rank"].notna().all() and res.metrics["reasoning_tokens_mean"] > 0
    stamp = torch.load(run / "model" / "item_vectors.pt", weights_only=True)["stamp"]
    assert cli.main(["eval", "--model", str(run), "--data", str(r2ec_world), "--split", "test", "--limit", "12",
                     "--max-new-tokens", "6", "--out", str(tmp_path / "again")]) == 0
    assert torch.load(run / "model" / "item_vectors.pt", weights_only=True)["stamp"] == stamp
    assert read_rankings(tmp_path / "again").metrics["ndcg@10"] == res.metrics["ndcg@10"]   # greedy: the same


def test_resume_after_interrupt_same_data_per_step(r2ec_world, r2ec_model, tmp_path, monkeypatch):
    args = ["--data", str(r2ec_world), "--model", str(r2ec_model), "--max-steps", "4", "--save-steps", "2", *FAST]
    full = tmp_path / "full"
    assert cli.main(["train", "r2ec", "--out", str(full), *args]) == 0

    real_callback = T.common.make_log_callback

    def interrupting(paths, extra=None):
        cb = real_callback(paths, extra)

        def on_step_end(self, args, state, control, **kw):
            if state.global_step == 3:
                raise KeyboardInterrupt

        cb.__class__.on_step_end = on_step_end
        return cb

    monkeypatch.setattr(T.common, "make_log_callback", interrupting)
    part = tmp_path / "part"
    assert cli.main(["train", "r2ec", "--out", str(part), *args]) == 130
    assert (part / "checkpoints" / "checkpoint-2").is_dir() and not (part / "done.json").exists()
    monkeypatch.setattr(T.common, "make_log_callback", real_callback)
    assert cli.main(["train", "r2ec", "--out", str(part), *args]) == 2          # refuses without --resume
    assert cli.main(["train", "r2ec", "--out", str(part), "--resume", *args]) == 0

    def per_step(run):
        return {r["step"]: r["samples"] for r in _log(run) if "reward" in r}

    assert json.loads((part / "done.json").read_text())["global_step"] == 4
    assert per_step(part) == per_step(full) and sorted(per_step(part)) == [1, 2, 3, 4]


def test_ablations_no_reasoning_and_no_token_loss(r2ec_world, r2ec_model, tmp_path):
    run = tmp_path / "plain"
    assert cli.main(["train", "r2ec", "--data", str(r2ec_world), "--model", str(r2ec_model), "--out", str(run),
                     "--max-steps", "1", "--no-reasoning", *FAST]) == 0
    [step] = [r for r in _log(run) if "reward" in r]
    assert step["reasoning_length"] == 0 and "token_loss" not in step and step["item_loss"] != 0
    assert json.loads((run / "done.json").read_text())["plan"]["loss"] == "item loss only (no reasoning)"
    off = tmp_path / "off"
    assert cli.main(["train", "r2ec", "--data", str(r2ec_world), "--model", str(r2ec_model), "--out", str(off),
                     "--max-steps", "1", "--no-token-loss", *FAST]) == 0
    [step] = [r for r in _log(off) if "reward" in r]
    assert step["reasoning_length"] > 0 and "token_loss" not in step


def test_item_loss_logq_reaches_the_trainer(r2ec_world, r2ec_model, tmp_path, monkeypatch):
    """--item-loss-logq: a real step's item loss gets log q of exactly its batch's targets, q being
    each item's share of the training interactions (counted here by hand with pandas)."""
    import numpy as np

    from reczero.r2ec import losses
    from reczero.rankings import ItemCatalog, load_ranking_rows

    rows = load_ranking_rows(r2ec_world, "train", timestamps=True)
    catalog = ItemCatalog.from_data(r2ec_world)
    first = rows.sort_values("timestamp", kind="stable").groupby("user_id").head(1)   # each user's earliest row
    counted = np.concatenate([catalog.index(list(rows["item_id"])),
                              catalog.index([i for h in first["history"] for i in h])])
    counts = np.maximum(np.bincount(counted, minlength=len(catalog)), 1)
    log_q = T.item_log_q(r2ec_world, catalog)
    torch.testing.assert_close(log_q, torch.from_numpy(np.log(counts / counts.sum())).float())

    seen, real = [], losses.item_loss

    def spy(users, items, labels, advantages, marked, *, tau, log_q=None):
        seen.append((items.shape[0], log_q))
        return real(users, items, labels, advantages, marked, tau=tau, log_q=log_q)

    monkeypatch.setattr(losses, "item_loss", spy)
    run = tmp_path / "logq"
    assert cli.main(["train", "r2ec", "--data", str(r2ec_world), "--model", str(r2ec_model), "--out", str(run),
                     "--max-steps", "1", "--item-loss-logq", *FAST]) == 0
    [step] = [r for r in _log(run) if "reward" in r]
    samples = set(step["samples"])
    targets = rows.loc[rows["sample_id"].isin(samples), "item_id"]
    distinct = np.unique(catalog.index(list(targets)))
    assert seen and all(n == len(distinct) for n, _ in seen)
    for _, got in seen:
        torch.testing.assert_close(got, log_q[torch.from_numpy(distinct)])
    assert "logQ-corrected" in json.loads((run / "done.json").read_text())["plan"]["loss"]


def test_uniform_negatives_join_the_item_loss_with_the_mixture_q(r2ec_world, r2ec_model, tmp_path, monkeypatch):
    """--item-loss-uniform-negatives 3: three catalogue items, none a batch target, follow the
    targets in the item loss; with logQ every candidate's q is the mixture's U·p_j + N/|C|."""
    from reczero.r2ec import losses
    from reczero.rankings import ItemCatalog

    catalog = ItemCatalog.from_data(r2ec_world)
    p = T.item_log_q(r2ec_world, catalog).exp()
    cls = T._trainer_class()
    seen, drawn, real_loss, real_draw = [], [], losses.item_loss, cls.uniform_negatives

    def draw(self, exclude):
        out = real_draw(self, exclude)
        drawn.append((exclude.clone(), out.clone()))
        return out

    def spy(users, items, labels, advantages, marked, *, tau, log_q=None):
        seen.append((items.shape[0], log_q))
        return real_loss(users, items, labels, advantages, marked, tau=tau, log_q=log_q)

    monkeypatch.setattr(cls, "uniform_negatives", draw)
    monkeypatch.setattr(losses, "item_loss", spy)
    run = tmp_path / "mixed"
    assert cli.main(["train", "r2ec", "--data", str(r2ec_world), "--model", str(r2ec_model), "--out", str(run),
                     "--max-steps", "2", "--item-loss-logq", "--item-loss-uniform-negatives", "3", *FAST]) == 0
    assert len(seen) == len(drawn) == 2
    for (targets, negatives), (n, log_q) in zip(drawn, seen, strict=True):
        assert len(negatives) == 3 and not set(negatives.tolist()) & set(targets.tolist())
        assert n == len(targets) + 3
        users = 4 / 2                                        # 4 rollouts of G = 2 per mini-batch
        expected = torch.log(users * p[torch.cat([targets, negatives])] + 3 / len(catalog))
        torch.testing.assert_close(log_q, expected)
    assert not torch.equal(drawn[0][1], drawn[1][1])             # a fresh draw each step
    assert "3 uniform negatives" in json.loads((run / "done.json").read_text())["plan"]["loss"]


def test_lora_run_is_saved_merged_with_the_answer_row_at_the_vocabulary_mean(r2ec_world, r2ec_model, tmp_path):
    from reczero.models import load_model
    from reczero.r2ec.model import answer_token_id

    run = tmp_path / "lora"
    assert cli.main(["train", "r2ec", "--data", str(r2ec_world), "--model", str(r2ec_model), "--out", str(run),
                     "--max-steps", "1", "--use-lora", "--lora-r", "2", "--lora-alpha", "4", *FAST]) == 0
    assert not (run / "model" / "adapter_config.json").exists() and not (run / "best").exists()
    model, tok = load_model(run)
    base = load_file(r2ec_model / "model.safetensors")
    embed = base["model.embed_tokens.weight"]
    assert answer_token_id(tok) == embed.shape[0]
    merged = model.get_input_embeddings().weight.detach()
    torch.testing.assert_close(merged[-1], embed.mean(dim=0))            # the deterministic <answer> row
    torch.testing.assert_close(merged[:-1], embed)                       # LoRA leaves the embeddings alone
    q = "model.layers.0.self_attn.q_proj.weight"
    assert not torch.equal(model.state_dict()[q], base[q])              # the adapter was merged in
    assert (run / "model" / "item_vectors.pt").is_file()


@pytest.mark.parametrize("name", ["games", "instruments", "cds"])
def test_paper_recipes_dry_run(name, capsys):
    recipe = Path(__file__).parents[1] / "configs" / "paper" / f"r2ec-{name}.yaml"
    assert cli.main(["train", "r2ec", "--config", str(recipe), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "dry run: no weights or data loaded" in out and "google/gemma-2-2b-it" in out
    assert "users_per_step           12" in out and "r=4 alpha=128" in out and "temperature=2.0 top_k=50" in out
    assert "max_reasoning_tokens     640" in out and "(1-0.05)*NDCG@1000" in out
    from reczero.config import R2ecRecipe, resolve

    cfg = resolve(R2ecRecipe, recipe)
    assert (cfg.learning_rate, cfg.num_train_epochs, cfg.num_generations, cfg.tau) == (1e-5, 3.0, 4, 0.02)


def test_dry_run_loads_no_weights_nor_torch():
    import subprocess
    import sys

    recipe = Path(__file__).parents[1] / "configs" / "paper" / "r2ec-games.yaml"
    code = ("import sys; from reczero import cli; rc = cli.main(['train', 'r2ec', '--config', %r, '--dry-run']); "
            "print('heavy:', sorted(m for m in ('torch', 'transformers', 'trl') if m in sys.modules)); sys.exit(rc)")
    out = subprocess.run([sys.executable, "-c", code % str(recipe)], capture_output=True, text=True, check=True).stdout
    assert "heavy: []" in out
