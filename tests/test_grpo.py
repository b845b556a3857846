"""RecZero GRPO on TRL, for real, on a hidden-size-8 Qwen2: rewards logged, parameters updated,
model saved loadable, rewards passed in as (function, weight) pairs, TensorBoard events written with
--report-to tensorboard, and a killed run resumed to the same final step without repeated or skipped data.
(``world`` and ``tiny_model`` come from conftest.py.)"""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from reczero import cli
from reczero.config import GRPORecipe
from reczero.rewards import AnswerReward, RewardSpec
from reczero.train import grpo

FAST = ["--max-completion-length", "8", "--num-generations", "2", "--per-device-train-batch-size", "2",
        "--max-prompt-tokens", "192", "--prompt-history", "3", "--prompt-item-reviews", "1",
        "--eval-steps", "0", "--learning-rate", "0.1"]


def _log(run):
    return [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]


class LengthReward:
    """Stands in for the format reward so that a random model's group rewards differ (its real
    format reward is the same penalty for every sample, hence zero advantages and no update)."""

    __name__ = "length"

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


def _recipe(world, tiny_model, out, *flags: str) -> GRPORecipe:
    """The recipe the CLI would resolve from ``--data --model --out`` and ``flags`` (FAST included)."""
    from reczero.cli import build_parser
    from reczero.config import from_args

    args = build_parser().parse_args(["train", "grpo", "--data", str(world), "--model", str(tiny_model),
                                      "--out", str(out), *FAST, *flags])
    return from_args(GRPORecipe, args)


def test_parameters_change_when_rewards_differ(world, tiny_model, tmp_path):
    from reczero.data.schema import RatingScale

    run = tmp_path / "run"
    rewards = [RewardSpec(LengthReward(), 1.0), (AnswerReward(RatingScale(1, 5)), 0.5)]   # a spec or a plain pair
    assert grpo.train_grpo(_recipe(world, tiny_model, run, "--max-steps", "2", "--save-steps", "2"),
                           rewards=rewards) == 0
    before, after = load_file(tiny_model / "model.safetensors"), load_file(run / "model" / "model.safetensors")
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert len(changed) == len(before), f"unchanged: {set(before) - set(changed)}"
    log = _log(run)
    assert any(r.get("grad_norm", 0) > 0 for r in log)
    assert all("rewards/length/mean" in r and "rewards/format/mean" not in r for r in log if "loss" in r)
    # the weights reached TRL's GRPOConfig in the functions' order, the monitor last at weight 0
    args = torch.load(run / "checkpoints" / "checkpoint-2" / "training_args.bin", weights_only=False)
    assert args.reward_weights == [1.0, 0.5, 0.0]
    assert json.loads((run / "done.json").read_text())["rewards"] == {"length": 1.0, "answer": 0.5, "monitor": 0.0}


def test_default_rewards_are_format_and_answer_at_weight_one(world, tiny_model, tmp_path):
    from reczero.data.schema import RatingScale

    specs = grpo.default_rewards(_recipe(world, tiny_model, tmp_path / "r", "--format-bonus", "0.25"), RatingScale(1, 5))
    assert [(f.__name__, w) for f, w in specs] == [("format", 1.0), ("answer", 1.0)]
    assert specs[0].func.bonus == 0.25


def test_report_to_tensorboard_writes_event_files(world, tiny_model, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = tmp_path / "run"
    assert cli.main(["train", "grpo", "--data", str(world), "--model", str(tiny_model), "--out", str(run),
                     "--max-steps", "1", "--report-to", "tensorboard", *FAST]) == 0
    events = sorted(run.glob("checkpoints/runs/*/events.out.tfevents.*"))
    assert events, sorted(p.relative_to(run) for p in run.rglob("*"))
    scalars = EventAccumulator(str(events[0].parent)).Reload().Tags()["scalars"]
    assert "train/rewards/format/mean" in scalars and "train/loss" in scalars
    assert [r["step"] for r in _log(run) if "loss" in r] == [1]          # log.jsonl is written as well


def test_report_to_a_tracker_that_is_not_installed_is_refused_before_loading(world, tmp_path, capsys):
    import importlib.util

    missing = next((m for m in ("wandb", "mlflow") if importlib.util.find_spec(m) is None), None)
    if missing is None:
        pytest.skip("wandb and mlflow are both installed")
    run = tmp_path / "run"
    assert cli.main(["train", "grpo", "--data", str(world), "--model", str(tmp_path / "no-model"), "--out", str(run),
                     "--report-to", missing, *FAST]) == 2
    assert f"--report-to {missing} needs the '{missing}' package" in capsys.readouterr().err
    assert not run.exists()                      # refused before the run directory is written


def test_resume_after_interrupt_same_data(world, tiny_model, tmp_path):
    args = ["--data", str(world), "--model", str(tiny_model), "--max-steps", "4", "--save-steps", "2", *FAST]
    full = tmp_path / "full"
    assert cli.main(["train", "grpo", "--out", str(full), *args]) == 0

    # Interrupt the second run after step 3 (checkpoint-2 is on disk, step 3 is lost).
    from transformers import TrainerCallback

    class Interrupt(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            if state.global_step == 3:
                raise KeyboardInterrupt

    part = tmp_path / "part"
    with pytest.raises(KeyboardInterrupt):
        grpo.train_grpo(_recipe(world, tiny_model, part, "--max-steps", "4", "--save-steps", "2"),
                        callbacks=[Interrupt()])
    assert (part / "checkpoints" / "checkpoint-2").is_dir() and not (part / "done.json").exists()
    # without --resume the run refuses to start over the checkpoints
    assert cli.main(["train", "grpo", "--out", str(part), *args]) == 2
    assert cli.main(["train", "grpo", "--out", str(part), "--resume", *args]) == 0

    def per_step(run):
        return {r["step"]: r["samples"] for r in _log(run) if "rewards/format/mean" in r}

    assert json.loads((part / "done.json").read_text())["global_step"] == 4
    assert per_step(part) == per_step(full)      # each step once, the same prompts as uninterrupted
    assert sorted(per_step(part)) == [1, 2, 3, 4]
