"""Accuracy and ranking metrics: pure numpy functions over arrays, the formula in each docstring.

What this module chose, and why:

* Rating metrics (``mae``, ``rmse``, ``pearson``) take the truth first, then the prediction, as
  Surprise's ``accuracy`` module and scikit-learn do. They are computed on the rating's own scale.
* Empty input and NaN values raise ``ValueError``: a metric of nothing, or of a missing prediction,
  is a bug upstream (a NaN would otherwise silently poison an average or be dropped by pandas).
* ``pearson`` of a constant series is undefined; it returns ``nan`` rather than pretending 0, and
  writers turn that ``nan`` into ``null``.
* :func:`paired_mae_difference` compares two predictors scored on the *same* samples by a paired
  bootstrap of the per-sample absolute errors (percentile interval): two methods' MAEs on 1,000
  shared samples differ by noise of a few hundredths, so an ordering is claimed only when the whole
  interval lies on one side of zero.
* Ranking metrics work on the 1-based rank of the one relevant item per user (the leave-one-out /
  next-item protocol of R2ec). :func:`target_ranks` computes those ranks from a score matrix and is
  **pessimistic on ties** (the target is placed after every item with an equal score), so a scorer
  that gives every item the same score ranks the target last instead of first.
* A target that could not be ranked at all (an item unknown at training time) has rank ``inf``:
  a miss at every K with reciprocal rank 0. ``NaN`` still raises (a rank that was never computed
  is a bug); :func:`miss_ranks` turns the null ranks of ``rankings.parquet`` into ``inf``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

ArrayLike = Sequence[float] | np.ndarray


def _as_array(values: ArrayLike, name: str) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64).ravel()
    if arr.size == 0:
        raise ValueError(f"{name} is empty: a metric needs at least one value")
    if np.isnan(arr).any():
        raise ValueError(f"{name} contains {int(np.isnan(arr).sum())} NaN value(s); every row needs a number")
    return arr


def _pair(y_true: ArrayLike, y_pred: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    t, p = _as_array(y_true, "y_true"), _as_array(y_pred, "y_pred")
    if t.shape != p.shape:
        raise ValueError(f"y_true has {t.size} values but y_pred has {p.size}")
    return t, p


def mae(y_true: ArrayLike, y_pred: ArrayLike) -> float:
    """Mean absolute error, ``MAE = 1/n * sum_i |y_i - y_hat_i|``.

    >>> mae([1, 2, 3], [1, 3, 5])
    1.0
    """
    t, p = _pair(y_true, y_pred)
    return float(np.mean(np.abs(t - p)))


def rmse(y_true: ArrayLike, y_pred: ArrayLike) -> float:
    """Root mean squared error, ``RMSE = sqrt(1/n * sum_i (y_i - y_hat_i)^2)``.

    >>> rmse([1, 2, 3], [1, 3, 5])
    1.2909944487358056
    """
    t, p = _pair(y_true, y_pred)
    return float(np.sqrt(np.mean((t - p) ** 2)))


def pearson(y_true: ArrayLike, y_pred: ArrayLike) -> float:
    """Pearson correlation ``r = cov(y, y_hat) / (std(y) * std(y_hat))``; ``nan`` if either is constant.

    >>> pearson([1, 2, 3], [2, 4, 6])
    1.0
    >>> pearson([1, 2, 3], [4, 4, 4])
    nan
    """
    t, p = _pair(y_true, y_pred)
    dt, dp = t - t.mean(), p - p.mean()
    denom = float(np.sqrt(np.sum(dt**2) * np.sum(dp**2)))
    if denom == 0.0:
        return float("nan")
    return float(np.clip(np.sum(dt * dp) / denom, -1.0, 1.0))


def paired_mae_difference(y_true: ArrayLike, pred_a: ArrayLike, pred_b: ArrayLike, *, n_boot: int = 2000,
                          level: float = 0.95, seed: int = 0) -> tuple[float, float, float]:
    """``MAE(a) - MAE(b)`` on shared samples, with a paired-bootstrap percentile interval ``(diff, lo, hi)``.

    Each bootstrap draw resamples the samples (with replacement) and recomputes the mean of
    ``|y - a| - |y - b|``; a negative ``hi`` means ``a`` is better than ``b`` at that ``level``.

    >>> d, lo, hi = paired_mae_difference([1, 2, 3, 4], [1, 2, 3, 4], [2, 3, 4, 5])
    >>> d, lo, hi
    (-1.0, -1.0, -1.0)
    """
    t, a = _pair(y_true, pred_a)
    _, b = _pair(y_true, pred_b)
    return bootstrap_mean(np.abs(t - a) - np.abs(t - b), n_boot=n_boot, level=level, seed=seed)


def bootstrap_mean(values: ArrayLike, *, n_boot: int = 2000, level: float = 0.95,
                   seed: int = 0) -> tuple[float, float, float]:
    """The mean of per-sample ``values`` with a bootstrap percentile interval ``(mean, lo, hi)``.

    :func:`paired_mae_difference` uses it on ``|y - a| - |y - b|``; ``bench/seeds.py`` on the same
    difference with each side's absolute error averaged over training seeds.

    >>> bootstrap_mean([0.5, 0.5, 0.5])
    (0.5, 0.5, 0.5)
    """
    d = _as_array(values, "values")
    rng = np.random.default_rng(seed)
    means = np.empty(n_boot)
    for start in range(0, n_boot, 250):  # draws in chunks: memory stays ~250 x n
        idx = rng.integers(0, d.size, size=(min(250, n_boot - start), d.size))
        means[start:start + len(idx)] = d[idx].mean(axis=1)
    tail = (1 - level) / 2
    lo, hi = np.quantile(means, [tail, 1 - tail])
    return float(d.mean()), float(lo), float(hi)


def _ranks(ranks: ArrayLike, k: int) -> np.ndarray:
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    arr = _as_array(ranks, "ranks")
    if (arr < 1).any() or (np.isfinite(arr) & (arr != np.floor(arr))).any():
        raise ValueError("ranks must be 1-based integers (1 = the target was ranked first)")
    return arr


def hit_at_k(ranks: ArrayLike, k: int) -> float:
    """Hit rate ``Hit@K = 1/n * sum_u [rank_u <= K]`` of the one relevant item per user.

    >>> hit_at_k([1, 3, 11], k=10)
    0.6666666666666666
    >>> hit_at_k([1, float("inf")], k=10)
    0.5
    """
    arr = _ranks(ranks, k)
    return float(np.mean(arr <= k))


def ndcg_at_k(ranks: ArrayLike, k: int) -> float:
    """``NDCG@K = 1/n * sum_u [rank_u <= K] / log2(rank_u + 1)`` with one relevant item per user
    (its ideal DCG is 1).

    >>> ndcg_at_k([1, 3, 11], k=10)
    0.5
    """
    arr = _ranks(ranks, k)
    return float(np.mean(np.where(arr <= k, 1.0 / np.log2(arr + 1.0), 0.0)))


def mrr(ranks: ArrayLike) -> float:
    """Mean reciprocal rank ``MRR = 1/n * sum_u 1 / rank_u`` (``inf`` = a miss, reciprocal rank 0).

    >>> mrr([1, 4, float("inf")])
    0.4166666666666667
    """
    arr = _ranks(ranks, 1)
    return float(np.mean(1.0 / arr))


def miss_ranks(ranks) -> np.ndarray:
    """Float64 ranks with every missing value (``None``, ``NaN``, ``pandas.NA``) as ``inf`` = a miss.

    >>> miss_ranks([3, None, float("nan")])
    array([ 3., inf, inf])
    """
    import pandas as pd

    arr = pd.Series(ranks, dtype="Float64").to_numpy(dtype=np.float64, na_value=np.inf)
    return np.where(np.isnan(arr), np.inf, arr)


def target_ranks(scores: np.ndarray, targets: ArrayLike) -> np.ndarray:
    """1-based rank of each row's target column in ``scores`` (shape ``(n_users, n_items)``),
    higher score = better, ties counted against the target.

    >>> target_ranks(np.array([[0.1, 0.9, 0.5], [1.0, 1.0, 1.0]]), [2, 0])
    array([2, 3])
    """
    scores = np.asarray(scores, dtype=np.float64)
    idx = np.asarray(targets, dtype=np.int64).ravel()
    if scores.ndim != 2 or scores.shape[0] != idx.size:
        raise ValueError(f"scores must be (n_users, n_items) with one target per row; got {scores.shape} and {idx.size} targets")
    if scores.shape[0] == 0:
        raise ValueError("scores is empty: a metric needs at least one user")
    if np.isnan(scores).any():
        raise ValueError("scores contain NaN")
    target = scores[np.arange(idx.size), idx][:, None]
    return (scores >= target).sum(axis=1).astype(np.int64)
