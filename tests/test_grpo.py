"""RecZero GRPO on TRL, for real, on a hidden-size-8 Qwen2: rewards logged, parameters updated,
model saved loadable, and a killed run resumed to the same final step without repeated or skipped data."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from reczero import cli
from reczero.train import grpo

FAST = ["--max-completion-length", "8", "--num-generations", "2", "--per-device-train-batch-size", "2",
        "--max-prompt-tokens", "192", "--prompt-history", "3", "--prompt-item-reviews", "1",
        "--eval-steps", "0", "--learning-rate", "0.1"]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    out = tmp_path_factory.mktemp("world")
    assert cli.main(["data", "synth", "--out", str(out / "data"), "--users", "40", "--items", "24"]) == 0
    return out / "data"


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    from reczero.models import make_test_model

    return make_test_model(tmp_path_factory.mktemp("model") / "m", hidden_size=8, num_layers=2)


def _log(run):
    return [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]


class LengthReward:
    """Stands in for the format reward so that a random model's group rewards differ (its real
    format reward is the same penalty for every sample, hence zero advantages and no update)."""

    def __init__(self, *args, **kwargs):
        pass

    def __call__(self, completions, **kwargs):
        from reczero.rewards import completion_text

        return [len(completion_text(c)) / 50.0 for c in completions]


def test_real_rewards_on_random_model(world, tiny_model, tmp_path):
    run = tmp_path / "run"
    assert cli.main(["train", "grpo", "--data", str(world), "--model", str(tiny_model), "--out", str(run),
                     "--max-steps", "2", *FAST]) == 0
    steps = [r for r in _log(run) if "rewards/format/mean" in r]
    assert [r["step"] for r in steps] == [1, 2]
    for r in steps:
        # a random-init model writes no tags: the format penalty, no answer reward, nothing parsed
        assert r["rewards/format/mean"] == pytest.approx(-0.5)
        assert r["rewards/answer/mean"] == pytest.approx(0.0)
        assert r["parse_rate"] == 0.0 and r["format_rate"] == 0.0
        assert r["frac_reward_zero_std"] == 1.0 and "entropy" in r
        assert len(r["samples"]) == 1            # one prompt (2 completions) per step
    assert (run / "done.json").is_file() and (run / "config.yaml").is_file()
    from reczero.models import load_model

    model, tok = load_model(run)
    assert model.config.hidden_size == 8 and tok.padding_side == "left"


def test_parameters_change_when_rewards_differ(world, tiny_model, tmp_path, monkeypatch):
    monkeypatch.setattr("reczero.rewards.FormatReward", LengthReward)
    run = tmp_path / "run"
    assert cli.main(["train", "grpo", "--data", str(world), "--model", str(tiny_model), "--out", str(run),
                     "--max-steps", "2", *FAST]) == 0
    before, after = load_file(tiny_model / "model.safetensors"), load_file(run / "model" / "model.safetensors")
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert len(changed) == len(before), f"unchanged: {set(before) - set(changed)}"
    assert any(r.get("grad_norm", 0) > 0 for r in _log(run))


def test_resume_after_interrupt_same_data(world, tiny_model, tmp_path, monkeypatch):
    args = ["--data", str(world), "--model", str(tiny_model), "--max-steps", "4", "--save-steps", "2", *FAST]
    full = tmp_path / "full"
    assert cli.main(["train", "grpo", "--out", str(full), *args]) == 0

    # Interrupt the second run after step 3 (checkpoint-2 is on disk, step 3 is lost).
    real_callback = grpo.common.make_log_callback

    def interrupting(paths, extra=None):
        from transformers import TrainerCallback

        class Interrupt(TrainerCallback):
            def on_step_end(self, args, state, control, **kw):
                if state.global_step == 3:
                    raise KeyboardInterrupt

        cb = real_callback(paths, extra)
        cb.__class__.on_step_end = Interrupt.on_step_end
        return cb

    monkeypatch.setattr(grpo.common, "make_log_callback", interrupting)
    part = tmp_path / "part"
    assert cli.main(["train", "grpo", "--out", str(part), *args]) == 130
    assert (part / "checkpoints" / "checkpoint-2").is_dir() and not (part / "done.json").exists()
    monkeypatch.setattr(grpo.common, "make_log_callback", real_callback)
    # without --resume the run refuses to start over the checkpoints
    assert cli.main(["train", "grpo", "--out", str(part), *args]) == 2
    assert cli.main(["train", "grpo", "--out", str(part), "--resume", *args]) == 0

    def per_step(run):
        return {r["step"]: r["samples"] for r in _log(run) if "rewards/format/mean" in r}

    assert json.loads((part / "done.json").read_text())["global_step"] == 4
    assert per_step(part) == per_step(full)      # each step once, the same prompts as uninterrupted
    assert sorted(per_step(part)) == [1, 2, 3, 4]
