"""What every trainer shares: the run-directory layout, prompt datasets, logging, validation, resume,
and the one path along which a trainer is built and run (:class:`TrainerRun`).

Choices:

* **One construction path.** GRPO, SFT and R2ec's RecPO differ in their TRL trainer class, its
  config, their records, rewards and callbacks; everything else is :class:`TrainerRun`:
  ``start`` (dry run, run directory, resume point, plan), ``load_model`` (dtype, prompt-option
  check, threads), ``build_trainer`` (the JSONL log and validation callbacks, LoRA, rewards as
  ``(func, weight)`` pairs turned into TRL's ``reward_funcs`` + ``GRPOConfig.reward_weights`` by
  ``rewards.trl_rewards``, the compact progress bar), ``train`` (resume from the last checkpoint)
  and ``finish`` (model, tokenizer, ``done.json``). TRL stays the training loop. Two hooks serve
  a trainer whose pieces need the trainer object (RecPO's validation ranks with the trainer's
  model and item table): ``build_trainer(late_callbacks=...)`` builds callbacks from the trainer
  once it exists, and ``finish(save=...)`` writes ``RUN/model`` its own way (RecPO: the best
  checkpoint by valid NDCG@10, LoRA merged, with its item table) instead of the last weights.
* **Group-sampling trainers** (GRPO, RecPO) share their batch arithmetic (:class:`GroupSteps`:
  TRL's batch counts completions, G per prompt), the samples a short run can reach
  (:func:`reachable_samples`), the ``GRPOConfig`` fields they have in common (:func:`grpo_config`)
  and the per-step sample ids of ``log.jsonl`` (:class:`StepSamples`).
* **Experiment tracking as the ecosystem does it**: ``--report-to`` is handed to transformers'
  ``report_to`` (TensorBoard event files land in ``RUN/checkpoints/runs/``); ``log.jsonl`` is
  written whatever it says.

* A run directory holds ``config.yaml``, ``log.jsonl`` (one JSON object per logged step),
  ``checkpoints/`` (the HF Trainer's resumable state), ``model/`` (written only when training
  finished) and ``done.json`` (summary). A finished run is never silently overwritten; an
  interrupted one is continued with ``--resume``.
* On resume, ``log.jsonl`` lines past the checkpoint's step are dropped before training goes on, so
  the log has each step exactly once.
* Validation MAE during training reuses ``reczero.evaluate.predict_ratings`` (greedy, the same
  parsing and fallback as ``reczero eval``), so the curve and the final evaluation agree.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import math
import os
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from reczero.config import GRPORecipe, PromptOptions, SFTRecipe, TrainCommon, save_config
from reczero.data import schema
from reczero.errors import ReczeroError
from reczero.io import atomic_write_text, read_jsonl

log = logging.getLogger(__name__)

RATING_TRAINERS = {GRPORecipe: "train grpo", SFTRecipe: "train sft"}   # they train rating predictors


@dataclass(frozen=True)
class RunPaths:
    root: Path

    @property
    def model(self) -> Path:
        return self.root / "model"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def log(self) -> Path:
        return self.root / "log.jsonl"

    @property
    def done(self) -> Path:
        return self.root / "done.json"

    def is_done(self) -> bool:
        return self.done.is_file() and (self.model / "config.json").is_file()


def last_checkpoint(paths: RunPaths) -> Path | None:
    if not paths.checkpoints.is_dir():
        return None
    ckpts = [p for p in paths.checkpoints.glob("checkpoint-*") if p.name.split("-")[-1].isdigit()]
    return max(ckpts, key=lambda p: int(p.name.split("-")[-1])) if ckpts else None


def print_plan(stage: str, plan: dict[str, Any], dry_run: bool = False) -> None:
    """Print what a training run will do, one ``key value`` line each (``--dry-run`` stops there)."""
    print(f"{stage} plan" + (" (dry run: no weights or data loaded)" if dry_run else ""))
    for key, value in plan.items():
        print(f"  {key:24s} {value}")


def prepare_run(recipe: TrainCommon) -> tuple[RunPaths, Path | None]:
    """Check the data (a rating trainer refuses an implicit dataset) and the run directory against
    --resume, write config.yaml; return (paths, checkpoint to resume)."""
    if (command := RATING_TRAINERS.get(type(recipe))) is not None:
        schema.require_ratings(recipe.data, command)
    paths = RunPaths(Path(recipe.out))
    ckpt = last_checkpoint(paths)
    if paths.is_done() and not recipe.resume:
        raise ReczeroError(f"{paths.root} already holds a finished run; choose another --out (or --resume to skip)")
    if ckpt is not None and not recipe.resume:
        raise ReczeroError(f"{paths.root} holds checkpoints of an interrupted run ({ckpt.name}); "
                           "pass --resume to continue it or choose another --out")
    if recipe.resume and ckpt is not None:
        step = int(ckpt.name.split("-")[-1])
        truncate_log(paths.log, step)
        log.info("resuming from %s (step %d)", ckpt, step)
    elif recipe.resume and not paths.is_done():
        log.warning("--resume given but %s has no checkpoint yet: starting from the beginning", paths.root)
        paths.log.unlink(missing_ok=True)
    elif not recipe.resume:
        paths.log.unlink(missing_ok=True)
    save_config(recipe, paths.root)
    return paths, ckpt


def truncate_log(path: Path, max_step: int) -> None:
    """Keep only log lines with step <= max_step (and drop a torn last line); rewritten atomically."""
    if not path.is_file():
        return
    kept = [rec for _, rec in read_jsonl(path) if rec.get("step", 0) <= max_step]
    atomic_write_text(path, "".join(json.dumps(rec) + "\n" for rec in kept))


def append_jsonl(path: Path, record: dict[str, Any]) -> None:
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(record, default=_jsonable) + "\n")


def _jsonable(x: Any) -> Any:
    if hasattr(x, "item"):
        return x.item()
    return str(x)


def read_log(path: str | Path) -> list[dict[str, Any]]:
    """The records of a RUN/log.jsonl (a torn last line is skipped); empty when there is none."""
    path = Path(path)
    return [rec for _, rec in read_jsonl(path)] if path.is_file() else []


def prompt_records(data_dir: str, split: str, opts: PromptOptions, tokenizer, *, limit: int | None = None,
                   seed: int = 0, shuffle: bool = False) -> list[dict[str, Any]]:
    """Split rows -> records with a conversational ``prompt`` (system + user messages) and the target.

    The prompt is trimmed to ``opts.max_prompt_tokens`` by ``prompts.build_messages``. Extra columns
    (``rating``, ``sample_id``, averages) reach the reward functions as keyword arguments (TRL).
    """
    from reczero import prompts

    df, order = split_rows(data_dir, split, limit=limit, seed=seed, shuffle=shuffle)
    scale = schema.rating_scale(data_dir)
    records = []
    for i in order:
        row = df.iloc[int(i)].to_dict()
        records.append({
            "prompt": prompts.build_messages(row, opts, tokenizer, scale),
            "rating": float(row["rating"]),
            "sample_id": row["sample_id"],
            "user_avg": _nan_to_none(row.get("user_avg")),
            "item_avg": _nan_to_none(row.get("item_avg")),
        })
    return records


def split_rows(data_dir: str, split: str, *, limit: int | None = None, seed: int = 0, shuffle: bool = False):
    """A split's rows (DataFrame) and the order its training records take: every row in order, or a
    permutation seeded by ``seed``; the first ``limit`` of it. An empty split is an error."""
    import numpy as np

    df = schema.load_split(data_dir, split)
    if len(df) == 0:
        raise ReczeroError(f"{data_dir}: the {split} split is empty")
    order = np.random.default_rng(seed).permutation(len(df)) if shuffle else np.arange(len(df))
    return df, order if limit is None else order[:limit]


def _nan_to_none(x: Any) -> float | None:
    if x is None:
        return None
    x = float(x)
    return None if math.isnan(x) else x


def make_log_callback(paths: RunPaths, extra_source=None):
    """A TrainerCallback writing each ``on_log`` as one line of RUN/log.jsonl (plus ``extra_source()``)."""
    from transformers import TrainerCallback

    class JsonlLogCallback(TrainerCallback):
        def __init__(self) -> None:
            self.t0 = time.time()

        def on_log(self, args, state, control, logs=None, **kwargs):
            if not state.is_world_process_zero or not logs:
                return
            record: dict[str, Any] = {"step": state.global_step, "epoch": state.epoch,
                                      "time": round(time.time() - self.t0, 3)}
            record.update({k: v for k, v in logs.items() if isinstance(v, int | float | str | type(None))})
            if extra_source is not None:
                record.update(extra_source())
            append_jsonl(paths.log, record)

    return JsonlLogCallback()


class StepSamples:
    """The sample ids of the current optimiser step, one per prompt (TRL repeats each prompt G times in
    a row), drained into each log.jsonl line as ``samples`` (``build_trainer(log_extra=samples.drain)``)
    so that a resumed run can be checked for repeated or skipped data."""

    def __init__(self) -> None:
        self.ids: list[str] = []

    def add(self, sample_ids) -> None:
        for sid in sample_ids:
            if not self.ids or self.ids[-1] != sid:
                self.ids.append(sid)

    def drain(self) -> dict[str, Any]:
        ids, self.ids = self.ids, []
        return {"samples": ids}


def make_validation_callback(paths: RunPaths, recipe: TrainCommon, tokenizer, *, scale, max_new_tokens: int):
    """Greedy validation MAE on ``recipe.eval_samples`` valid samples every ``recipe.eval_steps`` steps
    and at the end; appended to log.jsonl as ``val_mae`` etc."""
    from transformers import TrainerCallback

    from reczero.evaluate import predict_ratings

    df = schema.load_split(recipe.data, "valid", limit=recipe.eval_samples)
    global_mean = schema.train_global_mean(recipe.data)

    class ValidationCallback(TrainerCallback):
        last_step = -1

        def run(self, model, step: int) -> None:
            if step == self.last_step or len(df) == 0:
                return
            self.last_step = step
            was_training = model.training
            model.eval()
            t0 = time.time()
            preds = predict_ratings(model, tokenizer, df, recipe, scale, global_mean=global_mean,
                                    batch_size=32, max_new_tokens=max_new_tokens, progress=False)
            model.train(was_training)
            err = (preds["prediction"] - preds["rating"]).abs()
            record = {"step": step, "val_mae": float(err.mean()),
                      "val_rmse": float(((preds["prediction"] - preds["rating"]) ** 2).mean() ** 0.5),
                      "val_parse_rate": float(preds["parsed"].mean()),
                      "val_pred_std": float(preds["prediction"].std(ddof=0)),
                      "val_n_distinct": int(preds["prediction"].nunique()),
                      "val_seconds": round(time.time() - t0, 2)}
            append_jsonl(paths.log, record)
            log.info("step %d: val MAE %.3f (parse rate %.2f, prediction std %.2f, %d distinct)", step,
                     record["val_mae"], record["val_parse_rate"], record["val_pred_std"], record["val_n_distinct"])

        def on_step_end(self, args, state, control, model=None, **kwargs):
            if recipe.eval_steps > 0 and state.global_step % recipe.eval_steps == 0 and state.is_world_process_zero:
                self.run(model, state.global_step)

        def on_train_begin(self, args, state, control, model=None, **kwargs):
            if recipe.eval_steps > 0 and state.global_step == 0 and state.is_world_process_zero:
                self.run(model, 0)

        def on_train_end(self, args, state, control, model=None, **kwargs):
            if recipe.eval_steps > 0 and state.is_world_process_zero:
                self.run(model, state.global_step)

    return ValidationCallback()


def trainer_kwargs(recipe: TrainCommon, output_dir: str, use_cpu: bool) -> dict[str, Any]:
    """The TrainingArguments fields every trainer here shares (GRPOConfig and SFTConfig add theirs)."""
    return dict(
        output_dir=output_dir,
        learning_rate=recipe.learning_rate,
        num_train_epochs=recipe.num_train_epochs,
        max_steps=recipe.max_steps,
        per_device_train_batch_size=recipe.per_device_train_batch_size,
        gradient_accumulation_steps=recipe.gradient_accumulation_steps,
        lr_scheduler_type=recipe.lr_scheduler_type,
        warmup_steps=recipe.warmup_ratio,  # transformers 5: a float < 1 is a ratio of the total steps
        logging_steps=recipe.logging_steps,
        save_strategy="steps",
        save_steps=recipe.save_steps,
        save_total_limit=recipe.save_total_limit,
        bf16=recipe.bf16,
        use_cpu=use_cpu,
        report_to=recipe.report_to,
        seed=recipe.seed,
        disable_tqdm=False,
        gradient_checkpointing=recipe.gradient_checkpointing,   # always passed: TRL's own default is True
    )


def grpo_config(recipe: Any, output_dir: str, use_cpu: bool, **fields: Any):
    """TRL's ``GRPOConfig`` of a group-sampling recipe (GRPO, RecPO): the shared TrainingArguments,
    G rollouts per prompt, their sampling and vLLM, plus the trainer's own ``fields``."""
    from trl import GRPOConfig

    return GRPOConfig(
        **trainer_kwargs(recipe, output_dir, use_cpu),
        num_generations=recipe.num_generations,
        temperature=recipe.temperature,
        top_p=recipe.top_p,
        use_vllm=recipe.use_vllm,
        vllm_mode=recipe.vllm_mode,
        vllm_gpu_memory_utilization=recipe.vllm_gpu_memory_utilization,
        **fields,
    )


