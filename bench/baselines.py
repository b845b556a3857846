"""Anchor our numpy/torch baselines against Surprise on MovieLens (ml-latest-small).

Same random 80/20 split of ``ratings.csv`` for both libraries, several seeds, run side by side in
one process (interleaved, so machine load hits both alike). Our ``mf`` fits on the full 80% with
its default epochs (no validation split, so neither side sees extra data); Surprise's ``SVD`` runs
with its defaults (100 factors, 20 epochs, lr 0.005, reg 0.02). Fit times exclude data loading for
both; Surprise's ``build_full_trainset`` (its id mapping) is reported separately, while ours maps ids
inside ``fit`` and is timed with it. torch runs on one thread, as Surprise does.

    python bench/baselines.py [--data ../shared/data/ml-latest-small] [--seeds 0,1,2] [--svdpp]

Target (issue 5): our ``mf`` MAE <= Surprise SVD's MAE, and our fit no slower.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared/data/ml-latest-small"


def split(ratings: pd.DataFrame, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    mask = np.random.default_rng(seed).random(len(ratings)) < 0.8
    return ratings[mask].reset_index(drop=True), ratings[~mask].reset_index(drop=True)


def score(truth: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    return {"mae": float(np.mean(np.abs(truth - pred))), "rmse": float(np.sqrt(np.mean((truth - pred) ** 2)))}


def run_ours(method: str, train, test, seed: int) -> dict:
    from reczero.baselines import make_baseline
    from reczero.data.schema import RatingScale

    model = make_baseline(method, scale=RatingScale(0.5, 5.0, 0.5), seed=seed)
    started = time.perf_counter()
    model.fit(train)
    fit = time.perf_counter() - started
    return {"fit_s": fit, **score(test["rating"].to_numpy(), model.predict(test))}


def run_surprise(algo_name: str, train, test, seed: int) -> dict:
    import surprise

    started = time.perf_counter()
    data = surprise.Dataset.load_from_df(train[["user_id", "item_id", "rating"]], surprise.Reader(rating_scale=(0.5, 5.0)))
    trainset = data.build_full_trainset()
    prep = time.perf_counter() - started
    algo = getattr(surprise, algo_name)(random_state=seed) if algo_name != "BaselineOnly" else surprise.BaselineOnly(verbose=False)
    started = time.perf_counter()
    algo.fit(trainset)
    fit = time.perf_counter() - started
    pred = np.array([algo.predict(u, i).est for u, i in zip(test["user_id"], test["item_id"], strict=True)])
    return {"fit_s": fit, "prep_s": prep, **score(test["rating"].to_numpy(), pred)}


def main() -> None:
    import torch

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(DEFAULT_DATA), help="MovieLens folder with ratings.csv")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--svdpp", action="store_true", help="Also ours svdpp (Surprise's SVDpp takes minutes; not run).")
    parser.add_argument("--json", default=None, help="Write all numbers to this JSON file.")
    args = parser.parse_args()
    torch.set_num_threads(1)
    ratings = pd.read_csv(Path(args.data) / "ratings.csv").rename(columns={"userId": "user_id", "movieId": "item_id"})
    ratings["user_id"] = ratings["user_id"].astype(str)
    ratings["item_id"] = ratings["item_id"].astype(str)
    seeds = [int(s) for s in args.seeds.split(",")]
    pairs = [("ours mf", lambda tr, te, s: run_ours("mf", tr, te, s)),
             ("Surprise SVD", lambda tr, te, s: run_surprise("SVD", tr, te, s)),
             ("ours bias", lambda tr, te, s: run_ours("bias", tr, te, s)),
             ("Surprise BaselineOnly", lambda tr, te, s: run_surprise("BaselineOnly", tr, te, s))]
    if args.svdpp:
        pairs.append(("ours svdpp", lambda tr, te, s: run_ours("svdpp", tr, te, s)))
    warm_train, warm_test = split(ratings.sample(5000, random_state=0), 0)
    for _, fn in pairs:                                  # warm-up: torch's first-call costs, imports
        fn(warm_train, warm_test, 0)
    results: dict[str, list[dict]] = {name: [] for name, _ in pairs}
    for seed in seeds:
        train, test = split(ratings, seed)
        for name, fn in pairs:
            results[name].append(fn(train, test, seed))
            print(f"seed {seed} {name:22s} {json.dumps({k: round(v, 4) for k, v in results[name][-1].items()})}", flush=True)

    print(f"\n{datetime.now(UTC):%Y-%m-%d}, {platform.node()}, {platform.processor() or platform.machine()}, "
          f"torch threads 1, {len(ratings)} ratings, random 80/20 split, seeds {seeds}\n")
    print("| method | MAE (mean ± sd) | RMSE (mean ± sd) | fit s (median) | fit time / Surprise SVD |")
    print("|---|---|---|---|---|")
    svd_fit = np.array([r["fit_s"] for r in results["Surprise SVD"]])
    for name, rows in results.items():
        mae, rmse, fit = (np.array([r[k] for r in rows]) for k in ("mae", "rmse", "fit_s"))
        print(f"| {name} | {mae.mean():.4f} ± {mae.std():.4f} | {rmse.mean():.4f} ± {rmse.std():.4f} | "
              f"{np.median(fit):.3f} | {np.median(fit / svd_fit):.2f} |")
    ours, svd = results["ours mf"], results["Surprise SVD"]
    mae_ok = all(o["mae"] <= s["mae"] for o, s in zip(ours, svd, strict=True))
    fit_ok = np.median([o["fit_s"] / s["fit_s"] for o, s in zip(ours, svd, strict=True)]) <= 1.0
    print(f"\ntarget mf MAE <= SVD MAE on every seed: {'yes' if mae_ok else 'NO'}; "
          f"mf fit no slower (median ratio <= 1): {'yes' if fit_ok else 'NO'}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
