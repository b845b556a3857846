"""Batched generation: the one loop that turns prompts into completions.

What this module chose, and why:

* **Sorted by length, left padded.** Prompts are tokenised once, ordered by token length (longest
  first, so that the batch needing the most memory runs first and an out-of-memory error shows in
  seconds, not at the end) and padded on the left, so every row of a batch ends at the same column
  and the new tokens start at one offset. Padding is done here, by hand, with the tokenizer's pad
  token (else its EOS): the caller's tokenizer is never mutated, so a trainer may pass its own
  right-padding tokenizer (the GRPO trainer's periodic validation calls :func:`generate`).
* **Results in input order**, whatever the batching did.
* **Greedy by default** (``do_sample=False``; sampling knobs of the model's generation config are
  cleared so they neither apply nor warn). Evaluation is greedy; ``greedy=False`` samples with the
  model's own generation config and the caller's torch seed.
* Prompts are already chat-rendered text, so they are tokenised with ``add_special_tokens=False``
  (no second BOS). Completions are decoded with ``skip_special_tokens=True``: the reasoning tags
  (``<analyze user>`` …) are ordinary added tokens, so they survive; pad/EOS/``<|im_end|>`` go.
* The model is switched to ``eval()`` under ``torch.inference_mode()`` and put back in training
  mode afterwards if it was training (dropout would otherwise make "greedy" random).
* :func:`generate_vllm` is the GPU path with the same contract; vLLM is imported only inside it.
  :func:`reason_vllm` is R2ec's: token ids in, the sampled token ids out (never text, so nothing is
  re-tokenised), stopped at the given ids. :func:`load_vllm` refuses a LoRA adapter folder (vLLM
  loads merged weights here) and takes vLLM's GPU memory share, so that R2ec can keep its
  transformers model (which reads the user vectors) on the same GPU.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from reczero.errors import ReczeroError

log = logging.getLogger(__name__)


def length_order(lengths: Sequence[int]) -> list[int]:
    """Indices ordered by length, longest first; ties keep input order (stable)."""
    return sorted(range(len(lengths)), key=lambda i: -lengths[i])


def pad_token_id(tokenizer: Any) -> int:
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    if pad is None:
        raise ReczeroError("tokenizer has neither a pad token nor an EOS token; cannot pad a batch")
    return int(pad)


def left_pad(rows: Sequence[Sequence[int]], pad_id: int):
    """(input_ids, attention_mask) as int64 tensors of shape (batch, longest), padded on the left."""
    import torch

    width = max(len(r) for r in rows)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        if row:
            input_ids[i, width - len(row):] = torch.tensor(row, dtype=torch.long)
            attention_mask[i, width - len(row):] = 1
    return input_ids, attention_mask


def generate(model: Any, tokenizer: Any, prompts: list[str], *, batch_size: int = 32, max_new_tokens: int = 256,
             greedy: bool = True, progress: bool = True, min_new_tokens: int = 0) -> list[str]:
    """Complete every prompt; returns the completions (special tokens skipped) in input order.

    ``min_new_tokens`` forces at least that many new tokens (EOS suppressed until then); it is for
    benchmarks that must compare a fixed amount of decoding, evaluation leaves it at 0.
    """
    import torch
    from tqdm.auto import tqdm

    if batch_size < 1:
        raise ReczeroError(f"batch_size must be >= 1, got {batch_size}")
    if not prompts:
        return []
    encoded = tokenizer(list(prompts), add_special_tokens=False)["input_ids"]
    if any(len(ids) == 0 for ids in encoded):
        empty = next(i for i, ids in enumerate(encoded) if len(ids) == 0)
        raise ReczeroError(f"prompt {empty} is empty after tokenisation; nothing to condition on")
    order = length_order([len(ids) for ids in encoded])
    pad_id = pad_token_id(tokenizer)
    gen_kwargs: dict[str, Any] = dict(max_new_tokens=max_new_tokens, pad_token_id=pad_id)
    if model.generation_config.eos_token_id is None:   # else keep the model's (maybe several) stop ids
        gen_kwargs["eos_token_id"] = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else pad_id
    if min_new_tokens:
        gen_kwargs["min_new_tokens"] = min_new_tokens
    if greedy:
        gen_kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
    else:
        gen_kwargs["do_sample"] = True

    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    completions: list[str | None] = [None] * len(prompts)
    bar = tqdm(total=len(prompts), desc="generate", unit="prompt", disable=not progress, leave=False)
    try:
        with torch.inference_mode():
            for start in range(0, len(order), batch_size):
                batch = order[start:start + batch_size]
                input_ids, attention_mask = left_pad([encoded[i] for i in batch], pad_id)
                out = model.generate(input_ids=input_ids.to(device), attention_mask=attention_mask.to(device),
                                     **gen_kwargs)
                new_tokens = out[:, input_ids.shape[1]:]   # (batch, generated): all rows start at one offset
                texts = tokenizer.batch_decode(new_tokens.cpu(), skip_special_tokens=True)
                for i, text in zip(batch, texts, strict=True):
                    completions[i] = text
                bar.update(len(batch))
    finally:
        bar.close()
        if was_training:
            model.train()
    return completions  # type: ignore[return-value]


def generate_vllm(llm: Any, prompts: list[str], *, max_new_tokens: int = 256, seed: int = 0,
                  progress: bool = True) -> list[str]:
    """The vLLM path (GPU): greedy completions of ``prompts`` in input order.

    ``llm`` is a ``vllm.LLM`` (see :func:`load_vllm`); vLLM schedules and batches by itself.
    """
    from vllm import SamplingParams

    params = SamplingParams(temperature=0.0, max_tokens=max_new_tokens, seed=seed, skip_special_tokens=True)
    outputs = llm.generate(prompts, params, use_tqdm=progress)
    return [out.outputs[0].text for out in outputs]


def reason_vllm(llm: Any, prompt_ids: Sequence[Sequence[int]], *, max_new_tokens: int, stop_ids: Sequence[int],
                seed: int = 0, progress: bool = True) -> list[list[int]]:
    """The vLLM path of R2ec's reasoning (GPU): greedy token ids sampled after each prompt, in input
    order, each ending at the first of ``stop_ids`` (vLLM keeps that id in ``token_ids``) or at
    ``max_new_tokens``. The caller closes them with :func:`reczero.r2ec.model.close_rollouts`.

    Prompts go in as token ids (``{"prompt_token_ids": ...}``, the dict that ``vllm.inputs.TokensPrompt``
    names), so vLLM reads exactly the ids the transformers model reads the user vector from."""
    from vllm import SamplingParams

    params = SamplingParams(temperature=0.0, max_tokens=max_new_tokens, stop_token_ids=list(stop_ids), seed=seed)
    prompts = [{"prompt_token_ids": list(ids)} for ids in prompt_ids]
    outputs = llm.generate(prompts, params, use_tqdm=progress)
    return [list(out.outputs[0].token_ids) for out in outputs]


def load_vllm(model_path: str, *, seed: int = 0, dtype: str = "auto", trust_remote_code: bool = False,
              gpu_memory_utilization: float = 0.9) -> Any:
    """A ``vllm.LLM`` for ``model_path``; a clear error for a LoRA adapter folder and when vLLM is
    not installed. ``gpu_memory_utilization`` is vLLM's share of the GPU (its default: 0.9)."""
    if (Path(model_path) / "adapter_config.json").is_file():
        raise ReczeroError(f"{model_path} holds LoRA adapters; merge them into the base model before "
                           "--backend vllm, or use --backend transformers")
    try:
        from vllm import LLM
    except ImportError as err:
        raise ReczeroError(
            "--backend vllm needs vLLM, which is not installed (it needs a CUDA GPU); "
            "install the 'gpu' extra: pip install 'reczero[gpu]', or use --backend transformers"
        ) from err
    return LLM(model=str(model_path), tokenizer=str(model_path), seed=seed, dtype=dtype,
               trust_remote_code=trust_remote_code, gpu_memory_utilization=gpu_memory_utilization)
