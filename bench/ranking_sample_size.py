"""How many training users a learner of R2ec's score form needs before it ranks above popularity.

    python bench/ranking_sample_size.py --data DATA [--users 2000 10000 40000] [--seeds 0 1]
                                        [--epochs 30] [--dim 32] [--tau 0.02] [--no-item-ids]

A bag-of-attributes two-tower model with R2ec's score, cosine / τ over the whole catalogue: the user
vector is ``normalize(a_u · E_user + b)`` (``a_u`` the share of the history window's items carrying
each attribute, what R2ec's user prompt shows with ``history_attributes``), the item vector
``normalize(x_j · E_item + e_j)`` (``x_j`` the item's attributes, ``e_j`` a learned per-item vector
that can carry popularity; ``--no-item-ids`` drops it). Trained on the first ``n`` of a seeded
shuffle of the train split with the full-catalogue softmax (history window masked, the target never),
Adam lr 1e-2, batch 64; validated after every epoch on all valid samples with the library's full
ranking (``reczero.rankings.rank_rows``) and the best epoch kept; that epoch is scored once on
``--split``, against popularity by the paired bootstrap of per-sample NDCG@10.

Why: R2ec-tiny, its no-reasoning arm and the plain two-tower probe (``bench/r2ec_two_tower.py``)
all stop at popularity on the ranking demo's world, while ``bench/ranking_headroom.py`` shows
+0.025 of taste above it. This asks the data side of that: how many users a model with far fewer
degrees of freedom than an LLM, reading exactly the taste features, must see before cosine / τ
gets above popularity. A diagnostic, not a method of the library: a few lines around one loss, in
plain torch (no library trains this model form).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from ranking_headroom import attribute_matrix  # noqa: E402  (the sibling probe's attribute table)

from reczero.baselines import make_ranker, rank_ranker_rows  # noqa: E402
from reczero.metrics import bootstrap_mean  # noqa: E402
from reczero.rankings import load_ranking_rows, per_sample_ndcg, rank_rows  # noqa: E402


def taste_features(rows, matrix: torch.Tensor, row_of: dict[str, int]) -> tuple[torch.Tensor, list[list[int]]]:
    """Each row's attribute shares over its history window, and the window's catalogue rows."""
    histories = [[row_of[h] for h in history if h in row_of] for history in rows["history"]]
    shares = torch.zeros(len(histories), matrix.shape[1])
    for i, known in enumerate(histories):
        if known:
            shares[i] = matrix[known].mean(0)
    return shares, histories


class BagTwoTower(torch.nn.Module):
    """cosine(user, item) / τ with bag-of-attribute towers (and optional per-item vectors)."""

    def __init__(self, n_attributes: int, n_items: int, dim: int, tau: float, item_ids: bool):
        super().__init__()
        self.user = torch.nn.Linear(n_attributes, dim)
        self.item = torch.nn.Linear(n_attributes, dim, bias=False)
        self.ids = torch.nn.Parameter(torch.zeros(n_items, dim)) if item_ids else None
        self.tau = tau

    def logits(self, shares: torch.Tensor, matrix: torch.Tensor) -> torch.Tensor:
        items = self.item(matrix) + (self.ids if self.ids is not None else 0)
        u = torch.nn.functional.normalize(self.user(shares), dim=-1)
        return u @ torch.nn.functional.normalize(items, dim=-1).T / self.tau


def fit_and_score(data: Path, n: int, seed: int, args, catalog, matrix, row_of, split_rows) -> dict:
    torch.manual_seed(seed)
    train = load_ranking_rows(data, "train")
    train = train.iloc[np.random.default_rng(seed).permutation(len(train))[:n]].reset_index(drop=True)
    shares, histories = taste_features(train, matrix, row_of)
    targets = torch.as_tensor(catalog.index(list(train["item_id"])))
    model = BagTwoTower(matrix.shape[1], matrix.shape[0], args.dim, args.tau, not args.no_item_ids)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)

    def ndcg(rows, feats) -> np.ndarray:
        with torch.no_grad():
            scores = model.logits(feats, matrix).numpy()
        return per_sample_ndcg(rank_rows(lambda block: scores[np.asarray(block)], rows, catalog)["rank"], 10)

    (valid, valid_feats), (rows, feats) = split_rows
    best, best_state, best_epoch = -1.0, None, 0
    for epoch in range(1, args.epochs + 1):
        order = torch.randperm(len(targets))
        for start in range(0, len(order), 64):
            batch = order[start:start + 64]
            logits = model.logits(shares[batch], matrix)
            mask = torch.zeros_like(logits, dtype=torch.bool)
            for r, i in enumerate(batch.tolist()):
                mask[r, histories[i]] = True
                mask[r, targets[i]] = False
            loss = torch.nn.functional.cross_entropy(logits.masked_fill(mask, float("-inf")), targets[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        score = float(ndcg(valid, valid_feats).mean())
        if score > best:
            best, best_epoch = score, epoch
            best_state = {k: v.clone() for k, v in model.state_dict().items()}
    model.load_state_dict(best_state)
    return {"valid": best, "epoch": best_epoch, "per_sample": ndcg(rows, feats)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="a prepared dataset with item attributes (e.g. the ranking demo's OUT/ranking/data)")
    parser.add_argument("--users", type=int, nargs="+", default=[2000, 10000, 40000],
                        help="training-set sizes tried (the first n of a seeded shuffle of the train split)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1], help="seeds of the shuffle and the initialisation")
    parser.add_argument("--epochs", type=int, default=30, help="passes over the n samples; the best by valid NDCG@10 is kept")
    parser.add_argument("--dim", type=int, default=32, help="vector size of both towers")
    parser.add_argument("--tau", type=float, default=0.02, help="cosine temperature (R2ec's τ)")
    parser.add_argument("--no-item-ids", action="store_true", help="items are their attributes only (no per-item vector)")
    parser.add_argument("--split", default="test", help="the split scored once at the best epoch (default test)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)

    popularity = make_ranker("popularity").fit(load_ranking_rows(args.data, "train", timestamps=True))
    catalog = popularity.catalog
    table, row_of = attribute_matrix(Path(args.data), catalog)
    if not table.any():
        print(f"{args.data}: no item has attributes; nothing to measure", file=sys.stderr)
        return 2
    matrix = torch.from_numpy(table)
    valid, rows = load_ranking_rows(args.data, "valid"), load_ranking_rows(args.data, args.split)
    split_rows = ((valid, taste_features(valid, matrix, row_of)[0]), (rows, taste_features(rows, matrix, row_of)[0]))
    pop = per_sample_ndcg(rank_ranker_rows(popularity, rows)["rank"], 10)
    print(f"{len(catalog)} items, {table.shape[1]} attributes; popularity {args.split} NDCG@10 {pop.mean():.4f} "
          f"({len(rows)} samples)", flush=True)
    for n in args.users:
        for seed in args.seeds:
            started = time.perf_counter()
            out = fit_and_score(Path(args.data), n, seed, args, catalog, matrix, row_of, split_rows)
            d, lo, hi = bootstrap_mean(out["per_sample"] - pop)
            print(f"users {n} seed {seed}: valid {out['valid']:.4f} (epoch {out['epoch']}); {args.split} "
                  f"{out['per_sample'].mean():.4f}, - popularity {d:+.4f} [{lo:+.4f}, {hi:+.4f}] "
                  f"({time.perf_counter() - started:.0f} s)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
