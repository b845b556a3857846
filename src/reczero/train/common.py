"""What every trainer shares: the run-directory layout, prompt datasets, logging, validation, resume.

Choices:

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

import json
import logging
import math
import os
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from reczero.config import GRPORecipe, PromptOptions, SFTRecipe, TrainCommon, save_config
from reczero.data import schema
from reczero.errors import ReczeroError

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
    """Keep only log lines with step <= max_step (and drop a torn last line)."""
    if not path.is_file():
        return
    kept = []
    for line in path.read_text().splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if rec.get("step", 0) <= max_step:
            kept.append(line)
    path.write_text("".join(k + "\n" for k in kept))


def append_jsonl(path: Path, record: dict[str, Any]) -> None:
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(record, default=_jsonable) + "\n")


def _jsonable(x: Any) -> Any:
    if hasattr(x, "item"):
        return x.item()
    return str(x)


def read_log(path: str | Path) -> list[dict[str, Any]]:
    path = Path(path)
    if not path.is_file():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out


def prompt_records(data_dir: str, split: str, opts: PromptOptions, tokenizer, *, limit: int | None = None,
                   seed: int = 0, shuffle: bool = False) -> list[dict[str, Any]]:
    """Split rows -> records with a conversational ``prompt`` (system + user messages) and the target.

    The prompt is trimmed to ``opts.max_prompt_tokens`` by ``prompts.build_messages``. Extra columns
    (``rating``, ``sample_id``, averages) reach the reward functions as keyword arguments (TRL).
    """
    import numpy as np

    from reczero import prompts

    df = schema.load_split(data_dir, split)
    scale = schema.rating_scale(data_dir)
    if len(df) == 0:
        raise ReczeroError(f"{data_dir}: the {split} split is empty")
    order = np.arange(len(df))
    if shuffle:
        order = np.random.default_rng(seed).permutation(len(df))
    if limit is not None:
        order = order[:limit]
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
        report_to="none",
        seed=recipe.seed,
        disable_tqdm=False,
        **({"gradient_checkpointing": True} if recipe.gradient_checkpointing else {}),
    )


def world_size(recipe: Any) -> int:
    return int(getattr(recipe, "world_size", None) or os.environ.get("WORLD_SIZE", 1))


def n_samples(data_dir: str, split: str = "train") -> int | None:
    """Split size from the manifest (no data loaded); None when the data is not prepared yet."""
    try:
        return int(schema.read_manifest(data_dir)["splits"][split])
    except (ReczeroError, KeyError, OSError, ValueError):
        return None


def finish(paths: RunPaths, trainer, tokenizer, summary: dict[str, Any]) -> None:
    """Save the final model (+ tokenizer) loadable by path, then mark the run done."""
    trainer.save_model(str(paths.model))
    tokenizer.save_pretrained(str(paths.model))
    paths.done.write_text(json.dumps(summary, indent=2, default=_jsonable) + "\n")


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
