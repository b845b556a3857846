"""``mf``: biased matrix factorisation (Funk SVD, Koren 2009): ``r_ui ~ mu + b_u + b_i + p_u . q_i``.

What this module chose, and why:

* **Vectorised mini-batch SGD in torch** (no compiled extension): each step takes a shuffled batch
  of ratings, and scatters the per-rating SGD updates of Surprise's ``SVD`` into the factor tables
  with ``index_add_``. A user (or item) that occurs ``c`` times in one batch gets the sum of its
  ``c`` updates scaled by ``1/sqrt(c)``: plain sums diverge for heavy users in large batches, plain
  means learn them too slowly. Biases are packed into the factor rows (``[p_u, b_u, 1]`` and
  ``[q_i, 1, b_i]``) so one dot product gives ``b_u + b_i + p_u . q_i``.
* **Start from the bias model** (3 closed-form sweeps, see ``bias.py``) and decay the learning rate
  geometrically per epoch: both cut the epochs needed roughly in half. The batch size defaults to
  1/32 of the ratings (128 to 4096): every epoch makes at least ~32 updates, however small the data.
* **Early stopping on the validation MAE** with ``patience`` epochs; the best epoch's tables are
  kept. Without validation data all ``epochs`` run.
* Defaults were tuned on MovieLens (ml-latest-small) against Surprise's ``SVD`` (``bench/baselines.py``,
  RESULTS.md): 32 factors, lr 0.1 decaying by 0.8 per epoch, reg 0.05, at most 12 epochs.
* Unseen users/items keep only the known bias (named in the fallback), as Surprise does.
* Fitting runs torch on one thread (restored afterwards): see ``_fit``.
"""

from __future__ import annotations

import logging
import time

import numpy as np

from reczero.baselines.rating import Baseline, IdIndex, bias_sweeps, cf_fallback

log = logging.getLogger(__name__)


