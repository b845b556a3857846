"""RecPO's two loss terms: plain functions on tensors (the trainer adds them; no KL, no reference model).

What this module chose, and why (R2EC.md, "RecPO"):

* **Token loss**: the clipped policy gradient (PPO/DAPO clip, ε_low 0.2, ε_high 0.28) on the
  reasoning tokens, ``−min(r·A_i, clip(r, 1−ε_low, 1+ε_high)·A_i)`` with ``r`` the probability
  ratio to the sampling policy (1 on-policy). **Each rollout's tokens carry that rollout's own
  advantage A_i**: the advantages are a (B,) vector turned into a (B, 1) column, one row per
  rollout. The reference broadcasts them so that every token gets the mini-batch *mean* advantage
  (≈ 0 when the mini-batch is one group; R2EC.md defect 1). Aggregation: mean over each rollout's
  loss tokens, then mean over rollouts (TRL's ``grpo`` aggregation); rollouts with no loss tokens
  (the no-reasoning ablation) add 0.
* **Item loss**: an advantage-weighted in-batch contrastive loss on the user vectors,
  ``−A_i · log softmax_j(cos(u_i, v_j) / τ)[target_i]`` over the batch's distinct target items
  ``v_j``, for the rollouts marked for it (the top ones of each group), summed and divided by the
  number of rollouts in the batch (the reference's normalisation). The reference writes it as a
  clipped ratio ``p / p.detach()``, whose gradient at ratio 1 is this one's. Item vectors keep
  their gradient: both the user and the item side of the model learn from it. Extra negatives
  (the trainer's uniform draws, mixed negative sampling) are more rows of ``items`` after the targets.
* **logQ correction** (optional ``log_q``; Yi et al., RecSys 2019, "Sampling-bias-corrected neural
  modeling for large corpus item recommendations"): ``log q_j``, the log of item j's chance of
  being an in-batch target, is subtracted from every logit of the softmax, the target's included.
  The batch's items are its own targets, drawn by popularity, so the plain in-batch softmax is
  optimal at ``log p(j|u) − log q_j``: popularity cancels out and the model cannot learn it, though
  it is most of what a next-item ranking scores. With the correction the optimum is ``log p(j|u)``
  (up to a constant), and the rewards and the full ranking, which never sample, stay as they are.
"""

from __future__ import annotations

import torch

from reczero.r2ec.model import cosine_scores


def token_loss(logps: torch.Tensor, old_logps: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor, *,
               eps_low: float = 0.2, eps_high: float = 0.28) -> torch.Tensor:
    """Clipped policy-gradient loss; ``logps``/``old_logps``/``mask`` (B, T), ``advantages`` (B,)."""
    if advantages.dim() != 1 or advantages.shape[0] != logps.shape[0]:
        raise ValueError(f"advantages must be one per rollout, shape ({logps.shape[0]},); got {tuple(advantages.shape)}")
    adv = advantages.to(logps.dtype).unsqueeze(1)                      # (B, 1): row i's tokens get A_i
    ratio = torch.exp(logps - old_logps)
    clipped = torch.clamp(ratio, 1.0 - eps_low, 1.0 + eps_high)
    per_token = -torch.minimum(ratio * adv, clipped * adv)
    mask = mask.to(per_token.dtype)
    per_rollout = (per_token * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)
    return per_rollout.mean()


def item_loss(users: torch.Tensor, items: torch.Tensor, labels: torch.Tensor, advantages: torch.Tensor,
              marked: torch.Tensor, *, tau: float, log_q: torch.Tensor | None = None) -> torch.Tensor:
    """Advantage-weighted in-batch contrastive loss.

    ``users`` (B, H): each rollout's user vector; ``items`` (M, H): the batch's distinct targets,
    then any extra negatives (mixed negative sampling); ``labels`` (B,): the row of each rollout's
    target in ``items``; ``advantages`` (B,);
    ``marked`` (B,) bool: the rollouts that take part; ``log_q`` (M,), optional: each item's log
    probability of being an in-batch target, subtracted from its logits (the logQ correction)."""
    logits = cosine_scores(users, items, tau)
    if log_q is not None:
        if log_q.shape != (items.shape[0],):
            raise ValueError(f"log_q must be one per item, shape ({items.shape[0]},); got {tuple(log_q.shape)}")
        logits = logits - log_q.to(logits)
    logp = torch.log_softmax(logits, dim=1)
    logp_target = logp.gather(1, labels.view(-1, 1).to(logp.device)).squeeze(1)
    weight = advantages.float().to(logp.device) * marked.float().to(logp.device)
    return -(weight * logp_target).sum() / users.shape[0]
