"""How much of a next-item ranking a prepared dataset leaves above popularity for a model that reads
item attributes: popularity against popularity + the user's taste for the item's attributes.

    python bench/ranking_headroom.py --data DATA [--split test] [--betas 0 1 2 3 5 10]

A hand-made ranker, not a method of the library: ``log(1 + c_j) + β · a_u · x_j``, with ``c_j`` item
j's count in the training interactions (the popularity baseline's counts, the same catalogue),
``x_j`` its attribute indicator vector and ``a_u`` the share of the user's history-window items
carrying each attribute (what R2ec's user prompt shows, with ``history_attributes``). β is chosen
on the valid split by NDCG@10 and then scored once on ``--split``; popularity is β = 0. Full
ranking with the library's protocol (``reczero.rankings.rank_rows``: history window masked,
pessimistic ties), and the paired bootstrap of per-sample NDCG@10 differences
(``reczero.metrics.bootstrap_mean``), as the demo's claims use.

Why: R2ec-tiny stays below popularity on the ranking demo's world (bench/RESULTS.md, "Ranking demo:
R2ec-tiny"). This says whether the data hold taste that the prompt's attributes reveal, i.e.
whether the gap is the world's or the model's.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from reczero.baselines import make_ranker
from reczero.data import schema
from reczero.metrics import bootstrap_mean
from reczero.rankings import load_ranking_rows, per_sample_ndcg, rank_rows


def attribute_matrix(data: Path, catalog) -> tuple[np.ndarray, dict[str, int]]:
    """(items x attributes) 0/1 matrix in catalogue order, and each catalogue item's row."""
    items = pq.read_table(Path(data) / schema.ITEMS, columns=["item_id", "attributes"]).to_pandas()
    attrs = dict(zip(items["item_id"], items["attributes"], strict=True))
    vocab = sorted({str(a) for values in items["attributes"] if values is not None for a in values})
    col = {a: i for i, a in enumerate(vocab)}
    ids = list(catalog.ids)
    matrix = np.zeros((len(ids), len(vocab)), dtype=np.float32)
    for row, item in enumerate(ids):
        for a in attrs.get(item) if attrs.get(item) is not None else []:
            matrix[row, col[str(a)]] = 1.0
    return matrix, {item: row for row, item in enumerate(ids)}


def rank(rows, catalog, log_count: np.ndarray, matrix: np.ndarray, row_of: dict[str, int], beta: float):
    histories = list(rows["history"])

    def score_block(block: np.ndarray) -> np.ndarray:
        out = np.repeat(log_count[None, :], len(block), axis=0)
        if beta:
            for k, i in enumerate(block):
                known = [row_of[h] for h in histories[int(i)] if h in row_of]
                if known:
                    out[k] += beta * (matrix @ matrix[known].mean(axis=0))
        return out

    return rank_rows(score_block, rows, catalog)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="a prepared dataset with item attributes (e.g. the ranking demo's OUT/ranking/data)")
    parser.add_argument("--split", default="test", help="the split scored once with the β chosen on valid (default test)")
    parser.add_argument("--betas", type=float, nargs="+", default=[0, 1, 2, 3, 5, 10],
                        help="the weights of the attribute term tried on valid (0 = popularity)")
    args = parser.parse_args(argv)

    popularity = make_ranker("popularity").fit(load_ranking_rows(args.data, "train", timestamps=True))
    catalog = popularity.catalog
    log_count = np.log1p(popularity.counts_.astype(np.float64)).astype(np.float32)
    matrix, row_of = attribute_matrix(Path(args.data), catalog)
    if not matrix.any():
        print(f"{args.data}: no item has attributes; nothing to measure", file=sys.stderr)
        return 2

    valid = load_ranking_rows(args.data, "valid")
    print(f"valid NDCG@10 by beta ({len(valid)} samples, {len(catalog)} items, {matrix.shape[1]} attributes):")
    by_beta = {}
    for beta in args.betas:
        by_beta[beta] = float(per_sample_ndcg(rank(valid, catalog, log_count, matrix, row_of, beta)["rank"], 10).mean())
        print(f"  beta {beta:g}: {by_beta[beta]:.4f}")
    best = max(by_beta, key=by_beta.get)

    rows = load_ranking_rows(args.data, args.split)
    pop = per_sample_ndcg(rank(rows, catalog, log_count, matrix, row_of, 0.0)["rank"], 10)
    taste = per_sample_ndcg(rank(rows, catalog, log_count, matrix, row_of, best)["rank"], 10)
    d, lo, hi = bootstrap_mean(taste - pop)
    print(f"{args.split} ({len(rows)} samples): popularity NDCG@10 {pop.mean():.4f}; popularity + attribute taste "
          f"(beta {best:g}, chosen on valid) {taste.mean():.4f}; difference {d:+.4f} [{lo:+.4f}, {hi:+.4f}] (95%, paired)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
