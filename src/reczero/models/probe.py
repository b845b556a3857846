"""Quick measurements of a base model on validation samples (written into its model card).

What this module chose, and why:

* **Read-off**: the prompt, an answer like the warm-up's up to ``<rate>``, then the argmax of the
  next-token logits *restricted to the rating grid* ("1" … "5"). This reads the model's rating
  prior even before it knows the format (after pretraining), and shows whether the warm-up kept
  it. The texts are left padded by ``generation.left_pad``; the tokenizer is not touched.
* **Greedy generation** through ``reczero.generation.generate`` (the one generation loop): what the
  model answers by itself — format rate (``rewards.check_format``), parse rate, MAE over all
  samples with unparsable answers scored at the stated fallback (``predictions.fallback_prediction``:
  user average, else item average, else the training mean, as ``reczero eval`` scores them), and the
  number of distinct ratings predicted (1 = collapsed to a constant). MAE and correlation are
  ``reczero.metrics``'; an undefined correlation (a constant prediction) is None.
* Constant predictors (training mean and median) on the same samples, for context: a base whose
  MAE is no better than the median has learned nothing about the prompt.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from reczero import metrics
from reczero.data.schema import RatingScale
from reczero.generation import generate, left_pad, pad_token_id
from reczero.prompts import format_rating
from reczero.rewards import check_format, parse_rating

log = logging.getLogger(__name__)


def rating_grid(scale: RatingScale) -> list[float]:
    n = int(round(scale.span / scale.step))
    return [scale.lo + k * scale.step for k in range(n + 1)]


def grid_token_ids(tokenizer: Any, scale: RatingScale) -> list[int]:
    ids = []
    for value in rating_grid(scale):
        pieces = tokenizer(format_rating(value, scale), add_special_tokens=False)["input_ids"]
        if len(pieces) != 1:
            raise ValueError(f"rating {format_rating(value, scale)!r} is {len(pieces)} tokens; read-off needs one")
        ids.append(pieces[0])
    return ids


def _batches(items: list, size: int):
    for i in range(0, len(items), size):
        yield items[i:i + size]


def grid_logprobs(model: Any, tokenizer: Any, texts: list[str], scale: RatingScale, batch_size: int = 16):
    """``(len(texts), K)`` array: log-probabilities (over the whole vocabulary) of each rating on the
    grid as the next token after each text."""
    import torch

    ids = grid_token_ids(tokenizer, scale)
    pad = pad_token_id(tokenizer)
    rows = []
    with torch.no_grad():
        for chunk in _batches(texts, batch_size):
            input_ids, attention_mask = left_pad(tokenizer(chunk, add_special_tokens=False)["input_ids"], pad)
            rows.append(model(input_ids=input_ids, attention_mask=attention_mask).logits[:, -1].float()
                        .log_softmax(-1)[:, ids])
    return torch.cat(rows).numpy() if rows else np.zeros((0, len(ids)))


def read_off(model: Any, tokenizer: Any, texts: list[str], scale: RatingScale, batch_size: int = 16) -> list[float]:
    """The most likely rating on the grid after each text (which ends in ``<rate>``)."""
    grid = rating_grid(scale)
    return [grid[k] for k in grid_logprobs(model, tokenizer, texts, scale, batch_size).argmax(-1).tolist()]


def prior_of_experts(user_logp, item_logp, marginal) -> Any:
    """``p(r | user, item) ∝ p(r | user) p(r | item) / p(r)`` over the grid (a product of experts
    that assumes the user's and the item's evidence independent given the rating), as probabilities."""
    user = user_logp - np.logaddexp.reduce(user_logp, axis=-1, keepdims=True)
    item = item_logp - np.logaddexp.reduce(item_logp, axis=-1, keepdims=True)
    logq = user + item - np.log(np.clip(np.asarray(marginal, dtype=float), 1e-6, None))
    logq -= logq.max(-1, keepdims=True)
    q = np.exp(logq)
    return q / q.sum(-1, keepdims=True)


def summarise(preds: list[float | None], targets: list[float], fallbacks: list[float]) -> dict[str, Any]:
    """MAE (an unparsable prediction scored at its sample's ``fallbacks`` value), correlation, parse
    rate, and the spread and number of the distinct parsed predictions."""
    y = np.asarray(targets, dtype=float)
    parsed = [p for p in preds if p is not None]
    yhat = [p if p is not None else f for p, f in zip(preds, fallbacks, strict=True)]
    corr = metrics.pearson(y, yhat) if len(y) > 1 else float("nan")
    return {"n": len(y), "mae": metrics.mae(y, yhat), "parse_rate": len(parsed) / len(preds),
            "distinct": len(set(parsed)), "spread": float(np.std(parsed)) if parsed else 0.0,
            "correlation": None if np.isnan(corr) else corr}


def constants(targets: list[float], train_mean: float, train_median: float) -> dict[str, float]:
    y = np.asarray(targets, dtype=float)
    return {"mae_train_mean": float(np.mean(np.abs(y - train_mean))),
            "mae_train_median": float(np.mean(np.abs(y - train_median)))}


def greedy_eval(model: Any, tokenizer: Any, prompts: list[str], targets: list[float], scale: RatingScale,
                template: str, fallbacks: list[float], max_new_tokens: int = 128) -> dict[str, Any]:
    """:func:`summarise` of the model's greedy answers to ``prompts`` (chat-rendered), plus their
    format rate and the first answer as an example."""
    completions = generate(model, tokenizer, prompts, batch_size=16, max_new_tokens=max_new_tokens, progress=False)
    preds = [parse_rating(c, scale, template) for c in completions]
    result = summarise(preds, targets, fallbacks)
    result["format_rate"] = float(np.mean([check_format(c, template, scale) for c in completions]))
    result["example"] = completions[0] if completions else ""
    return result
