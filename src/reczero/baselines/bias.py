"""``bias``: the biased baseline ``r_ui ~ mu + b_u + b_i`` (Koren 2010, section 2.1).

Fitted by alternating closed-form sweeps (the ALS variant of Surprise's ``BaselineOnly``): with
the user biases fixed, each item bias is the shrunk mean residual ``sum (r - mu - b_u) / (reg + n_i)``,
then the same for users. ``reg`` acts as a pseudo-count: an item with few ratings stays near the
global mean. Ten sweeps converge to well below the noise of any rating data set. Unseen users or
items contribute a zero bias (named in the fallback).
"""

from __future__ import annotations

import numpy as np

from reczero.baselines.rating import Baseline, IdIndex, bias_sweeps, cf_fallback


class BiasBaseline(Baseline):
    name = "bias"
    HPARAMS = ("reg", "epochs")

    def __init__(self, *, reg: float = 5.0, epochs: int = 10, **kw) -> None:
        super().__init__(**kw)
        if reg < 0 or epochs < 1:
            raise ValueError(f"bias: reg must be >= 0 and epochs >= 1, got reg={reg}, epochs={epochs}")
        self.reg = reg
        self.epochs = epochs

    def _fit(self, train, valid) -> None:
        self.index_ = IdIndex(train)
        u, i = self.index_.encode(train)
        residual = train["rating"].to_numpy(dtype=np.float64) - self.global_mean_
        self.b_u_, self.b_i_ = bias_sweeps(u, i, residual, len(self.index_.users), len(self.index_.items),
                                           reg_user=self.reg, reg_item=self.reg, sweeps=self.epochs)

    def _predict(self, df):
        u, i = self.index_.encode(df)
        values = self.global_mean_ + np.where(u >= 0, self.b_u_[np.maximum(u, 0)], 0.0) \
            + np.where(i >= 0, self.b_i_[np.maximum(i, 0)], 0.0)
        return values, cf_fallback(u, i)