@dataclass(frozen=True)
class GroupSteps:
    """Batch arithmetic of a group-sampling run, from the recipe and manifest only: TRL's
    ``per_device_train_batch_size`` counts completions, so a step sees ``batch × accumulation ×
    world / G`` prompts."""

    world_size: int
    completions_per_step: int
    prompts_per_step: int
    train_samples: int | None          # None: no prepared dataset yet
    steps: int | str                   # a text when it cannot be known yet

    @classmethod
    def of(cls, recipe: Any) -> GroupSteps:
        world = world_size(recipe)
        completions = recipe.per_device_train_batch_size * recipe.gradient_accumulation_steps * world
        prompts = completions // recipe.num_generations
        n_train = n_samples(recipe.data) if recipe.data else None
        if n_train is not None and recipe.max_train_samples is not None:
            n_train = min(n_train, recipe.max_train_samples)
        if recipe.max_steps > 0:
            steps: int | str = recipe.max_steps
        elif n_train is not None:
            steps = math.ceil(n_train * recipe.num_train_epochs / prompts)
        else:
            steps = f"unknown (no prepared dataset at {recipe.data!r}; from num_train_epochs={recipe.num_train_epochs})"
        return cls(world, completions, prompts, n_train, steps)


def reachable_samples(recipe: Any, prompts_per_step: int) -> int | None:
    """How many training records a run needs: ``max_train_samples``, and with ``max_steps`` set at
    most ``max_steps × prompts_per_step`` (tokenising every prompt of a large split for a short run
    would take longer than the run); None for all. A limited run takes a seeded random subset."""
    limit = recipe.max_train_samples
    if recipe.max_steps > 0:
        reach = recipe.max_steps * prompts_per_step
        limit = reach if limit is None else min(limit, reach)
    return limit


