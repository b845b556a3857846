"""Ranking a split with an R2ec model: greedy reasoning, user vectors, full ranking, one writer.

What this module chose, and why:

* **One core, two callers**: :func:`read_users` (reasoning -> user vectors) and :func:`rank_users`
  (vectors -> full ranking) are what ``reczero eval`` of an R2ec run writes and what the trainer's
  periodic validation computes (:func:`rank_split`, in memory; valid NDCG@10 picks the best
  checkpoint), so the two figures are computed the same way.
* **Greedy reasoning** up to ``max_new_tokens`` (the reference: 640), stopped at ``<answer>``; a
  reasoning cut at the limit gets ``<answer>`` appended (as in training). With ``no_reasoning`` the
  user vector is read right after the prompt. Prompts are generated longest first in batches.
* **Resumable** like the rating eval (:mod:`reczero.evaluate`, the same
  :class:`~reczero.evaluate.ChunkStore`): the expensive part of each sample (its reasoning ids, how
  many tokens were sampled, the user vector as float32) is written per chunk of
  ``batch_size * CHUNK_BATCHES`` samples to ``OUT/partial/chunk-NNNNN.parquet``; a rerun skips the
  samples there, and ``fingerprint.json`` refuses chunks of other weights, data, split, backend,
  length, prompt options, ablation or item table. Only then are all vectors ranked, so an
  interrupted and resumed eval writes the same rankings as an uninterrupted one.
* **Full ranking** over the catalog with :func:`reczero.rankings.rank_rows` (history masked, ties
  pessimistic, unknown targets misses), the item table computed by the same model; the files are
  written by :func:`reczero.rankings.write_rankings`.
* **The run's own prompt**: evaluation reads the prompt options and τ from ``RUN/config.yaml``, so
  a model is never prompted unlike its training.
* ``--backend vllm`` (GPU) generates the reasoning only: vLLM gets the prompts as token ids and
  returns the sampled ids (:func:`reczero.generation.reason_vllm`, stopped at ``<answer>`` or EOS),
  which are closed like the transformers path's. The user vector needs the policy's hidden state,
  which vLLM does not return, so the transformers model still reads the vectors and the item table
  (both models share the GPU: :data:`VLLM_GPU_SHARE`). A LoRA adapter folder is refused (merge it).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from reczero.errors import ReczeroError

log = logging.getLogger(__name__)

RECIPE = "R2ecRecipe"
VLLM_GPU_SHARE = 0.5     # vLLM's default share of the GPU with --backend vllm (--vllm-gpu-memory-utilization); the
                         # transformers model reading the user vectors and the item table holds the rest (0.9 leaves it none)


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
    from reczero.config import R2ecPromptOptions

    names = {f.name for f in dataclasses.fields(R2ecPromptOptions)}
    return R2ecPromptOptions(**{k: v for k, v in values.items() if k in names})


def chunk_schema():
    """The rows of the eval's chunks: per sample, the expensive part (greedy reasoning, closed by
    ``<answer>``; how many of its tokens the model sampled; the user vector), all ranking needs."""
    import pyarrow as pa

    return pa.schema([("sample_id", pa.string()), ("reasoning_ids", pa.list_(pa.int32())),
                      ("sampled_tokens", pa.int32()), ("user_vector", pa.list_(pa.float32()))])


def user_prompt_ids(r2ec: Any, df, opts: Any, scale: Any, *, no_reasoning: bool) -> list[list[int]]:
    """Token ids of each split row's user prompt (:func:`reczero.r2ec.prompts.user_prompt`), in order."""
    from reczero.r2ec.prompts import user_prompt

    return r2ec.tokenize([user_prompt(r, opts, r2ec.tokenizer, scale, no_reasoning=no_reasoning)
                          for r in df.to_dict("records")])


