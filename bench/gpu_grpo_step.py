"""GRPO steps of a random-initialised Qwen2.5-0.5B-shaped model on a GPU, in bf16 (issue 4, item 8).

What it measures, and how:

* **The model**: Qwen2.5-0.5B's shape (hidden 896, 24 layers, 14 query / 2 key-value heads, MLP 4864,
  a 151,936-token tied embedding, RoPE theta 1e6: 494M parameters), randomly initialised — no
  weights can be downloaded here. The tokenizer is one trained locally by ``reczero base`` on the
  dataset (``TOKENIZER``); the model's vocabulary is padded to Qwen2.5's, so the LM head and the
  sampling cost what they cost in the real model. Ids above the tokenizer's vocabulary decode to
  nothing, so almost every completion runs to ``--max-completion-length``: the worst case for time.
* **The step**: ``reczero train grpo --bf16`` as a user runs it (TRL's ``GRPOTrainer``, HF
  ``generate`` for rollouts, no vLLM), ``--steps`` steps of ``--batch`` completions
  (``--num-generations`` per prompt). Step time is the trainer's own (``step_time`` in the run's
  ``log.jsonl``); the first step holds CUDA start-up and is reported apart.
* **Generation alone**: ``model.generate`` on ``--batch`` prompts of the same data, sampling at
  temperature 1 with ``min_new_tokens = max_new_tokens``, timed after one untimed call:
  generated tokens per second, the number that dominates a GRPO step.

    python bench/gpu_grpo_step.py --data DATA --tokenizer TOKENIZER --out OUT      # on the GPU machine
    python bench/gpu_grpo_step.py ... --shape tiny --max-completion-length 16     # a CPU smoke run
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

#: Qwen2.5-0.5B(-Instruct)'s config.json fields that set its cost.
QWEN25_05B = {"hidden_size": 896, "num_hidden_layers": 24, "num_attention_heads": 14, "num_key_value_heads": 2,
              "intermediate_size": 4864, "vocab_size": 151_936, "max_position_embeddings": 32_768,
              "rope_theta": 1_000_000.0}
TINY = {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
        "intermediate_size": 128, "vocab_size": 4096, "max_position_embeddings": 4096, "rope_theta": 10_000.0}


def build_model(tokenizer_dir: str, out: Path, shape: dict, bf16: bool) -> int:
    import torch
    from transformers import AutoTokenizer

    from reczero.models.tiny import count_parameters, new_model, qwen2_config

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    config = qwen2_config(vocab_size=max(shape["vocab_size"], len(tok)), hidden_size=shape["hidden_size"],
                          num_layers=shape["num_hidden_layers"], num_heads=shape["num_attention_heads"],
                          num_kv_heads=shape["num_key_value_heads"], intermediate_size=shape["intermediate_size"],
                          max_position_embeddings=shape["max_position_embeddings"], tokenizer=tok)
    config.rope_parameters = {"rope_type": "default", "rope_theta": shape["rope_theta"]}
    model = new_model(config, tok)
    if bf16:
        model = model.to(torch.bfloat16)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return count_parameters(model)


def time_generation(model_dir: Path, data: str, batch: int, new_tokens: int, bf16: bool) -> dict:
    import torch

    from reczero.config import PromptOptions
    from reczero.models import load_model
    from reczero.train.common import prompt_records

    device = "cuda" if torch.cuda.is_available() else "cpu"
    model, tok = load_model(str(model_dir), dtype=torch.bfloat16 if bf16 else torch.float32)
    model.to(device).eval()
    prompts = [r["prompt"] for r in prompt_records(data, "train", PromptOptions(), tok, limit=batch)]
    texts = [tok.apply_chat_template(p, tokenize=False, add_generation_prompt=True) for p in prompts]
    enc = tok(texts, return_tensors="pt", padding=True).to(device)
    kwargs = dict(do_sample=True, temperature=1.0, max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                  pad_token_id=tok.pad_token_id)
    with torch.no_grad():
        model.generate(**enc, **kwargs)  # untimed: kernels, allocator
        if device == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        out = model.generate(**enc, **kwargs)
        if device == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - t0
    generated = (out.shape[1] - enc["input_ids"].shape[1]) * out.shape[0]
    return {"prompt_tokens_max": int(enc["input_ids"].shape[1]), "generated_tokens": int(generated),
            "seconds": round(seconds, 3), "tokens_per_s": round(generated / seconds, 1),
            "peak_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2) if device == "cuda" else None}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", required=True, help="prepared dataset (e.g. from `reczero data synth`)")
    ap.add_argument("--tokenizer", required=True, help="folder with a tokenizer (e.g. a `reczero base` output)")
    ap.add_argument("--out", required=True, help="work folder: model/, run/, results.json")
    ap.add_argument("--shape", choices=["qwen2.5-0.5b", "tiny"], default="qwen2.5-0.5b")
    ap.add_argument("--steps", type=int, default=3, help="GRPO steps (the first holds start-up)")
    ap.add_argument("--batch", type=int, default=16, help="completions per step (per_device_train_batch_size)")
    ap.add_argument("--num-generations", type=int, default=8)
    ap.add_argument("--max-completion-length", type=int, default=256)
    ap.add_argument("--no-bf16", action="store_true", help="float32 (for a CPU smoke run)")
    args = ap.parse_args(argv)
    import torch

    bf16 = not args.no_bf16
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    shape = QWEN25_05B if args.shape == "qwen2.5-0.5b" else TINY
    n_params = build_model(args.tokenizer, out / "model", shape, bf16)
    print(f"model: {args.shape}, {n_params / 1e6:.1f}M parameters, {'bf16' if bf16 else 'fp32'}", flush=True)
    run = out / "run"
    cmd = [sys.executable, "-m", "reczero.cli", "train", "grpo", "--data", args.data, "--model", str(out / "model"),
           "--out", str(run), "--max-steps", str(args.steps), "--num-generations", str(args.num_generations),
           "--per-device-train-batch-size", str(args.batch), "--max-completion-length", str(args.max_completion_length),
           "--eval-steps", "0", "--save-steps", str(10 * args.steps), "--seed", "0"]
    cmd += ["--bf16"] if bf16 else ["--no-bf16"]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True)
    wall = time.perf_counter() - t0
    steps = [r for r in (json.loads(line) for line in (run / "log.jsonl").open()) if "step_time" in r]
    gen = time_generation(out / "model", args.data, args.batch, args.max_completion_length, bf16)
    result = {
        "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
        "torch": torch.__version__, "shape": args.shape, "parameters": n_params, "dtype": "bf16" if bf16 else "fp32",
        "completions_per_step": args.batch, "num_generations": args.num_generations,
        "max_completion_length": args.max_completion_length, "grpo_wall_s": round(wall, 1),
        "steps": [{k: r.get(k) for k in ("step", "step_time", "completions/mean_length", "reward", "loss")}
                  for r in steps],
        "generation": gen,
    }
    later = [r["step_time"] for r in steps[1:] if r.get("step_time")]
    if later:
        mean_len = sum(r.get("completions/mean_length") or 0 for r in steps[1:]) / len(steps[1:])
        result["step_time_after_first_s"] = round(sum(later) / len(later), 3)
        result["grpo_generated_tokens_per_s"] = round(args.batch * mean_len / result["step_time_after_first_s"], 1)
    (out / "results.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
