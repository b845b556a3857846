"""Training loops of the tiny base: packed pretraining and the masked format warm-up.

What this module chose, and why:

* **A plain torch loop**, not ``Trainer``: two short stages with a fixed number of steps, no
  evaluation loop, no checkpointing — a loop of 40 lines is easier to read and as fast.
* **Pretraining packs documents**: every document is tokenised, followed by ``<|endoftext|>``,
  concatenated and cut into blocks of ``seq_len`` tokens (the last partial block is dropped);
  loss on every token. Block order is reshuffled each epoch (seeded).
* **Warm-up examples are tokenised in pieces** (prompt | answer before the rating | rating |
  rest of the answer + ``<|im_end|>``) so that the rating's tokens are known exactly and get
  label -100, as do the prompt's; the pieces' concatenation is checked against the tokenisation of
  the whole text (the tags are added tokens, so the boundaries are clean).
* **The rating slot never learns the true rating.** The loss at the rating's position is the
  cross-entropy to ``slot_targets``, the model's *own* rating prior read in the pretraining layout
  (``base.py``): self-distillation, which carries what pretraining taught into the answer slot
  without showing a target. The probability of *any* valid rating as the slot's loss, tried
  before, teaches that a number goes there and leaves the choice to chance: the slot then read the
  prompt hardly at all (correlation 0.06 against 0.30 in the pretraining layout). A fully masked
  slot left the base writing prose after ``<rate>``; the true rating would teach the task, a random
  one erases the prior.
* **Replay during the warm-up**: each warm-up step adds the loss of a half batch of pretraining
  blocks, so that learning the format does not overwrite the rating prior (without it, the prior
  read off a tiny model went from MAE 0.79 to 2.6 in 60 warm-up steps here).
* **Schedule**: AdamW (betas 0.9/0.95, weight decay 0.1 on matrices), linear warm-up over 5% of
  the steps, cosine decay to 10% of the peak; gradients clipped at 1.0.
"""

from __future__ import annotations

import json
import logging
import math
import random
import time
from collections.abc import Callable, Iterator
from typing import IO, Any

log = logging.getLogger(__name__)

IGNORE = -100
SLOT = -2   # label of a rating token in the warm-up: "some rating", not which one


def pack_documents(docs: list[str], tokenizer: Any, seq_len: int):
    """``(n_blocks, seq_len)`` LongTensor of packed, ``<|endoftext|>``-separated documents."""
    import torch

    sep = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    stream: list[int] = []
    for start in range(0, len(docs), 2048):
        for ids in tokenizer(docs[start:start + 2048], add_special_tokens=False)["input_ids"]:
            stream.extend(ids)
            stream.append(sep)
    n_blocks = len(stream) // seq_len
    if n_blocks == 0:
        raise ValueError(f"the pretraining text is {len(stream)} tokens, less than one block of seq_len={seq_len}")
    return torch.tensor(stream[: n_blocks * seq_len], dtype=torch.long).view(n_blocks, seq_len)


def pretraining_batches(blocks, batch_size: int, steps: int, seed: int,
                        rating_weight: dict[str, Any] | None = None) -> Iterator[dict[str, Any]]:
    """``steps`` batches of blocks, each epoch in a fresh seeded order. ``rating_weight``
    (``{"weight": w, "rating_tokens": [...], "after": space_id}``) weighs rating tokens in the loss."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(blocks), generator=gen)
    pos = 0
    for _ in range(steps):
        if pos + batch_size > len(order):
            order, pos = torch.randperm(len(blocks), generator=gen), 0
        batch = blocks[order[pos:pos + batch_size]]
        pos += batch_size
        yield {"input_ids": batch, "labels": batch, **({"rating_weight": rating_weight} if rating_weight else {})}


def warmup_example(tokenizer: Any, prompt: str, before: str, rating: str, after: str) -> tuple[list[int], list[int]]:
    """(input_ids, labels): the prompt masked (-100), the rating's tokens marked :data:`SLOT`."""
    pieces = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in (prompt, before, rating, after + "<|im_end|>")]
    ids = [i for piece in pieces for i in piece]
    labels = [IGNORE] * len(pieces[0]) + pieces[1] + [SLOT] * len(pieces[2]) + pieces[3]
    return ids, labels


def check_pieces(tokenizer: Any, prompt: str, before: str, rating: str, after: str) -> None:
    ids, _ = warmup_example(tokenizer, prompt, before, rating, after)
    whole = tokenizer(prompt + before + rating + after + "<|im_end|>", add_special_tokens=False)["input_ids"]
    if ids != whole:
        raise RuntimeError("warm-up tokenisation in pieces differs from the whole text; the rating mask would be wrong")


def warmup_batches(examples: list[tuple[list[int], list[int]]], batch_size: int, steps: int, pad_id: int,
                   seed: int, rating_tokens: list[int] | None = None,
                   slot_targets: Any = None) -> Iterator[dict[str, Any]]:
    """``steps`` right-padded batches drawn in seeded random order (reshuffled after each pass).

    ``slot_targets``: ``(len(examples), K)`` probabilities over ``rating_tokens``, the soft label of
    each example's (single-token) rating position; None for examples without one (R2ec's warm-up).
    """
    import torch

    rng = random.Random(seed)
    order: list[int] = []
    for _ in range(steps):
        if len(order) < batch_size:
            order = order + rng.sample(range(len(examples)), len(examples))
        picked, order = order[:batch_size], order[batch_size:]
        width = max(len(examples[i][0]) for i in picked)
        ids = torch.full((len(picked), width), pad_id, dtype=torch.long)
        labels = torch.full((len(picked), width), IGNORE, dtype=torch.long)
        mask = torch.zeros((len(picked), width), dtype=torch.long)
        for row, i in enumerate(picked):
            x, y = examples[i]
            ids[row, : len(x)], labels[row, : len(y)], mask[row, : len(x)] = torch.tensor(x), torch.tensor(y), 1
        batch = {"input_ids": ids, "labels": labels, "attention_mask": mask}
        if slot_targets is not None:
            batch.update(rating_tokens=torch.tensor(rating_tokens),
                         slot_targets=torch.as_tensor(slot_targets[picked], dtype=torch.float32))
        yield batch


