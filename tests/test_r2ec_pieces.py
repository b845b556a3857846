"""R2ec's pure pieces against hand computations and slow references on random tensors: the fused
reward, history masking, pessimistic ties, group advantages, the marks, the token loss (each rollout
carries its own advantage) and the item loss with and without its logQ correction; rollouts closed
on their sampled ids."""

from __future__ import annotations

import doctest
import math

import numpy as np
import pytest
import torch

from reczero import metrics
from reczero.r2ec import item_table, losses, model, prompts, rewards


@pytest.mark.parametrize("module", [rewards, model, prompts, losses, item_table])
def test_doctests(module):
    result = doctest.testmod(module)
    assert result.failed == 0


# ----------------------------------------------------------------------------------------------
# Rewards
# ----------------------------------------------------------------------------------------------


def test_fused_reward_by_hand():
    # one user, 4 items, target = item 2; item 1 is in the history (masked)
    scores = torch.tensor([[1.0, 9.0, 2.0, 3.0]])
    mask = rewards.history_mask([[1]], 4)
    out = rewards.fused_reward(scores, torch.tensor([2]), mask, w=0.05, k=1000)
    # unmasked: items 0, 2, 3 scoring 1, 2, 3 -> the target ranks 2nd
    assert out["rank"].tolist() == [2]
    ndcg = 1 / math.log2(3)
    prob = math.exp(2) / (math.exp(1) + math.exp(2) + math.exp(3))
    assert out["ndcg"].item() == pytest.approx(ndcg)
    assert out["prob"].item() == pytest.approx(prob, rel=1e-6)
    assert out["reward"].item() == pytest.approx(0.95 * ndcg + 0.05 * prob, rel=1e-6)
    # without the mask the history item outranks the target (rank 3) and takes softmax mass
    unmasked = rewards.fused_reward(scores, torch.tensor([2]), None, w=0.05, k=1000)
    assert unmasked["rank"].tolist() == [3] and unmasked["prob"].item() < 1e-3
    # outside the top k the NDCG term is 0 and only the softmax term is left
    cut = rewards.fused_reward(scores, torch.tensor([2]), mask, w=0.05, k=1)
    assert cut["ndcg"].item() == 0.0 and cut["reward"].item() == pytest.approx(0.05 * prob, rel=1e-6)


def test_history_mask_and_a_target_in_its_own_history_ranks_last():
    mask = rewards.history_mask([[0, 3, -1], []], 4)
    assert mask.tolist() == [[True, False, False, True], [False] * 4]
    scores = torch.tensor([[5.0, 1.0, 2.0, 9.0], [5.0, 1.0, 2.0, 9.0]])
    out = rewards.fused_reward(scores, torch.tensor([3, 3]), mask)
    assert out["rank"].tolist() == [4, 1]          # masked target: last, as rankings.full_ranking does
    assert out["reward"][0].item() == 0.0


def test_pessimistic_ties_a_constant_scorer_earns_nothing():
    scores = torch.zeros(3, 50)
    out = rewards.fused_reward(scores, torch.tensor([0, 17, 49]), None, w=0.05, k=10)
    assert out["rank"].tolist() == [50, 50, 50]
    assert out["ndcg"].tolist() == [0.0, 0.0, 0.0]
    tie = torch.tensor([[1.0, 2.0, 2.0, 0.0]])
    assert rewards.target_ranks(tie, torch.tensor([1])).tolist() == [2]      # the tied item counts against it


def test_ranks_match_the_shared_numpy_metric_and_a_brute_force_mask():
    gen = torch.Generator().manual_seed(0)
    scores = torch.randint(0, 6, (40, 30), generator=gen).float()   # many ties
    targets = torch.randint(0, 30, (40,), generator=gen)
    assert rewards.target_ranks(scores, targets).tolist() == metrics.target_ranks(scores.numpy(), targets.numpy()).tolist()
    histories = [torch.randint(0, 30, (5,), generator=gen).tolist() for _ in range(40)]
    ranks = rewards.target_ranks(scores, targets, rewards.history_mask(histories, 30))
    for row in range(40):
        t = int(targets[row])
        if t in histories[row]:
            expected = 30
        else:
            kept = [j for j in range(30) if j not in histories[row]]
            expected = sum(1 for j in kept if scores[row, j] >= scores[row, t])
        assert ranks[row].item() == expected


