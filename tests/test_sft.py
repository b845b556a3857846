"""SFT on teacher reasoning (assistant-only loss) and RecOne (SFT then GRPO) on tiny models, for real.
(``world`` and ``tiny_model`` come from conftest.py.)"""

from __future__ import annotations

import json

import pytest

from reczero import cli
from reczero.config import SFTRecipe, resolve

FAST_PROMPT = ["--max-prompt-tokens", "192", "--prompt-history", "3", "--prompt-item-reviews", "1"]


@pytest.fixture(scope="module")
def teacher_file(world, tmp_path_factory):
    out = tmp_path_factory.mktemp("teacher") / "t.jsonl"
    assert cli.main(["teacher", "--data", str(world), "--heuristic", "--n", "12", "--out", str(out)]) == 0
    return out


def test_prompt_tokens_carry_no_loss(world, tiny_model, teacher_file, tmp_path):
    from datasets import Dataset
    from trl import SFTTrainer

    from reczero.models import load_model
    from reczero.train.sft import sft_args, sft_records

    recipe = resolve(SFTRecipe, None, {"data": str(world), "model": str(tiny_model), "out": str(tmp_path),
                                       "teacher_data": str(teacher_file), "max_prompt_tokens": 192})
    model, tok = load_model(tiny_model)
    records, counts = sft_records(recipe, tok)
    assert counts["accepted"] == len(records) == 12 and counts["prompts_rebuilt"] == 12
    trainer = SFTTrainer(model=model, args=sft_args(recipe, str(tmp_path / "ck"), use_cpu=True),
                         train_dataset=Dataset.from_list(records), processing_class=tok)
    batch = trainer.data_collator([trainer.train_dataset[0]])
    ids, labels = batch["input_ids"][0], batch["labels"][0]
    trained = [int(i) for i, lab in zip(ids, labels, strict=True) if lab != -100]
    answer = records[0]["messages"][-1]["content"]
    # exactly the assistant's answer (and its end-of-turn token) is trained on; the prompt is not
    assert tok.decode(trained).strip().startswith(answer.strip())
    first = next(i for i, lab in enumerate(labels) if lab != -100)
    prompt_text = tok.decode(ids[:first])
    assert "<|im_start|>user" in prompt_text and prompt_text.rstrip().endswith("assistant")
    assert len(trained) < len(ids) / 2


def test_train_sft_and_recone(world, tiny_model, teacher_file, tmp_path):
    run = tmp_path / "sft"
    assert cli.main(["train", "sft", "--data", str(world), "--model", str(tiny_model), "--teacher-data",
                     str(teacher_file), "--out", str(run), "--max-steps", "2", "--per-device-train-batch-size", "4",
                     "--eval-steps", "0", "--learning-rate", "0.01", *FAST_PROMPT]) == 0
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert any("loss" in r for r in log) and (run / "model" / "config.json").is_file()
    done = json.loads((run / "done.json").read_text())
    assert done["global_step"] == 2 and done["teacher_counts"]["accepted"] == 12

    recone = tmp_path / "recone"
    common = ["train", "recone", "--data", str(world), "--model", str(tiny_model), "--teacher-data",
              str(teacher_file), "--out", str(recone),
              "--sft-set", "max_steps=2", "--sft-set", "per_device_train_batch_size=4", "--sft-set", "eval_steps=0",
              "--sft-set", "max_prompt_tokens=192",
              "--grpo-set", "max_steps=1", "--grpo-set", "num_generations=2", "--grpo-set",
              "per_device_train_batch_size=2", "--grpo-set", "max_completion_length=8", "--grpo-set", "eval_steps=0",
              "--grpo-set", "max_prompt_tokens=192"]
    assert cli.main(common) == 0
    assert (recone / "sft" / "done.json").is_file() and (recone / "grpo" / "done.json").is_file()
    grpo_cfg = (recone / "grpo" / "config.yaml").read_text()
    assert f"model: {recone / 'sft'}" in grpo_cfg            # GRPO starts from the SFT model
    stamp = (recone / "grpo" / "done.json").stat().st_mtime
    assert cli.main(common) == 0                               # a rerun skips both finished stages
    assert (recone / "grpo" / "done.json").stat().st_mtime == stamp