def world_size(recipe: Any) -> int:
    return int(getattr(recipe, "world_size", None) or os.environ.get("WORLD_SIZE", 1))


def n_samples(data_dir: str, split: str = "train") -> int | None:
    """Split size from the manifest (no data loaded); None when the data is not prepared yet."""
    try:
        return int(schema.read_manifest(data_dir)["splits"][split])
    except (ReczeroError, KeyError, OSError, ValueError):
        return None


def lora_config(recipe: Any):
    """The PEFT ``LoraConfig`` of ``recipe`` (``--use-lora``), or None to train all weights."""
    if not recipe.use_lora:
        return None
    from peft import LoraConfig

    targets = recipe.lora_target_modules
    return LoraConfig(r=recipe.lora_r, lora_alpha=recipe.lora_alpha, lora_dropout=recipe.lora_dropout,
                      target_modules=targets if targets == "all-linear" else [t.strip() for t in targets.split(",")],
                      task_type="CAUSAL_LM")


#: ``--report-to`` choices other than "none", and the module each needs (transformers' integrations).
REPORT_TO_MODULES = {"tensorboard": ("tensorboard", "tensorboardX"), "wandb": ("wandb",), "mlflow": ("mlflow",)}


def check_report_to(report_to: str) -> None:
    """A clear error before any weights load when ``--report-to`` names a tracker that is not installed."""
    modules = REPORT_TO_MODULES.get(report_to, ())
    if modules and not any(importlib.util.find_spec(m) is not None for m in modules):
        raise ReczeroError(f"--report-to {report_to} needs the {modules[0]!r} package, which is not installed "
                           f"(pip install {modules[0]}); or use --report-to none (log.jsonl is always written)")


