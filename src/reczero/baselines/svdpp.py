"""``svdpp``: SVD++ (Koren 2008), ``r_ui ~ mu + b_u + b_i + q_i . (p_u + |N(u)|^-1/2 sum_{j in N(u)} y_j)``.

``N(u)`` is the implicit feedback: the items the user rated in training (what they chose to
rate, whatever the rating). Exact per-rating SGD on SVD++ recomputes the implicit sum for every
rating, which is what makes Surprise's ``SVDpp`` slow; here it is vectorised with one
approximation:

* Training is :class:`~reczero.baselines.mf.BiasedMF`'s mini-batch SGD, with the implicit term
  ``z_u`` held fixed while ``REFRESHES`` chunks of an epoch run. The gradients for ``y_j``
  (``|N(u)|^-1/2 * sum_i e_ui q_i`` per user) are accumulated per user meanwhile and applied, scaled
  by ``1/sqrt(#users)`` per item as in MF, at the end of the chunk; then ``z_u`` is recomputed
  from all of the user's items in one segment sum. The ``y`` updates are therefore delayed by at
  most a chunk, which at these learning rates changes nothing visible and makes an epoch cost about
  three MF epochs instead of ``mean |N(u)|`` of them.
* Early stopping, the learning-rate decay and the fallbacks are MF's.
"""

from __future__ import annotations

import numpy as np

from reczero.baselines.mf import BiasedMF

REFRESHES = 4        # y / z_u refreshes per epoch


class SVDpp(BiasedMF):
    name = "svdpp"

    def _init_tables(self, u, i, residual, n_users: int, n_items: int, generator):
        import torch

        users, items = super()._init_tables(u, i, residual, n_users, n_items, generator)
        k = self.factors
        self._all_u, self._all_i = torch.from_numpy(u), torch.from_numpy(i)
        self._norm = torch.from_numpy(np.bincount(u, minlength=n_users)).float().clamp_(min=1).rsqrt_()
        self._item_users = torch.from_numpy(np.bincount(i, minlength=n_items)).float().clamp_(min=1).rsqrt_()
        y = torch.empty(n_items, k).normal_(0.0, self.init_std, generator=generator)
        z = torch.zeros(n_users, k)
        self._refresh_z(y, z)
        return (users, items, y, z)

    def _refresh_z(self, y, z) -> None:
        """``z_u = |N(u)|^-1/2 sum_{j in N(u)} y_j`` for every user, in place."""
        z.zero_().index_add_(0, self._all_u, y[self._all_i]).mul_(self._norm.unsqueeze(1))

    def _apply_y(self, y, grad_u, lr: float) -> None:
        """``y_j += lr * (scaled sum over users u with j in N(u) of |N(u)|^-1/2 g_u - reg * y_j)``."""
        import torch

        grad = torch.zeros_like(y).index_add_(0, self._all_i, grad_u[self._all_u] * self._norm[self._all_u].unsqueeze(1))
        y.add_(grad * self._item_users.unsqueeze(1) - self.reg * y, alpha=lr)

    def _epoch(self, tables, u, i, r, lr: float, generator) -> float:
        import torch

        users, items, y, z = tables
        k = self.factors
        perm = torch.randperm(len(r), generator=generator)
        u, i, r = u[perm], i[perm], r[perm]
        n_users, n_items, sq = users.shape[0], items.shape[0], 0.0
        size = self.batch_size_
        starts = list(range(0, len(r), size))
        every = max(1, -(-len(starts) // REFRESHES))
        grad_u = torch.zeros(n_users, k)
        for n, start in enumerate(starts, 1):
            ub, ib = u[start:start + size], i[start:start + size]
            pu, qi = users[ub], items[ib]
            zu = z[ub]
            effective = pu.clone()
            effective[:, :k] += zu
            err = (r[start:start + size] - (effective * qi).sum(1)).unsqueeze_(1)
            sq += float(err.pow(2).sum())
            scale_u = self._scaled(ub, n_users)
            users.index_add_(0, ub, (err * qi - self.reg * pu) * self._mask_u * scale_u, alpha=lr)
            items.index_add_(0, ib, (err * effective - self.reg * qi) * self._mask_i * self._scaled(ib, n_items), alpha=lr)
            grad_u.index_add_(0, ub, err * qi[:, :k] * scale_u)
            if n % every == 0 or n == len(starts):
                self._apply_y(y, grad_u, lr)
                grad_u.zero_()
                self._refresh_z(y, z)
        return (sq / len(r)) ** 0.5

    def _user_vectors(self):
        users, _, _, z = self._tables
        k = self.factors
        out = users.clone()
        out[:, :k] += z
        return out