def batch_loss(model: Any, batch: dict[str, Any]) -> Any:
    """Mean next-token loss; label :data:`SLOT` positions count the cross-entropy to the batch's
    ``slot_targets`` (one slot per row, a distribution over ``rating_tokens``)."""
    import torch
    import torch.nn.functional as F

    labels = batch.get("labels")
    if "rating_weight" in batch:
        return weighted_loss(model, batch)
    if labels is None or not bool((labels == SLOT).any()):
        return model(**batch).loss
    logits = model(input_ids=batch["input_ids"], attention_mask=batch.get("attention_mask")).logits[:, :-1]
    target = labels[:, 1:]                                   # (B, T-1): token t+1 predicted at t
    slot = target == SLOT
    plain = torch.where(slot, torch.full_like(target, IGNORE), target)
    total = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), plain.reshape(-1), ignore_index=IGNORE, reduction="sum")
    slot_logp = logits[slot].log_softmax(-1)[:, batch["rating_tokens"]]   # (n_slots, K), rows in batch order
    soft = batch.get("slot_targets")
    if soft is None or soft.shape[0] != slot_logp.shape[0]:
        raise ValueError(f"the batch has {slot_logp.shape[0]} rating positions but "
                         f"{'no' if soft is None else soft.shape[0]} slot_targets rows (one single-token rating per row)")
    total = total - (soft * slot_logp).sum()
    return total / ((plain != IGNORE).sum() + slot.sum())


def weighted_loss(model: Any, batch: dict[str, Any]) -> Any:
    """Next-token loss on every token, a rating (a grid token right after a lone space, as in
    "rated 4") counting ``weight`` times: ratings are ~3% of the tokens of review pages, too little
    of the gradient for a tiny model to learn what they depend on in a few minutes (in a trial here
    the prior of a tiny model pretrained without weights ignored the average shown before it)."""
    import torch
    import torch.nn.functional as F

    spec = batch["rating_weight"]
    ids = batch["input_ids"]
    logits = model(input_ids=ids).logits[:, :-1]
    target = ids[:, 1:]
    loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1), reduction="none").view_as(target)
    is_rating = torch.isin(target, torch.as_tensor(spec["rating_tokens"])) & (ids[:, :-1] == spec["after"])
    weights = 1.0 + (float(spec["weight"]) - 1.0) * is_rating.float()
    return (loss * weights).sum() / weights.sum()


def lr_at(step: int, steps: int, peak: float) -> float:
    """Linear warm-up over 5% of the steps, then cosine decay to 10% of ``peak``."""
    warm = max(1, int(0.05 * steps))
    if step < warm:
        return peak * (step + 1) / warm
    progress = (step - warm) / max(1, steps - warm)
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def run_steps(model: Any, batches: Iterator[dict[str, Any] | list[dict[str, Any]]], steps: int, lr: float, stage: str,
              log_file: IO[str] | None = None, log_every: int = 10,
              on_log: Callable[[dict[str, Any]], None] | None = None) -> dict[str, float]:
    """Optimise ``model`` for ``steps`` batches (a batch may be a list whose losses are summed);
    returns the first and last losses, tokens and seconds."""
    import torch
    from tqdm.auto import tqdm

    decay = [p for p in model.parameters() if p.requires_grad and p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.dim() < 2]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
                                  lr=lr, betas=(0.9, 0.95))
    model.train()
    start, losses, tokens = time.perf_counter(), [], 0
    bar = tqdm(total=steps, desc=stage, unit="step", dynamic_ncols=True)
    for step, batch in enumerate(batches):
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, steps, lr)
        parts = batch if isinstance(batch, list) else [batch]
        loss = sum(batch_loss(model, part) for part in parts)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
        tokens += sum(int(part["input_ids"].numel()) for part in parts)
        bar.update(1)
        bar.set_postfix(loss=f"{losses[-1]:.3f}")
        if log_file is not None and (step % log_every == 0 or step == steps - 1):
            window = losses[-log_every:]
            record = {"stage": stage, "step": step + 1, "loss": round(sum(window) / len(window), 4),
                      "lr": optimizer.param_groups[0]["lr"], "tokens": tokens,
                      "seconds": round(time.perf_counter() - start, 2)}
            log_file.write(json.dumps(record) + "\n")
            log_file.flush()
            if on_log is not None:
                on_log(record)
    bar.close()
    model.eval()
    if not losses:
        raise ValueError(f"{stage}: no training steps were run")
    tail = losses[-max(1, len(losses) // 10):]
    return {"steps": len(losses), "first_loss": losses[0], "last_loss": sum(tail) / len(tail),
            "seconds": time.perf_counter() - start, "tokens": tokens}