def test_group_advantages_against_numpy():
    gen = torch.Generator().manual_seed(1)
    r = torch.rand(24, generator=gen)
    adv = rewards.group_advantages(r, 4)
    g = r.numpy().reshape(-1, 4)
    ref = (g - g.mean(1, keepdims=True)) / (g.std(1, ddof=1, keepdims=True) + 1e-8)
    np.testing.assert_allclose(adv.numpy(), ref.ravel(), rtol=1e-5, atol=1e-6)
    assert rewards.group_advantages(torch.ones(4), 2).tolist() == [0.0] * 4
    with pytest.raises(ValueError):
        rewards.group_advantages(torch.ones(5), 2)


def test_top_two_per_group_are_marked():
    adv = torch.tensor([0.3, -1.0, 1.2, -0.5, -1.5, 0.5, 0.5, 0.5])
    marks = rewards.top_in_group(adv, 4, 2)
    assert marks.tolist() == [True, False, True, False, False, True, True, False]


# ----------------------------------------------------------------------------------------------
# Losses
# ----------------------------------------------------------------------------------------------


def _slow_token_loss(logps, old, adv, mask, lo, hi):
    per_rollout = []
    for i in range(len(logps)):
        terms = []
        for t in range(len(logps[i])):
            if mask[i][t]:
                r = math.exp(logps[i][t] - old[i][t])
                terms.append(-min(r * adv[i], min(max(r, 1 - lo), 1 + hi) * adv[i]))
        per_rollout.append(sum(terms) / max(len(terms), 1))
    return sum(per_rollout) / len(per_rollout)


def test_token_loss_matches_a_slow_reference():
    gen = torch.Generator().manual_seed(2)
    logps = -torch.rand(6, 7, generator=gen) * 3
    old = logps + 0.4 * torch.randn(6, 7, generator=gen)            # off-policy: ratios clip
    adv = torch.randn(6, generator=gen)
    mask = (torch.rand(6, 7, generator=gen) > 0.3).int()
    mask[5] = 0                                                      # a rollout with no loss tokens
    got = losses.token_loss(logps, old, adv, mask, eps_low=0.2, eps_high=0.28)
    ref = _slow_token_loss(logps.tolist(), old.tolist(), adv.tolist(), mask.tolist(), 0.2, 0.28)
    assert got.item() == pytest.approx(ref, rel=1e-5)


def test_each_rollout_carries_its_own_advantage():
    """One group of G=2 with advantages +1 and -1 (mean 0). The reference weights every token by
    the mini-batch mean advantage, which is 0 here: no gradient at all. Ours: d loss / d logp[i, t]
    = -A_i / (n_i * B), opposite signs for the two rollouts."""
    logps = torch.tensor([[-1.0, -2.0, -0.5], [-0.3, -1.1, 0.0]], requires_grad=True)
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    adv = torch.tensor([1.0, -1.0])
    losses.token_loss(logps, logps.detach(), adv, mask).backward()
    expected = torch.tensor([[-1 / 6, -1 / 6, -1 / 6], [1 / 4, 1 / 4, 0.0]])
    torch.testing.assert_close(logps.grad, expected)
    # the reference's broadcast (every token times the batch-mean advantage) gives zero gradient
    logps.grad = None
    losses.token_loss(logps, logps.detach(), adv.mean().expand(2), mask).backward()
    assert torch.count_nonzero(logps.grad) == 0
    with pytest.raises(ValueError, match="one per rollout"):
        losses.token_loss(logps, logps.detach(), adv.view(2, 1), mask)