class TrainerRun:
    """One training run along the path every trainer shares; the trainer-specific parts (records,
    TRL config, rewards, extra callbacks) are passed in. A new trainer reads::

        run = TrainerRun.start(recipe, plan, stage="grpo", title="GRPO")
        if run is None:                                   # --dry-run, or the run is already finished
            return 0
        model, tokenizer = run.load_model()
        trainer = run.build_trainer(GRPOTrainer, args, model, tokenizer, records,
                                    rewards=[RewardSpec(my_reward, 1.0)])
        return run.finish(trainer, tokenizer, run.train(trainer))

    A trainer whose callbacks need the trainer object passes ``late_callbacks=lambda t: [...]`` to
    ``build_trainer``; one that writes ``RUN/model`` its own way passes ``save=...`` to ``finish``
    (R2ec's RecPO does both: ``reczero.train.r2ec.train_r2ec``).
    """

    def __init__(self, recipe: Any, paths: RunPaths, checkpoint: Path | None, plan: dict[str, Any], stage: str) -> None:
        self.recipe, self.paths, self.checkpoint, self.plan, self.stage = recipe, paths, checkpoint, plan, stage
        self.rewards: dict[str, float] | None = None
        self.started = time.time()

    @classmethod
    def start(cls, recipe: Any, plan: Callable[[Any], dict[str, Any]], *, stage: str, title: str) -> TrainerRun | None:
        """Print the plan and stop on ``--dry-run``; check the run directory against ``--resume``
        and write config.yaml (:func:`prepare_run`); None when there is nothing to train."""
        if recipe.dry_run:
            print_plan(title, plan(recipe), dry_run=True)
            return None
        check_report_to(recipe.report_to)
        paths, ckpt = prepare_run(recipe)
        if paths.is_done():
            print(f"{paths.root}: already finished; nothing to do")
            return None
        resolved = plan(recipe)
        print_plan(title, resolved)
        return cls(recipe, paths, ckpt, resolved, stage)

    @property
    def use_cpu(self) -> bool:
        import torch

        return self.recipe.use_cpu or not torch.cuda.is_available()

    def load_model(self) -> tuple[Any, Any]:
        """``(model, tokenizer)`` of ``recipe.model`` in the recipe's dtype, with torch's threads set; warns
        when the recipe prompts unlike the model's training run."""
        import torch

        from reczero.config import warn_prompt_mismatch
        from reczero.models import configure_threads, load_model

        model, tokenizer = load_model(self.recipe.model, dtype=torch.bfloat16 if self.recipe.bf16 else torch.float32)
        if isinstance(self.recipe, PromptOptions):
            warn_prompt_mismatch(self.recipe, self.recipe.model)
        configure_threads(self.recipe.threads, model)
        return model, tokenizer

    def rating_validation(self, tokenizer: Any) -> list[Any]:
        """The periodic validation-MAE callback of the rating trainers (none with ``--eval-steps 0``)."""
        if self.recipe.eval_steps <= 0:
            return []
        return [make_validation_callback(self.paths, self.recipe, tokenizer, scale=schema.rating_scale(self.recipe.data),
                                         max_new_tokens=self.recipe.max_completion_length)]

    def build_trainer(self, trainer_cls: type, args: Any, model: Any, tokenizer: Any, records: Sequence[dict[str, Any]], *,
                      rewards: Sequence[Any] | None = None, log_extra: Callable[[], dict[str, Any]] | None = None,
                      callbacks: Sequence[Any] = (), late_callbacks: Callable[[Any], Sequence[Any]] | None = None,
                      peft_config: Any = None, **extra: Any) -> Any:
        """``trainer_cls`` (a TRL trainer) on ``records`` with the shared wiring: RUN/log.jsonl (plus
        ``log_extra()`` per line), ``callbacks``, LoRA from the recipe (unless ``peft_config``), the
        compact progress bar. ``rewards``: ``(func, weight)`` pairs, given to TRL as ``reward_funcs``
        and ``args.reward_weights`` (``rewards.trl_rewards``, the one place they are split).
        ``late_callbacks(trainer)``: callbacks that need the trainer itself, added once it is built.
        ``extra``: keyword arguments of ``trainer_cls`` itself."""
        from datasets import Dataset

        from reczero.rewards import trl_rewards

        if rewards is not None:
            funcs, weights = trl_rewards(rewards)
            args.reward_weights = weights        # a GRPOConfig field; the trainer reads it when built
            extra["reward_funcs"] = funcs
            self.rewards = {f.__name__: w for f, w in zip(funcs, weights, strict=True)}
        trainer = trainer_cls(
            model=model, args=args, train_dataset=Dataset.from_list(list(records)), processing_class=tokenizer,
            callbacks=[make_log_callback(self.paths, log_extra), *callbacks],
            peft_config=peft_config if peft_config is not None else lora_config(self.recipe), **extra,
        )
        for callback in late_callbacks(trainer) if late_callbacks is not None else ():
            trainer.add_callback(callback)
        use_compact_progress(trainer)
        return trainer

    def train(self, trainer: Any) -> Any:
        """``trainer.train()``, resumed from the run's last checkpoint when there is one."""
        self.started = time.time()
        return trainer.train(resume_from_checkpoint=str(self.checkpoint) if self.checkpoint else None)

    def finish(self, trainer: Any, tokenizer: Any, result: Any, *, save: Callable[[], str | None] | None = None,
               **summary: Any) -> int:
        """Write ``RUN/model`` loadable by path (the trainer's last weights and the tokenizer, or
        ``save()``, which may return a note for the last line), then mark the run done: done.json
        with stage, steps, time, loss, the rewards and their weights, then ``summary``. Returns 0,
        the command's exit status."""
        done = {"stage": self.stage, "global_step": trainer.state.global_step,
                "train_seconds": round(time.time() - self.started, 1), "train_loss": result.training_loss,
                **({"rewards": self.rewards} if self.rewards is not None else {}), **summary}
        if save is None:
            trainer.save_model(str(self.paths.model))
            tokenizer.save_pretrained(str(self.paths.model))
            note = None
        else:
            note = save()
        atomic_write_text(self.paths.done, json.dumps(done, indent=2, default=_jsonable) + "\n")
        print(f"done: {trainer.state.global_step} steps in {time.time() - self.started:.0f}s; model in {self.paths.model}"
              + (f" {note}" if note else ""))
        return 0


# Shown in the progress bar's postfix instead of the Trainer's full log dict (which stays in log.jsonl).
PROGRESS_KEYS = {"loss": "loss", "reward": "reward", "rewards/answer/mean": "answer", "format_rate": "format",
                 "parse_rate": "parsed", "pred_std": "pred_std", "frac_reward_zero_std": "zero_std", "entropy": "entropy"}


def use_compact_progress(trainer) -> None:
    """Replace the Trainer's progress callback by one that shows a few key figures in the bar's
    postfix rather than printing every logged dict (all of it is in RUN/log.jsonl)."""
    from transformers.trainer_callback import ProgressCallback

    class CompactProgress(ProgressCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            if state.is_world_process_zero and self.training_bar is not None and logs:
                shown = {short: f"{logs[k]:.3g}" for k, short in PROGRESS_KEYS.items()
                         if isinstance(logs.get(k), int | float)}
                self.training_bar.set_postfix(shown, refresh=False)

    trainer.remove_callback(ProgressCallback)
    trainer.add_callback(CompactProgress())
    # transformers 5 warns on every (un)checkpointing call that the name is deprecated: noise, not news
    warnings.filterwarnings("ignore", message=r".*gradient_checkpointing.* is deprecated", category=FutureWarning)
