"""A capacity probe for R2ec's model: the same base trained as a plain two-tower next-item model.

    python bench/r2ec_two_tower.py --data DATA --base BASE [--steps 300] [--lr 1e-3] [--users 32]
                                   [--eval-every 50] [--recipe RUN/config.yaml] [--split test]

No reasoning, no RL: each step reads the no-reasoning user vector (the state at ``<answer>``
pre-filled after the prompt) of ``--users`` training samples and the vector of **every** catalogue
item, both with gradient, and minimises the cross-entropy of the target under cosine / τ over the
whole catalogue (the user's history window masked, as evaluation does). This is the most direct
supervision R2ec's vectors can get: nothing sampled, no advantage weighting, no stale table. AdamW,
learning rate decayed linearly to 0, gradients clipped at 1, dropout off, one torch thread.
Validation NDCG@10 (all valid samples, the library's full ranking) at step 0 and every
``--eval-every`` steps; at the end, the final model (no step picked) is scored once on ``--split``
against the popularity baseline, by the paired bootstrap of per-sample NDCG@10.

Why: R2ec-tiny stays below popularity on the ranking demo's world. If this probe also stays below
it, the bottleneck is the model and the number of users seen, not RecPO (bench/RESULTS.md, "What
limits R2ec-tiny"). A diagnostic, not a method of the library: the loop is written here because it
is a few lines around one loss, and RecPO's trainer (TRL) is what the library trains with.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
import yaml

from reczero.baselines import make_ranker, rank_ranker_rows
from reczero.data import schema
from reczero.metrics import bootstrap_mean
from reczero.models import load_model
from reczero.r2ec.evaluate import prompt_options, rank_users, user_prompt_ids
from reczero.r2ec.item_table import compute_item_table, item_prompt_ids, item_records
from reczero.r2ec.model import (
    R2ecModel,
    add_answer_token,
    answer_positions,
    backbone,
    gather_positions,
    pad_sequences,
)
from reczero.rankings import ItemCatalog, load_ranking_rows, per_sample_ndcg


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="the prepared dataset (e.g. the ranking demo's OUT/ranking/data)")
    parser.add_argument("--base", required=True, help="the model (e.g. OUT/ranking/base)")
    parser.add_argument("--recipe", help="an R2ec run's config.yaml for the prompt options and τ (default: the library's defaults)")
    parser.add_argument("--steps", type=int, default=300, help="optimiser steps")
    parser.add_argument("--users", type=int, default=32, help="training samples per step (distinct, drawn without replacement)")
    parser.add_argument("--lr", type=float, default=1e-3, help="peak learning rate (linear decay to 0)")
    parser.add_argument("--eval-every", type=int, default=50, help="validate every N steps")
    parser.add_argument("--seed", type=int, default=0, help="seed of the sample draw")
    parser.add_argument("--split", default="test", help="the split the final model is scored on once (default test)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    torch.manual_seed(args.seed)

    recipe = (yaml.safe_load(Path(args.recipe).read_text()) or {}) if args.recipe else {}
    opts, tau = prompt_options(recipe), float(recipe.get("tau", 0.02))
    scale = schema.rating_scale(args.data)
    model, tokenizer = load_model(args.base)
    add_answer_token(model, tokenizer)
    r2ec = R2ecModel(model, tokenizer, tau=tau)
    catalog = ItemCatalog.from_data(args.data)
    items = item_prompt_ids(r2ec, item_records(args.data, catalog), opts)

    train = schema.load_split(args.data, "train")
    pick = np.random.default_rng(args.seed).choice(len(train), size=min(len(train), args.steps * args.users), replace=False)
    train = train.iloc[pick].reset_index(drop=True)
    rows = load_ranking_rows(args.data, "train").set_index("sample_id").loc[list(train["sample_id"])].reset_index()
    users = user_prompt_ids(r2ec, train, opts, scale, no_reasoning=True)
    targets = torch.from_numpy(catalog.index(list(train["item_id"])))
    histories = [catalog.index(list(h)) for h in rows["history"]]
    valid, valid_rows = schema.load_split(args.data, "valid"), load_ranking_rows(args.data, "valid")
    valid_users = user_prompt_ids(r2ec, valid, opts, scale, no_reasoning=True)
    final = schema.load_split(args.data, args.split)
    final_rows = load_ranking_rows(args.data, args.split).set_index("sample_id").loc[list(final["sample_id"])].reset_index()
    final_users = user_prompt_ids(r2ec, final, opts, scale, no_reasoning=True)
    trunk = backbone(model)

    def read(prompts: list[list[int]]) -> torch.Tensor:
        ids, mask = pad_sequences(prompts, None, r2ec.pad_id)
        hidden = trunk(input_ids=ids, attention_mask=mask, use_cache=False).last_hidden_state
        return gather_positions(hidden, answer_positions(ids, r2ec.answer_id))

    def ndcg(prompts, rows) -> np.ndarray:
        model.eval()
        with torch.no_grad():
            table = compute_item_table(r2ec, items, list(catalog.ids), "probe")
            vectors = r2ec.vectors(prompts, None, batch_size=32)
        model.train()
        return per_sample_ndcg(rank_users(vectors, rows, catalog, table, tau)["rank"], 10)

    def validate() -> float:
        return float(ndcg(valid_users, valid_rows).mean())

    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    print(f"step 0: valid NDCG@10 {validate():.4f} ({len(valid)} samples, {len(catalog)} items)", flush=True)
    steps = len(train) // args.users
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1 - s / steps)
    started = time.perf_counter()
    for step in range(1, steps + 1):
        part = slice((step - 1) * args.users, step * args.users)
        u = torch.nn.functional.normalize(read(users[part]), dim=-1)
        v = torch.nn.functional.normalize(torch.cat([read(items[i:i + 64]) for i in range(0, len(items), 64)]), dim=-1)
        logits = u @ v.T / tau
        mask = torch.zeros_like(logits, dtype=torch.bool)
        for row, (history, target) in enumerate(zip(histories[part], targets[part].tolist(), strict=True)):
            mask[row, history] = True
            mask[row, target] = False
        loss = torch.nn.functional.cross_entropy(logits.masked_fill(mask, float("-inf")), targets[part])
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        if step % args.eval_every == 0 or step == steps:
            print(f"step {step}: loss {loss.item():.3f}, valid NDCG@10 {validate():.4f} "
                  f"({time.perf_counter() - started:.0f} s)", flush=True)
    probe = ndcg(final_users, final_rows)
    popularity = make_ranker("popularity").fit(load_ranking_rows(args.data, "train", timestamps=True))
    pop = per_sample_ndcg(rank_ranker_rows(popularity, final_rows)["rank"], 10)
    d, lo, hi = bootstrap_mean(probe - pop)
    print(f"final model, {args.split} ({len(final_rows)} samples): NDCG@10 {probe.mean():.4f}; popularity {pop.mean():.4f}; "
          f"difference {d:+.4f} [{lo:+.4f}, {hi:+.4f}] (95%, paired)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