def read_users(r2ec: Any, prompt_ids: list[list[int]], *, max_new_tokens: int, no_reasoning: bool = False,
               batch_size: int = 16, reason: Callable[[list[list[int]]], list[list[int]]] | None = None):
    """``(reasoning ids, sampled tokens per prompt, user vectors (B, H) float32)`` of prompts (token
    ids), in their order, batches formed in that order.

    The reasoning is greedy up to ``max_new_tokens`` and closed by
    :func:`reczero.r2ec.model.close_rollouts`; ``reason`` (prompt ids -> sampled ids, e.g. vLLM's)
    replaces the transformers generation. The vectors are always read by ``r2ec``'s own model. With
    ``no_reasoning`` the vector is read right after the prompt."""
    from reczero.r2ec.model import close_rollouts

    if no_reasoning:
        return [[] for _ in prompt_ids], [0] * len(prompt_ids), r2ec.vectors(prompt_ids, None, batch_size=batch_size)
    if reason is None:
        ids, sampled = r2ec.reason(prompt_ids, max_new_tokens=max_new_tokens, batch_size=batch_size, greedy=True)
    else:
        ids, sampled = close_rollouts(reason(prompt_ids), r2ec.answer_id, r2ec.stop_ids())
    return ids, [sum(s) for s in sampled], r2ec.vectors(prompt_ids, ids, batch_size=batch_size)


def rank_users(users: Any, rows, catalog: Any, table: Any, tau: float, *, mask_history: bool = True,
               top_k: int = 20):
    """:func:`reczero.rankings.rank_rows` of ``rows`` with ``users[i]`` (row ``i``'s user vector)
    scored against every item of ``table`` by cosine / τ."""
    from reczero.r2ec.model import cosine_scores
    from reczero.rankings import rank_rows

    if list(table.ids) != list(catalog.ids):
        raise ReczeroError("the item-vector table does not follow the catalog (recompute it)")

    def score_block(block):
        return cosine_scores(users[block], table.vectors, tau).numpy()

    return rank_rows(score_block, rows, catalog, mask_history=mask_history, top_k=top_k)


def rank_split(r2ec: Any, df, rows, catalog: Any, table: Any, opts: Any, scale: Any, *, max_new_tokens: int,
               no_reasoning: bool = False, mask_history: bool = True, batch_size: int = 16, top_k: int = 20):
    """Rankings (the frame of :func:`reczero.rankings.rank_rows`) of the split rows ``df`` (full
    rows, for the prompts) and ``rows`` (the same samples from ``rankings.load_ranking_rows``), in
    memory: the trainer's periodic validation.

    The frame's ``attrs`` also hold ``reasoning_tokens`` (mean sampled tokens per sample)."""
    import numpy as np
    import torch

    from reczero.generation import length_order

    if len(df) != len(rows) or list(df["sample_id"]) != list(rows["sample_id"]):
        raise ValueError("df and rows must hold the same samples in the same order")
    prompt_ids = user_prompt_ids(r2ec, df, opts, scale, no_reasoning=no_reasoning)
    order = length_order([len(ids) for ids in prompt_ids])
    _, sampled, vectors = read_users(r2ec, [prompt_ids[i] for i in order], max_new_tokens=max_new_tokens,
                                     no_reasoning=no_reasoning, batch_size=batch_size)
    users = torch.empty_like(vectors)
    users[torch.tensor(order)] = vectors              # back to df's order
    frame = rank_users(users, rows, catalog, table, r2ec.tau, mask_history=mask_history, top_k=top_k)
    frame.attrs["reasoning_tokens"] = float(np.mean(sampled)) if sampled else 0.0
    return frame