class BiasedMF(Baseline):
    name = "mf"
    HPARAMS = ("factors", "epochs", "lr", "reg", "decay", "batch_size", "init_std", "patience")

    def __init__(self, *, factors: int = 32, epochs: int = 12, lr: float = 0.1, reg: float = 0.05,
                 decay: float = 0.8, batch_size: int | None = None, init_std: float = 0.05, patience: int = 3,
                 **kw) -> None:
        super().__init__(**kw)
        if factors < 1 or epochs < 1 or (batch_size or 1) < 1 or lr <= 0 or reg < 0 or not 0 < decay <= 1:
            raise ValueError(f"{self.name}: need factors, epochs, batch_size >= 1, lr > 0, reg >= 0, 0 < decay <= 1")
        self.factors, self.epochs, self.lr, self.reg = factors, epochs, lr, reg
        self.decay, self.batch_size, self.init_std, self.patience = decay, batch_size, init_std, patience

    # -- tables ---------------------------------------------------------------------------------

    def _init_tables(self, u, i, residual, n_users: int, n_items: int, generator):
        import torch

        k = self.factors
        b_u, b_i = bias_sweeps(u, i, residual, n_users, n_items, reg_user=5.0, reg_item=5.0, sweeps=3)
        users = torch.empty(n_users, k + 2)
        items = torch.empty(n_items, k + 2)
        users[:, :k].normal_(0.0, self.init_std, generator=generator)
        items[:, :k].normal_(0.0, self.init_std, generator=generator)
        users[:, k], users[:, k + 1] = torch.from_numpy(b_u).float(), 1.0
        items[:, k], items[:, k + 1] = 1.0, torch.from_numpy(b_i).float()
        # the constant columns must never move: their gradients are masked out
        self._mask_u = torch.ones(k + 2)
        self._mask_u[k + 1] = 0.0
        self._mask_i = torch.ones(k + 2)
        self._mask_i[k] = 0.0
        return (users, items)

    @staticmethod
    def _scaled(idx, n: int):
        """``1/sqrt(c)`` per row of a batch, ``c`` = occurrences of the row's id in the batch."""
        import torch

        return torch.bincount(idx, minlength=n).float().rsqrt_()[idx].unsqueeze_(1)

    def _epoch(self, tables, u, i, r, lr: float, generator) -> float:
        """One pass of mini-batch SGD over shuffled ratings; returns the running training RMSE."""
        import torch

        users, items = tables
        perm = torch.randperm(len(r), generator=generator)
        u, i, r = u[perm], i[perm], r[perm]
        n_users, n_items, sq = users.shape[0], items.shape[0], 0.0
        size = self.batch_size_
        for start in range(0, len(r), size):
            ub, ib = u[start:start + size], i[start:start + size]
            pu, qi = users[ub], items[ib]
            err = (r[start:start + size] - (pu * qi).sum(1)).unsqueeze_(1)
            sq += float(err.pow(2).sum())
            users.index_add_(0, ub, (err * qi - self.reg * pu) * self._mask_u * self._scaled(ub, n_users), alpha=lr)
            items.index_add_(0, ib, (err * pu - self.reg * qi) * self._mask_i * self._scaled(ib, n_items), alpha=lr)
        return (sq / len(r)) ** 0.5

    # -- fit / predict --------------------------------------------------------------------------

    def _fit(self, train, valid) -> None:
        import torch

        # The batch ops are small (batch x factors), below torch's parallel grain; extra threads only
        # add synchronisation, which on a busy machine made fits 10-30x slower (measured).
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            self._train(train, valid)
        finally:
            torch.set_num_threads(threads)

    def _train(self, train, valid) -> None:
        import torch
        from tqdm.auto import tqdm

        generator = torch.Generator().manual_seed(self.seed)
        # small data needs small batches to get enough updates per epoch
        self.batch_size_ = self.batch_size or int(np.clip(len(train) // 32, 128, 4096))
        self.index_ = IdIndex(train)
        u, i = self.index_.encode(train)
        residual = train["rating"].to_numpy(dtype=np.float64) - self.global_mean_
        self._tables = self._init_tables(u, i, residual, len(self.index_.users), len(self.index_.items), generator)
        tu, ti = torch.from_numpy(u), torch.from_numpy(i)
        tr = torch.from_numpy(residual).float()
        v_true = valid["rating"].to_numpy(dtype=np.float64) if valid is not None else None
        best, best_epoch, best_tables, lr = np.inf, 0, None, self.lr
        started = time.perf_counter()
        for epoch in tqdm(range(1, self.epochs + 1), desc=f"fit {self.name}", unit="epoch", leave=False, disable=None):
            train_rmse = self._epoch(self._tables, tu, ti, tr, lr, generator)
            entry = {"step": epoch, "train_rmse": train_rmse, "lr": lr, "seconds": time.perf_counter() - started}
            lr *= self.decay
            if v_true is not None:
                entry["val_mae"] = float(np.mean(np.abs(self._predict(valid)[0].clip(self.scale.lo, self.scale.hi) - v_true)))
                if entry["val_mae"] < best - 1e-6:
                    best, best_epoch = entry["val_mae"], epoch
                    best_tables = tuple(t.clone() for t in self._tables)
            self.history_.append(entry)
            log.debug("%s epoch %d: %s", self.name, epoch, entry)
            if not np.isfinite(train_rmse):
                raise FloatingPointError(f"{self.name}: training diverged at epoch {epoch}; lower lr (now {self.lr})")
            if v_true is not None and epoch - best_epoch >= self.patience:
                break
        if best_tables is not None:
            self._tables = best_tables
        self.best_epoch_ = best_epoch or len(self.history_)
        log.info("%s: %d epochs in %.2f s, kept epoch %d%s", self.name, len(self.history_),
                 time.perf_counter() - started, self.best_epoch_, f" (valid MAE {best:.4f})" if v_true is not None else "")

    def _user_vectors(self):
        """The user table used for prediction (SVD++ adds the implicit-feedback term)."""
        return self._tables[0]

    def _predict(self, df):
        users, items = self._user_vectors(), self._tables[1]
        u, i = self.index_.encode(df)
        k = self.factors
        pu = users.numpy()[np.maximum(u, 0)].astype(np.float64)
        qi = items.numpy()[np.maximum(i, 0)].astype(np.float64)
        both = (u >= 0) & (i >= 0)
        values = self.global_mean_ + np.where(u >= 0, pu[:, k], 0.0) + np.where(i >= 0, qi[:, k + 1], 0.0)
        values += np.where(both, np.einsum("ij,ij->i", pu[:, :k], qi[:, :k]), 0.0)
        return values, cf_fallback(u, i)
