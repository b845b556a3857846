"""The rating-baseline contract (Surprise-like): ``fit(train, valid=None) -> self``, ``predict(df) -> ndarray``.

What this module chose, and why:

* One small base class, as Surprise's ``AlgoBase``: it checks the training frame, records the
  training global mean and the rating scale, and clips every prediction to that scale. Subclasses
  implement ``_fit`` and ``_predict``; ``_predict`` also names, per row, the fallback it used (or
  None), so ``predictions.parquet`` says which predictions were not the method's own.
* Frames are pandas DataFrames with ``user_id``, ``item_id``, ``rating`` (train/valid) and, for the
  prompt-only baselines, the samples' ``user_avg`` / ``item_avg``. Ids are mapped to dense indices
  with a ``pandas.Index``; an id unseen in training maps to -1 and falls back to the biases that
  are known, else the global mean.
* Without an explicit scale, the scale is the range of the training ratings.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from reczero.data.schema import RatingScale
from reczero.errors import ReczeroError

log = logging.getLogger(__name__)

TRAIN_COLUMNS = ("user_id", "item_id", "rating")


def check_frame(df, columns: tuple[str, ...], what: str) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ReczeroError(f"{what}: missing column(s) {', '.join(missing)}; expected {', '.join(columns)}")


class Baseline:
    """Base of every baseline. ``HPARAMS`` lists the hyper-parameters a subclass accepts."""

    name = ""
    HPARAMS: tuple[str, ...] = ()

    def __init__(self, *, scale: RatingScale | None = None, seed: int = 0) -> None:
        self.scale = scale
        self.seed = seed
        self.global_mean_: float | None = None
        self.history_: list[dict[str, Any]] = []      # per-epoch log of iterative methods

    # -- the contract ---------------------------------------------------------------------------

    def fit(self, train, valid=None) -> Baseline:
        check_frame(train, TRAIN_COLUMNS, f"{self.name} training data")
        if len(train) == 0:
            raise ReczeroError(f"{self.name}: the training data is empty")
        ratings = train["rating"].to_numpy(dtype=np.float64)
        if not np.isfinite(ratings).all():
            raise ReczeroError(f"{self.name}: training ratings contain NaN or infinite values")
        if valid is not None:
            check_frame(valid, TRAIN_COLUMNS, f"{self.name} validation data")
            if len(valid) == 0:
                valid = None
        self.global_mean_ = float(ratings.mean())
        if self.scale is None:
            self.scale = RatingScale(float(ratings.min()), float(ratings.max()))
        self._fit(train, valid)
        return self

    def predict(self, df) -> np.ndarray:
        """Predictions for the rows of ``df``, clipped to the rating scale."""
        return self.predict_with_fallback(df)[0]

    def predict_with_fallback(self, df) -> tuple[np.ndarray, np.ndarray]:
        """``(predictions, fallback)``: ``fallback[i]`` names the fallback used for row i, or None."""
        if self.global_mean_ is None:
            raise ReczeroError(f"{self.name}: call fit() before predict()")
        values, fallback = self._predict(df)
        values = np.clip(np.asarray(values, dtype=np.float64), self.scale.lo, self.scale.hi)
        return values, np.asarray(fallback, dtype=object)

    # -- for subclasses -------------------------------------------------------------------------

    def _fit(self, train, valid) -> None:
        raise NotImplementedError

    def _predict(self, df) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={getattr(self, k)!r}" for k in self.HPARAMS)
        return f"{type(self).__name__}({params})"


class IdIndex:
    """Dense indices of the users and items seen in training; unseen ids map to -1."""

    def __init__(self, train) -> None:
        import pandas as pd

        self.users = pd.Index(pd.unique(train["user_id"]))
        self.items = pd.Index(pd.unique(train["item_id"]))

    def encode(self, df) -> tuple[np.ndarray, np.ndarray]:
        return (self.users.get_indexer(df["user_id"]).astype(np.int64),
                self.items.get_indexer(df["item_id"]).astype(np.int64))


def cf_fallback(u: np.ndarray, i: np.ndarray) -> np.ndarray:
    """Fallback names of a collaborative model: which of user/item was unseen in training."""
    out = np.full(len(u), None, dtype=object)
    out[(u < 0) & (i >= 0)] = "item_bias"
    out[(u >= 0) & (i < 0)] = "user_bias"
    out[(u < 0) & (i < 0)] = "global_mean"
    return out


def bias_sweeps(u: np.ndarray, i: np.ndarray, residual: np.ndarray, n_users: int, n_items: int, *,
                reg_user: float, reg_item: float, sweeps: int) -> tuple[np.ndarray, np.ndarray]:
    """Regularised user and item biases of ``residual ~ b_u + b_i`` by alternating closed forms
    (each sweep: ``b_i = sum_u (r - b_u) / (reg_item + n_i)``, then the same for ``b_u``)."""
    n_u = np.bincount(u, minlength=n_users)
    n_i = np.bincount(i, minlength=n_items)
    b_u = np.zeros(n_users)
    b_i = np.zeros(n_items)
    for _ in range(sweeps):
        b_i = np.bincount(i, residual - b_u[u], minlength=n_items) / (reg_item + n_i)
        b_u = np.bincount(u, residual - b_i[i], minlength=n_users) / (reg_user + n_u)
    return b_u, b_i
