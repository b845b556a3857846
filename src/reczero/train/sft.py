"""Supervised fine-tuning on teacher reasoning (RecOne's cold start; alone, the distillation baseline).

Choices:

* TRL's ``SFTTrainer`` on conversational records (system, user, assistant) with
  ``assistant_only_loss``: only the teacher's answer carries loss, the prompt does not (this needs
  the ``{% generation %}`` markers that ``reczero base`` puts in the chat template).
* Only *accepted* teacher records are used (rationalised ones included: their reasoning leads to the
  true rating); rejected records are counted and skipped.
* The prompt is rebuilt from the prepared dataset by ``sample_id`` with this run's prompt options
  and tokenizer, so SFT, GRPO and evaluation all show the model the same prompt; the teacher's own
  prompt is used only when the sample is not in the split.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from reczero.config import SFTRecipe
from reczero.data import schema
from reczero.errors import DataError
from reczero.io import read_jsonl
from reczero.train import common

log = logging.getLogger(__name__)


def read_teacher_records(path: str | Path) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """Accepted records of a teacher JSONL and counts by status (a torn last line is skipped and counted)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: teacher data not found (run `reczero teacher ... --out {path}`)")
    accepted, counts, unreadable = [], {"accepted": 0, "rejected": 0, "unreadable": 0}, []
    for _, rec in read_jsonl(path, skipped=unreadable):
        status = rec.get("status") if isinstance(rec, dict) else None
        if status == "accepted" and rec.get("completion"):
            accepted.append(rec)
            counts["accepted"] += 1
        else:
            counts["rejected"] += 1
    counts["unreadable"] = len(unreadable)
    if not accepted:
        raise DataError(f"{path}: no accepted teacher records ({counts})")
    return accepted, counts


def sft_records(recipe: SFTRecipe, tokenizer, split: str = "train") -> tuple[list[dict[str, Any]], dict[str, int]]:
    from reczero import prompts

    teacher, counts = read_teacher_records(recipe.teacher_data)
    df = schema.load_split(recipe.data, split)
    scale = schema.rating_scale(recipe.data)
    rows = {sid: i for i, sid in enumerate(df["sample_id"])}
    out, rebuilt = [], 0
    for rec in teacher:
        i = rows.get(rec["sample_id"])
        if i is not None:
            messages = prompts.build_messages(df.iloc[i].to_dict(), recipe, tokenizer, scale)
            rebuilt += 1
        else:
            messages = [m for m in rec["messages"] if m["role"] != "assistant"]
        out.append({"messages": [*messages, {"role": "assistant", "content": rec["completion"]}]})
    if recipe.max_train_samples is not None:
        out = out[: recipe.max_train_samples]
    counts["prompts_rebuilt"] = rebuilt
    return out, counts


def sft_args(recipe: SFTRecipe, output_dir: str, use_cpu: bool):
    from trl import SFTConfig

    return SFTConfig(
        **common.trainer_kwargs(recipe, output_dir, use_cpu),
        max_length=recipe.max_length,
        assistant_only_loss=recipe.assistant_only_loss,
        packing=False,
    )


def plan(recipe: SFTRecipe) -> dict[str, Any]:
    world = common.world_size(recipe)
    batch = recipe.per_device_train_batch_size * recipe.gradient_accumulation_steps * world
    n = None
    if recipe.teacher_data and Path(recipe.teacher_data).is_file():
        n = sum(1 for line in open(recipe.teacher_data, encoding="utf-8") if '"accepted"' in line)
    steps = recipe.max_steps if recipe.max_steps > 0 else (
        math.ceil(n * recipe.num_train_epochs / batch) if n else "unknown (teacher data not there yet)")
    return {"model": recipe.model, "teacher_data": recipe.teacher_data, "out": recipe.out, "world_size": world,
            "sequences_per_step": batch, "teacher_samples": n, "steps": steps,
            "learning_rate": recipe.learning_rate, "assistant_only_loss": recipe.assistant_only_loss,
            "lora": recipe.use_lora, "template": recipe.template}


def train_sft(recipe: SFTRecipe, *, callbacks: Sequence = ()) -> int:
    """`reczero train sft`: SFT on accepted teacher records; returns 0 on success."""
    run = common.TrainerRun.start(recipe, plan, stage="sft", title="SFT")
    if run is None:
        return 0
    from trl import SFTTrainer

    model, tokenizer = run.load_model()
    tokenizer.padding_side = "right"  # training pads on the right; generation (validation) sets left itself
    records, counts = sft_records(recipe, tokenizer)
    log.info("teacher records: %s", counts)
    trainer = run.build_trainer(SFTTrainer, sft_args(recipe, str(run.paths.checkpoints), run.use_cpu), model,
                                tokenizer, records, callbacks=[*run.rating_validation(tokenizer), *callbacks])
    result = run.train(trainer)
    tokenizer.padding_side = "left"
    return run.finish(trainer, tokenizer, result, teacher_counts=counts)
