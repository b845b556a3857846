"""RecPO's reward and advantages: plain functions on tensors, no gradient.

What this module chose, and why (R2EC.md, "RecPO"):

* **Fused reward** of a rollout: ``(1 − w) · NDCG@k(rank of the target) + w · softmax(scores)[target]``
  over **every** item (no sampled negatives), w = 0.05, k = 1000, scores = cosine / τ in float32.
  NDCG@k with one target is ``1 / log2(rank + 1)`` when rank ≤ k, else 0. The NDCG term rewards a
  better rank anywhere in the top k; the softmax term still separates rollouts that all miss it.
* **History masked**: the items of the user's history window get score −∞ before ranking and the
  softmax, exactly as in evaluation (:func:`reczero.rankings.full_ranking`): a target that is in its
  own history is masked too, ranked last and rewarded 0 (its group then has no advantage spread).
* **Pessimistic ties**: the rank is 1 + the number of *other* unmasked items scoring ≥ the target,
  so a constant scorer ranks every target last and earns nothing (the same rule as
  :func:`reczero.metrics.target_ranks`).
* **Advantages**: z-score within each group of G rollouts of one user, with the unbiased standard
  deviation + 1e-8 (the reference's); a group whose rewards are all equal gets advantages 0.
* **Marks for the item loss**: the ``top`` rollouts of each group by advantage (ties: the earlier
  rollout), as the reference.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def history_mask(histories: Sequence[Sequence[int]], n_items: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """(B, N) bool, True at each row's history items (catalog indices; -1 = unknown, skipped).

    >>> history_mask([[0, 2], [1, -1]], 3).tolist()
    [[True, False, True], [False, True, False]]
    """
    mask = torch.zeros(len(histories), n_items, dtype=torch.bool)
    for row, items in enumerate(histories):
        known = [i for i in items if 0 <= i < n_items]
        if known:
            mask[row, known] = True
    return mask.to(device)


def target_ranks(scores: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """1-based rank of each row's target among its unmasked items, ties counted against the target.

    >>> target_ranks(torch.tensor([[0.1, 0.9, 0.5], [1.0, 1.0, 1.0]]), torch.tensor([2, 0])).tolist()
    [2, 3]
    """
    scores = scores.float()
    if torch.isnan(scores).any():
        raise ValueError("scores contain NaN")
    if mask is not None:
        scores = scores.masked_fill(mask, float("-inf"))
    target = scores.gather(1, targets.view(-1, 1))
    return (scores >= target).sum(dim=1)   # counts the target itself once: rank = 1 + others >= it


def ndcg_at(ranks: torch.Tensor, k: int) -> torch.Tensor:
    """``1 / log2(rank + 1)`` where rank ≤ k, else 0 (one target: the ideal DCG is 1).

    >>> ndcg_at(torch.tensor([1, 3, 11]), 10).tolist()
    [1.0, 0.5, 0.0]
    """
    ranks = ranks.float()
    return torch.where(ranks <= k, 1.0 / torch.log2(ranks + 1.0), torch.zeros_like(ranks))


@torch.no_grad()
def fused_reward(scores: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor | None = None, *,
                 w: float = 0.05, k: int = 1000) -> dict[str, torch.Tensor]:
    """Rewards of rollouts from their item scores (B, N), targets (B,) and history mask (B, N).

    Returns ``reward``, ``ndcg`` (NDCG@k), ``prob`` (softmax probability of the target) and
    ``rank``, each (B,)."""
    scores = scores.float()
    ranks = target_ranks(scores, targets, mask)
    masked = scores if mask is None else scores.masked_fill(mask, float("-inf"))
    prob = torch.softmax(masked, dim=1).gather(1, targets.view(-1, 1)).squeeze(1)
    ndcg = ndcg_at(ranks, k)
    if mask is not None:                      # a masked target cannot be recommended: it earns nothing
        ndcg = ndcg.masked_fill(mask.gather(1, targets.view(-1, 1)).squeeze(1), 0.0)
    return {"reward": (1.0 - w) * ndcg + w * prob, "ndcg": ndcg, "prob": prob, "rank": ranks}


def group_advantages(rewards: torch.Tensor, group_size: int) -> torch.Tensor:
    """Z-score of each reward within its group of ``group_size`` consecutive rollouts
    (unbiased std + 1e-8).

    >>> group_advantages(torch.tensor([1.0, 3.0, 2.0, 2.0]), 2).tolist()
    [-0.7071067690849304, 0.7071067690849304, 0.0, 0.0]
    """
    if group_size < 2:
        raise ValueError(f"a group z-score needs group_size >= 2, got {group_size}")
    if rewards.numel() % group_size:
        raise ValueError(f"{rewards.numel()} rewards do not split into groups of {group_size}")
    grouped = rewards.float().view(-1, group_size)
    mean = grouped.mean(dim=1, keepdim=True)
    std = grouped.std(dim=1, keepdim=True)            # unbiased (n - 1)
    return ((grouped - mean) / (std + 1e-8)).view(-1)


def top_in_group(advantages: torch.Tensor, group_size: int, top: int) -> torch.Tensor:
    """(B,) bool: the ``top`` rollouts of each group by advantage (ties: the earlier one).

    >>> top_in_group(torch.tensor([0.1, 0.5, -1.0, 0.4, 0.0, 0.0]), 3, 1).tolist()
    [False, True, False, True, False, False]
    """
    grouped = advantages.view(-1, group_size)
    top = min(top, group_size)
    # stable descending sort keeps the earlier rollout first among equals
    order = torch.sort(grouped, dim=1, descending=True, stable=True).indices[:, :top]
    marks = torch.zeros_like(grouped, dtype=torch.bool)
    marks.scatter_(1, order, True)
    return marks.view(-1)


class FusedRankingReward:
    """:func:`fused_reward` of user vectors against the current item table, on TRL's reward contract.

    ``items`` (N, H) is set by the trainer whenever it refreshes the table. Called as a TRL reward
    function it reads the ``user_vector``, ``target`` (catalog index) and ``history`` (catalog
    indices) columns; the trainer calls :meth:`score` with the same data directly.
    """

    __name__ = "fused_ranking"

    def __init__(self, *, tau: float, w: float, k: int, mask_history: bool = True) -> None:
        self.tau, self.w, self.k, self.mask_history = tau, w, k, mask_history
        self.items: torch.Tensor | None = None

    def score(self, users: torch.Tensor, targets: torch.Tensor, histories: Sequence[Sequence[int]]) -> dict[str, torch.Tensor]:
        from reczero.r2ec.model import cosine_scores

        if self.items is None:
            raise RuntimeError("FusedRankingReward has no item table yet")
        scores = cosine_scores(users, self.items, self.tau)
        mask = history_mask(histories, scores.shape[1], scores.device) if self.mask_history else None
        return fused_reward(scores, targets.to(scores.device), mask, w=self.w, k=self.k)

    def __call__(self, completions=None, *, user_vector, target, history, **kwargs) -> list[float]:
        users = torch.stack([torch.as_tensor(u, dtype=torch.float32) for u in user_vector])
        return self.score(users, torch.as_tensor(list(target)), history)["reward"].tolist()