def test_item_loss_by_hand_and_only_marked_rollouts_count():
    users = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]], requires_grad=True)
    items = torch.tensor([[1.0, 0.0], [0.0, 1.0]], requires_grad=True)
    labels = torch.tensor([0, 1, 1])
    adv = torch.tensor([0.5, 2.0, -3.0])
    marked = torch.tensor([True, True, False])
    tau = 0.5
    loss = losses.item_loss(users, items, labels, adv, marked, tau=tau)
    # user 0: cos = (1, 0) -> logits (2, 0); user 1: cos = (0, 1) -> logits (0, 2); log p(target) equal
    logp = 2 - math.log(math.exp(2) + 1)
    assert loss.item() == pytest.approx(-(0.5 * logp + 2.0 * logp) / 3, rel=1e-6)
    loss.backward()
    assert users.grad[2].abs().sum() == 0 and users.grad[:2].abs().sum() > 0
    assert items.grad.abs().sum() > 0


def test_item_loss_logq_correction_by_hand():
    """Each in-batch logit loses log q_j (Yi et al. 2019), the target's included; a constant added
    to every log q changes nothing (only the items' relative odds count)."""
    users = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    items = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    labels = torch.tensor([0, 0])
    adv, marked, tau = torch.tensor([1.0, 1.0]), torch.tensor([True, True]), 0.5
    q = torch.tensor([0.8, 0.2])
    loss = losses.item_loss(users, items, labels, adv, marked, tau=tau, log_q=q.log())
    # user 0: logits (2, 0) -> (2 - log .8, -log .2); user 1: logits (0, 2) -> (-log .8, 2 - log .2)
    p0 = (math.exp(2) / 0.8) / (math.exp(2) / 0.8 + 1 / 0.2)
    p1 = (1 / 0.8) / (1 / 0.8 + math.exp(2) / 0.2)
    assert loss.item() == pytest.approx(-(math.log(p0) + math.log(p1)) / 2, rel=1e-6)
    plain = losses.item_loss(users, items, labels, adv, marked, tau=tau)
    assert loss.item() > plain.item()          # the popular target earns less credit for its popularity
    shifted = losses.item_loss(users, items, labels, adv, marked, tau=tau, log_q=q.log() + 3.0)
    assert shifted.item() == pytest.approx(loss.item(), rel=1e-6)
    with pytest.raises(ValueError, match="one per item"):
        losses.item_loss(users, items, labels, adv, marked, tau=tau, log_q=q.log()[:1])


# ----------------------------------------------------------------------------------------------
# Positions and rollouts
# ----------------------------------------------------------------------------------------------


def test_rollouts_are_closed_on_their_sampled_ids():
    ids, sampled = model.close_rollouts([[4, 4, 9, 1, 1], [4, 2, 7], [3, 3, 3]], answer_id=9, stop_ids=[2])
    assert ids == [[4, 4, 9], [4, 2, 9], [3, 3, 3, 9]]
    assert sampled == [[1, 1, 1], [1, 1, 0], [1, 1, 1, 0]]


def test_answer_positions_and_padding_layout():
    prompts_ = [[1, 2, 3], [5]]
    completions = [[6, 9], [7, 8, 9]]
    ids, mask = model.pad_sequences(prompts_, completions, pad_id=0)
    assert ids.tolist() == [[1, 2, 3, 6, 9, 0], [0, 0, 5, 7, 8, 9]]
    assert mask.tolist() == [[1, 1, 1, 1, 1, 0], [0, 0, 1, 1, 1, 1]]
    assert model.answer_positions(ids, 9).tolist() == [4, 5]
    with pytest.raises(Exception, match="no <answer>"):
        model.answer_positions(torch.tensor([[1, 2]]), 9)


def test_cosine_scores_are_float32_over_tau():
    u = torch.tensor([[1.0, 0.0]], dtype=torch.bfloat16)
    v = torch.tensor([[2.0, 0.0], [0.0, 3.0], [1.0, 1.0]], dtype=torch.bfloat16)
    s = model.cosine_scores(u, v, 0.02)
    assert s.dtype == torch.float32
    torch.testing.assert_close(s, torch.tensor([[50.0, 0.0, 50.0 / math.sqrt(2)]]), rtol=1e-3, atol=1e-3)