def evaluate_r2ec_run(cfg: Any) -> int:
    """`reczero eval RUN` for an R2ec run: rankings.parquet + metrics.json in RUN/eval/<split>,
    resumable through ``OUT/partial/`` chunks."""
    import numpy as np
    import pandas as pd
    import torch
    from tqdm.auto import tqdm

    from reczero.config import save_config
    from reczero.data import schema
    from reczero.evaluate import CHUNK_BATCHES, PARTIAL, ChunkStore, model_fingerprint, resolve_target
    from reczero.generation import length_order
    from reczero.models import configure_threads, load_model
    from reczero.r2ec.item_table import load_or_compute_table, table_stamp
    from reczero.r2ec.model import R2ecModel
    from reczero.rankings import ItemCatalog, load_ranking_rows, write_rankings

    recipe = run_recipe(cfg.model)
    torch.manual_seed(cfg.seed)
    model_path, out, method = resolve_target(cfg)
    opts = prompt_options(recipe)
    df = schema.load_split(cfg.data, cfg.split, cfg.limit)
    if len(df) == 0:
        raise ReczeroError(f"{schema.split_path(cfg.data, cfg.split)}: no samples to evaluate")
    rows = load_ranking_rows(cfg.data, cfg.split).head(len(df)).reset_index(drop=True)
    scale = schema.rating_scale(cfg.data)
    catalog = ItemCatalog.from_data(cfg.data)
    no_reasoning = not bool(recipe.get("reasoning", True))
    fingerprint = {**model_fingerprint(model_path), "data": str(Path(cfg.data).resolve()), "split": cfg.split,
                   "backend": cfg.backend, "max_new_tokens": cfg.max_new_tokens,
                   "prompt": dataclasses.asdict(opts), "no_reasoning": no_reasoning,
                   "item_table": table_stamp(model_path, cfg.data, opts)}
    store = ChunkStore(out / PARTIAL, fingerprint, chunk_schema())
    save_config(cfg, out)
    todo = store.remaining(df, schema.split_path(cfg.data, cfg.split))
    log.info("%s %s: %d samples, %d already read in %s, %d to go", method, cfg.split, len(df), len(df) - len(todo),
             store.dir, len(todo))
    llm = None
    if len(todo) and cfg.backend == "vllm" and not no_reasoning:
        from reczero.generation import load_vllm

        # loaded first: vLLM sizes its share from the free memory; the transformers model takes the rest
        llm = load_vllm(model_path, seed=cfg.seed, gpu_memory_utilization=cfg.vllm_gpu_memory_utilization or VLLM_GPU_SHARE)
    model, tokenizer = load_model(model_path)
    configure_threads(cfg.threads, model)
    r2ec = R2ecModel(model, tokenizer, tau=float(recipe.get("tau", 0.02)))
    t0 = time.time()
    table = load_or_compute_table(r2ec, model_path, cfg.data, catalog, opts,
                                  batch_size=int(recipe.get("item_batch_size", 64)))
    trained = recipe.get("max_completion_length")
    if not no_reasoning and trained is not None and trained != cfg.max_new_tokens:
        log.warning("%s reasoned up to %s tokens in training; evaluating with --max-new-tokens %d",
                    model_path, trained, cfg.max_new_tokens)

    if len(todo):
        reason = None
        if llm is not None:
            from reczero.generation import reason_vllm

            stops = [r2ec.answer_id, *r2ec.stop_ids()]

            def reason(prompt_ids):
                return reason_vllm(llm, prompt_ids, max_new_tokens=cfg.max_new_tokens, stop_ids=stops,
                                   seed=cfg.seed, progress=False)

        prompt_ids = user_prompt_ids(r2ec, todo, opts, scale, no_reasoning=no_reasoning)
        order = length_order([len(ids) for ids in prompt_ids])
        chunk = cfg.batch_size * CHUNK_BATCHES
        with tqdm(total=len(todo), desc=f"eval {method}", unit="sample") as bar:
            for start in range(0, len(order), chunk):
                idx = order[start:start + chunk]
                ids, sampled, users = read_users(r2ec, [prompt_ids[i] for i in idx], max_new_tokens=cfg.max_new_tokens,
                                                 no_reasoning=no_reasoning, batch_size=cfg.batch_size, reason=reason)
                path = store.write(pd.DataFrame({"sample_id": todo["sample_id"].iloc[idx].tolist(),
                                                 "reasoning_ids": ids, "sampled_tokens": sampled,
                                                 "user_vector": list(users.numpy())}))
                bar.update(len(idx))
                log.debug("wrote %s (%d samples)", path, len(idx))

    done = store.collect(df)
    users = torch.from_numpy(np.stack(list(done["user_vector"])).astype(np.float32))
    frame = rank_users(users, rows, catalog, table, r2ec.tau, mask_history=bool(recipe.get("mask_history", True)))
    metrics = write_rankings(out, frame, method=method, split=cfg.split, data_dir=cfg.data,
                             extra={"model": model_path, "system": "r2ec", "backend": cfg.backend,
                                    "no_reasoning": no_reasoning, "max_new_tokens": cfg.max_new_tokens,
                                    "limit": cfg.limit, "reasoning_tokens_mean": float(done["sampled_tokens"].mean()),
                                    "eval_seconds": round(time.time() - t0, 1)})
    print(f"{method} on {cfg.split} (n={metrics['n']}, {metrics['n_items']} items): NDCG@10 {metrics['ndcg@10']:.4f}  "
          f"Hit@10 {metrics['hit@10']:.4f}  MRR {metrics['mrr']:.4f}  -> {out}")
    return 0
