"""RecZero: pure reinforcement learning of the Think-before-Recommendation answer, on TRL's GRPOTrainer.

What this chose (the paper's defaults, all overridable in the recipe):

* **Algorithm**: GRPO as implemented by TRL — no hand-written RL loop. ``num_generations`` (G=8)
  completions per prompt, sampled at temperature 1.0; advantages are rewards z-scored within each
  group (``scale_rewards="group"``); the loss aggregation is TRL's ``loss_type`` ("grpo" by default,
  as in the paper; "dapo"/"dr_grpo" remove its length bias). **No KL term by default** (``beta=0``),
  so no reference model is loaded. ``entropy_coef`` (TRL) is available against collapse.
* **Rewards**: rule-based and plain (``reczero.rewards``): the format reward (+0.5 when the four tags
  appear once each, in order, non-empty, and the rate parses inside the scale; −0.5 otherwise) plus
  the answer reward ``1 − |y − ŷ| / max_error`` (0 when unparsable), weight 1 each
  (:func:`default_rewards`). No teacher, no reward model. ``train_grpo(recipe, rewards=[...])``
  takes other ``(func, weight)`` pairs.
* **Monitoring**: a zero-weight reward function logs what collapse looks like — the share of
  well-formed and parsable answers, the spread and number of distinct predicted ratings in the
  batch — next to TRL's own ``frac_reward_zero_std`` and ``entropy``. The sample ids of each step are
  logged too, so a resumed run can be checked for repeated or skipped data.
* **Batch**: ``per_device_train_batch_size`` counts completions (TRL), so one step sees
  ``batch × accumulation × world / G`` prompts.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any

from reczero.config import GRPORecipe
from reczero.data import schema
from reczero.rewards import AnswerReward, FormatReward, RewardSpec
from reczero.train import common

log = logging.getLogger(__name__)


class RolloutMonitor:
    """A zero-weight reward function that only logs rollout statistics (collapse signals).

    Returns 0.0 for every completion; with weight 0 it never changes the advantages.
    """

    __name__ = "monitor"

    def __init__(self, scale: schema.RatingScale, template: str) -> None:
        self.scale = scale
        self.template = template
        self.samples = common.StepSamples()

    def __call__(self, completions, rating, sample_id=None, log_metric=None, **kwargs) -> list[float]:
        from reczero.rewards import check_format, completion_text, parse_rating

        texts = [completion_text(c) for c in completions]
        preds = [parse_rating(t, self.scale, self.template) for t in texts]
        parsed = [p for p in preds if p is not None]
        if sample_id is not None:
            self.samples.add(sample_id)
        if log_metric is not None:
            log_metric("format_rate", sum(check_format(t, self.template) for t in texts) / max(len(texts), 1))
            log_metric("parse_rate", len(parsed) / max(len(texts), 1))
            if parsed:
                mean = sum(parsed) / len(parsed)
                log_metric("pred_mean", mean)
                log_metric("pred_std", math.sqrt(sum((p - mean) ** 2 for p in parsed) / len(parsed)))
                log_metric("pred_distinct", float(len(set(parsed))))
                errs = [abs(p - y) for p, y in zip(preds, rating, strict=True) if p is not None]
                log_metric("train_mae_parsed", sum(errs) / len(errs))
        return [0.0] * len(texts)


def plan(recipe: GRPORecipe) -> dict[str, Any]:
    """The resolved plan of a run: batch arithmetic and step count, from the recipe and manifest only."""
    group = common.GroupSteps.of(recipe)
    return {
        "model": recipe.model, "data": recipe.data, "out": recipe.out,
        "world_size": group.world_size,
        "completions_per_step": group.completions_per_step,
        "prompts_per_step": group.prompts_per_step,
        "generations_per_prompt": recipe.num_generations,
        "train_samples": group.train_samples,
        "steps": group.steps,
        "learning_rate": recipe.learning_rate, "beta": recipe.beta, "temperature": recipe.temperature,
        "loss_type": recipe.loss_type, "lora": recipe.use_lora, "vllm": recipe.use_vllm and recipe.vllm_mode,
        "template": recipe.template, "max_completion_length": recipe.max_completion_length,
    }


def default_rewards(recipe: GRPORecipe, scale: schema.RatingScale) -> list[RewardSpec]:
    """RecZero's rewards: the format reward and the answer reward, weight 1 each (the paper's sum)."""
    return [RewardSpec(FormatReward(scale, recipe.template, recipe.format_bonus, recipe.format_penalty), 1.0),
            RewardSpec(AnswerReward(scale, recipe.template, recipe.max_error), 1.0)]


def grpo_args(recipe: GRPORecipe, output_dir: str, use_cpu: bool):
    """TRL's ``GRPOConfig`` of ``recipe`` (the reward weights are set with the rewards, by ``TrainerRun.build_trainer``)."""
    return common.grpo_config(
        recipe, output_dir, use_cpu,
        max_completion_length=recipe.max_completion_length,
        beta=recipe.beta,
        loss_type=recipe.loss_type,
        scale_rewards=recipe.scale_rewards,
        entropy_coef=recipe.entropy_coef,
        mask_truncated_completions=recipe.mask_truncated_completions,
    )


def train_grpo(recipe: GRPORecipe, *, rewards: Sequence[RewardSpec] | None = None, callbacks: Sequence = ()) -> int:
    """`reczero train grpo`: run (or resume) RecZero GRPO; returns 0 on success.

    ``rewards``: ``(func, weight)`` pairs on TRL's contract (default :func:`default_rewards`); the
    zero-weight :class:`RolloutMonitor` is always added. ``callbacks``: extra ``TrainerCallback``s.
    """
    run = common.TrainerRun.start(recipe, plan, stage="grpo", title="GRPO")
    if run is None:
        return 0
    from trl import GRPOTrainer

    model, tokenizer = run.load_model()
    scale = schema.rating_scale(recipe.data)
    limit = common.reachable_samples(recipe, run.plan["prompts_per_step"])
    records = common.prompt_records(recipe.data, "train", recipe, tokenizer, limit=limit,
                                    seed=recipe.seed, shuffle=limit is not None)
    monitor = RolloutMonitor(scale, recipe.template)
    specs = [*(default_rewards(recipe, scale) if rewards is None else rewards), RewardSpec(monitor, 0.0)]
    trainer = run.build_trainer(GRPOTrainer, grpo_args(recipe, str(run.paths.checkpoints), run.use_cpu), model,
                                tokenizer, records, rewards=specs, log_extra=monitor.samples.drain,
                                callbacks=[*run.rating_validation(tokenizer), *callbacks])
    return run.finish(trainer, tokenizer, run.train(trainer), plan=run.plan)
