"""Ranking a split with an R2ec model: greedy reasoning, user vectors, full ranking, one writer.

What this module chose, and why:

* **One core, two callers**: :func:`rank_split` is what ``reczero eval`` of an R2ec run writes and
  what the trainer's periodic validation computes (valid NDCG@10 picks the best checkpoint), so the
  two figures are computed the same way.
* **Greedy reasoning** up to ``max_new_tokens`` (the reference: 640), stopped at ``<answer>``; a
  reasoning cut at the limit gets ``<answer>`` appended (as in training). With ``no_reasoning`` the
  user vector is read right after the prompt. Prompts are generated longest first in batches.
* **Full ranking** over the catalog with :func:`reczero.rankings.rank_rows` (history masked, ties
  pessimistic, unknown targets misses), the item table computed by the same model; the files are
  written by :func:`reczero.rankings.write_rankings`.
* **The run's own prompt**: evaluation reads the prompt options and τ from ``RUN/config.yaml``, so
  a model is never prompted unlike its training.
* ``--backend vllm`` is not offered for R2ec yet (the user vector needs the policy's hidden state,
  which vLLM does not return; reasoning could be generated there and read here): refused clearly.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import yaml

from reczero.errors import ReczeroError

log = logging.getLogger(__name__)

RECIPE = "R2ecRecipe"


def run_recipe(run: str | Path) -> dict[str, Any] | None:
    """The resolved ``R2ecRecipe`` of an R2ec run directory (or its ``model/``), else None."""
    given = Path(run).expanduser()
    for path in (given / "config.yaml", given.parent / "config.yaml" if given.name == "model" else None):
        if path is not None and path.is_file():
            text = path.read_text()
            if not text.startswith(f"# {RECIPE}:"):
                return None
            data = yaml.safe_load(text) or {}
            return data if isinstance(data, dict) else None
    return None


def prompt_options(values: dict[str, Any]):
    """The ``R2ecPromptOptions`` recorded in a run's config (defaults for keys added later)."""
    import dataclasses

    from reczero.config import R2ecPromptOptions

    names = {f.name for f in dataclasses.fields(R2ecPromptOptions)}
    return R2ecPromptOptions(**{k: v for k, v in values.items() if k in names})


def rank_split(r2ec: Any, df, rows, catalog: Any, table: Any, opts: Any, scale: Any, *, max_new_tokens: int,
               no_reasoning: bool = False, mask_history: bool = True, batch_size: int = 16, top_k: int = 20):
    """Rankings (the frame of :func:`reczero.rankings.rank_rows`) of the split rows ``df`` (full
    rows, for the prompts) and ``rows`` (the same samples from ``rankings.load_ranking_rows``).

    The frame's ``attrs`` also hold ``reasoning_tokens`` (mean generated tokens per sample)."""
    import numpy as np

    from reczero.r2ec.model import cosine_scores
    from reczero.r2ec.prompts import user_prompt
    from reczero.rankings import rank_rows

    if len(df) != len(rows) or list(df["sample_id"]) != list(rows["sample_id"]):
        raise ValueError("df and rows must hold the same samples in the same order")
    if list(table.ids) != list(catalog.ids):
        raise ReczeroError("the item-vector table does not follow the catalog (recompute it)")
    texts = [user_prompt(r, opts, r2ec.tokenizer, scale, no_reasoning=no_reasoning) for r in df.to_dict("records")]
    prompt_ids = r2ec.tokenize(texts)
    completions: list[list[int]] | None = None
    reasoning = 0.0
    if not no_reasoning:
        order = sorted(range(len(prompt_ids)), key=lambda i: -len(prompt_ids[i]))
        ids, sampled = r2ec.reason([prompt_ids[i] for i in order], max_new_tokens=max_new_tokens,
                                   batch_size=batch_size, greedy=True)
        completions = [[] for _ in prompt_ids]
        for pos, i in enumerate(order):
            completions[i] = ids[pos]
        reasoning = float(np.mean([sum(s) for s in sampled])) if sampled else 0.0
    users = r2ec.vectors(prompt_ids, completions, batch_size=batch_size)
    items = table.vectors

    def score_block(block):
        return cosine_scores(users[block], items, r2ec.tau).numpy()

    frame = rank_rows(score_block, rows, catalog, mask_history=mask_history, top_k=top_k)
    frame.attrs["reasoning_tokens"] = reasoning
    return frame


def evaluate_r2ec_run(cfg: Any) -> int:
    """`reczero eval RUN` for an R2ec run: rankings.parquet + metrics.json in RUN/eval/<split>."""
    import torch

    from reczero.config import save_config
    from reczero.data import schema
    from reczero.evaluate import resolve_target
    from reczero.models import configure_threads, load_model
    from reczero.r2ec.item_table import load_or_compute_table
    from reczero.r2ec.model import R2ecModel
    from reczero.rankings import ItemCatalog, load_ranking_rows, write_rankings

    if cfg.backend != "transformers":
        raise ReczeroError("--backend vllm is not available for R2ec runs yet: the user vector needs the model's "
                           "hidden state; use --backend transformers")
    recipe = run_recipe(cfg.model)
    torch.manual_seed(cfg.seed)
    model_path, out, method = resolve_target(cfg)
    opts = prompt_options(recipe)
    df = schema.load_split(cfg.data, cfg.split, cfg.limit)
    if len(df) == 0:
        raise ReczeroError(f"{schema.split_path(cfg.data, cfg.split)}: no samples to evaluate")
    rows = load_ranking_rows(cfg.data, cfg.split).head(len(df)).reset_index(drop=True)
    scale = schema.rating_scale(cfg.data)
    model, tokenizer = load_model(model_path)
    configure_threads(cfg.threads, model)
    r2ec = R2ecModel(model, tokenizer, tau=float(recipe.get("tau", 0.02)))
    catalog = ItemCatalog.from_data(cfg.data)
    t0 = time.time()
    table = load_or_compute_table(r2ec, model_path, cfg.data, catalog, opts,
                                  batch_size=int(recipe.get("item_batch_size", 64)))
    save_config(cfg, out)
    no_reasoning = not bool(recipe.get("reasoning", True))
    trained = recipe.get("max_completion_length")
    if not no_reasoning and trained is not None and trained != cfg.max_new_tokens:
        log.warning("%s reasoned up to %s tokens in training; evaluating with --max-new-tokens %d",
                    model_path, trained, cfg.max_new_tokens)
    frame = rank_split(r2ec, df, rows, catalog, table, opts, scale, max_new_tokens=cfg.max_new_tokens,
                       no_reasoning=no_reasoning, mask_history=bool(recipe.get("mask_history", True)),
                       batch_size=cfg.batch_size)
    metrics = write_rankings(out, frame, method=method, split=cfg.split, data_dir=cfg.data,
                             extra={"model": model_path, "system": "r2ec", "no_reasoning": no_reasoning,
                                    "max_new_tokens": cfg.max_new_tokens, "limit": cfg.limit,
                                    "reasoning_tokens_mean": frame.attrs["reasoning_tokens"],
                                    "eval_seconds": round(time.time() - t0, 1)})
    print(f"{method} on {cfg.split} (n={metrics['n']}, {metrics['n_items']} items): NDCG@10 {metrics['ndcg@10']:.4f}  "
          f"Hit@10 {metrics['hit@10']:.4f}  MRR {metrics['mrr']:.4f}  -> {out}")
    return 0
