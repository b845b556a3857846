"""RecWorld's Bayes floor: the best MAE and RMSE any predictor could reach on a world's ratings.

What this module chose, and why:

* **Exact, not Monte Carlo.** A rating is ``m + N(0, σ²)`` rounded to the scale's step and clipped,
  so given the true expected rating ``m`` its predictive distribution over the rating grid is
  ``P(y = k) = Φ((k + h − m)/σ) − Φ((k − h − m)/σ)`` (half step ``h``; the outer cells reach ±∞,
  which is the clipping). ``scipy.special.ndtr`` evaluates Φ for a million ratings at once.
* **The Bayes predictors**: for MAE the median of that distribution, for RMSE its mean. The floor
  is their error on the realised ratings (``mae``, ``rmse``); the manifest also carries its
  expectation under the model (``mae_expected``, ``rmse_expected``), which differs only by sampling
  noise. ``tests/test_recworld.py`` checks both against Monte Carlo.
* Per split, the targets written by ``write_prepared`` are matched back to the generated
  interactions by (user, item), which is unique in RecWorld, and checked on timestamp and rating.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from reczero.data.schema import SPLITS, RatingScale, split_path


def draw_ratings(expected: np.ndarray, noise: float, scale: RatingScale, rng: np.random.Generator) -> np.ndarray:
    """``expected + N(0, noise²)``, rounded to the scale's step and clipped to its range."""
    latent = expected + noise * rng.standard_normal(expected.shape)
    return np.clip(np.round(latent / scale.step) * scale.step, scale.lo, scale.hi)


# ------------------------------------------------------------------------------------------------
# The Bayes floor
# ------------------------------------------------------------------------------------------------


def rating_grid(scale: RatingScale) -> np.ndarray:
    return np.arange(scale.lo, scale.hi + scale.step / 2, scale.step)


def predictive(expected: np.ndarray, noise: float, scale: RatingScale) -> np.ndarray:
    """(n, K) exact probabilities of each grid rating given the latent expected ratings."""
    from scipy.special import ndtr

    grid = rating_grid(scale)
    edges = grid[:-1] + scale.step / 2                                          # (K-1,) inner edges
    cdf = ndtr((edges[None, :] - np.asarray(expected, np.float64)[:, None]) / noise)
    n = cdf.shape[0]
    return np.diff(np.concatenate([np.zeros((n, 1)), cdf, np.ones((n, 1))], axis=1), axis=1)


def bayes_floor(expected: np.ndarray, ratings: np.ndarray, noise: float, scale: RatingScale) -> dict[str, Any]:
    """MAE of the predictive median and RMSE of the predictive mean, on the realised ``ratings``.

    Also the floor's expectation under the model (``mae_expected``, ``rmse_expected``), which
    differs from the realised one only by sampling noise.
    """
    ratings = np.asarray(ratings, np.float64)
    if len(ratings) == 0:
        return {"mae": None, "rmse": None, "n": 0, "method": "exact"}
    probs = predictive(expected, noise, scale)
    grid = rating_grid(scale)
    median = grid[np.argmax(np.cumsum(probs, axis=1) >= 0.5, axis=1)]
    mean = probs @ grid
    var = probs @ grid**2 - mean**2
    return {
        "mae": float(np.mean(np.abs(ratings - median))),
        "rmse": float(np.sqrt(np.mean((ratings - mean) ** 2))),
        "n": int(len(ratings)),
        "mae_expected": float(np.mean(np.sum(probs * np.abs(grid[None, :] - median[:, None]), axis=1))),
        "rmse_expected": float(np.sqrt(np.mean(var))),
        "method": "exact: normal CDF of the rounding/clipping cells given the true expected ratings "
                  "(median for MAE, mean for RMSE)",
    }


def split_floors(data_dir: Path, world) -> dict[str, dict[str, Any]]:
    """The floor of each written split of ``world`` (a ``recworld.World``; ids "U<n>", "I<n>")."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    p = world.params
    world_keys = world.user * p.items + world.item
    order = np.argsort(world_keys, kind="stable")
    floors = {}
    for split in SPLITS:
        t = pq.read_table(split_path(data_dir, split), columns=["user_id", "item_id", "timestamp", "rating"])
        u = pc.cast(pc.utf8_slice_codeunits(t["user_id"], 1), "int64").to_numpy()
        i = pc.cast(pc.utf8_slice_codeunits(t["item_id"], 1), "int64").to_numpy()
        pos = order[np.searchsorted(world_keys, u * p.items + i, sorter=order)]
        if not (np.array_equal(world.timestamp[pos], t["timestamp"].to_numpy())
                and np.array_equal(world.rating[pos], t["rating"].to_numpy())):
            raise AssertionError(f"{split}: written targets do not match the generated interactions")
        floors[split] = bayes_floor(world.expected[pos], world.rating[pos], p.noise, p.scale)
    return floors
