"""RecWorld's ranking ceiling: the Hit@K / NDCG@K / MRR of ranking items by their true probability
of being the user's next pick — the physical limit of next-item ranking on a world, as the Bayes
floor (``recworld_floor``) is for ratings.

How RecWorld chooses (``recworld.generate``, read from the code): user ``u`` picks a **set** ``S``
of ``n_u`` distinct items by a Gumbel top-``n_u`` over ``log w_ui = log popularity_i +
choice_temperature · taste_ui`` over *every* item (Plackett–Luce sampling without replacement);
only then does each pick get a time, uniform on ``[start_i, stop_i]`` with ``start_i = max(arrival_u,
release_i)`` and ``stop_i = min(max(window_end_u, start_i + min_visit), 1)``. The order of the
picks in time is therefore *not* the draw order, so "popularity × exp(temperature · taste) among
released, unpicked items" (:func:`choice_scores`) is not the exact next-pick probability: a pick
can only be next at time ``t`` if its window holds ``t`` (after the user's window ends, only a late
visit to a newly released item can be), and an item released late has had less time to be picked
already, so not having seen it says less.

What this module chose, and why:

* **The posterior next-pick probability** (:func:`next_pick_scores`). Given everything the world
  knows at the target's time ``t`` — the latent ``w_ui``, ``n_u``, the user's window, every item's
  release and the user's picks before ``t`` (the set ``H``) — item ``i ∉ H`` is next with
  probability ``∝ π_ui · f_i(t) / (1 − π_ui + π_ui · s_i(t))``, where ``f_i`` / ``s_i`` are the
  density / survival of its uniform visit time and ``π_ui = 1 − exp(−c_u · w_ui)`` is its
  probability of being in ``S``, ``c_u`` solving ``Σ_i π_ui = n_u`` (the Gumbel-threshold form of
  top-k inclusion, exact as the catalogue grows). Two approximations, stated: inclusions are
  treated as independent given ``c_u`` (the exact conditional on ``|S| = n_u`` would re-weight
  each item by a factor that depends on it only through its own exclusion from the count), and
  ``t`` is the target's timestamp + 0.5 s with every visit window widened by one second (times are
  written floored to the second). Every target has a positive probability (checked).
* **The same catalogue and metrics as the evaluator.** Items are ranked among the catalogue the
  evaluator ranks over (``reczero.rankings.ItemCatalog`` of the train split: items known at
  training time); a target outside it is a miss, as it is for every method; ties are pessimistic
  (``reczero.metrics.target_ranks``); Hit/NDCG/MRR come from ``reczero.rankings``' metric
  function. **Difference from the evaluator**: the evaluator masks the user's history *window*
  (``--history`` most recent items); here every earlier pick has probability 0 (the world knows
  them all and never repeats a pick). Masking more can only help, so the ceiling stays a ceiling.
* Scored in blocks of samples (``BLOCK`` rows × items), never a samples × items matrix in full.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from reczero.data.recworld import SPAN, START
from reczero.data.schema import SPLITS

BLOCK = 2048               # samples scored at once (x items, float64)
SECOND = 1.0               # timestamps are floored to whole seconds


def inclusion_probabilities(log_w: np.ndarray, n: np.ndarray, iters: int = 60) -> np.ndarray:
    """``π = 1 − exp(−c · w)`` per row, ``c`` solving ``Σ π = n`` (bisection on ``log c``).

    ``log_w``: (rows, items) log choice weights; ``n``: (rows,) number of picks, ``< items``.

    >>> p = inclusion_probabilities(np.log(np.array([[1.0, 1.0, 2.0, 4.0]])), np.array([2]))
    >>> round(float(p.sum()), 6), bool(p[0, 3] > p[0, 2] > p[0, 1])
    (2.0, True)
    """
    log_w = log_w - log_w.max(axis=1, keepdims=True)                    # w <= 1: c spans a known range
    lo = np.full(len(log_w), -30.0)
    hi = np.full(len(log_w), 30.0 + np.log(log_w.shape[1]))
    target = np.asarray(n, np.float64)
    for _ in range(iters):
        mid = (lo + hi) / 2
        total = -np.expm1(-np.exp(mid[:, None] + log_w)).sum(axis=1)
        lo, hi = np.where(total < target, mid, lo), np.where(total < target, hi, mid)
    return -np.expm1(-np.exp(((lo + hi) / 2)[:, None] + log_w))


def _visit_windows(world, users: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(rows, items) start and stop of the uniform visit time of each item, were it picked."""
    p = world.params
    start = np.maximum(world.arrival[users, None], world.release[None, :])
    stop = np.minimum(np.maximum(world.window_end[users, None], start + p.min_visit), 1.0)
    return start, stop


def _log_weights(world, users: np.ndarray) -> np.ndarray:
    taste = world.affinity[users] @ _onehot(world).T
    return world.log_popularity[None, :].astype(np.float64) + world.params.choice_temperature * taste


def _onehot(world) -> np.ndarray:
    attrs = world.item_attributes
    out = np.zeros((len(attrs), world.affinity.shape[1]), np.float32)
    rows, cols = np.nonzero(attrs >= 0)
    out[rows, attrs[rows, cols]] = 1.0
    return out


def choice_scores(world, users: np.ndarray, times: np.ndarray) -> np.ndarray:
    """``w_ui = popularity_i · exp(temperature · taste_ui)`` for items released by ``times`` (else 0):
    the per-draw choice probability, up to a constant — the naive order the posterior improves on."""
    t = (np.asarray(times, np.float64) - START) / SPAN
    released = world.release[None, :] <= (t + 2 * SECOND / SPAN)[:, None]
    return np.where(released, np.exp(_log_weights(world, users)), 0.0)


def next_pick_scores(world, users: np.ndarray, times: np.ndarray, picked: np.ndarray) -> np.ndarray:
    """(rows, items) probability, up to a per-row constant, that each item is user ``users[r]``'s
    next pick at Unix time ``times[r]``, given ``picked[r]`` (bool, the picks before that time)."""
    users = np.asarray(users, np.int64)
    t = ((np.asarray(times, np.float64) - START + 0.5 * SECOND) / SPAN)[:, None]
    eps = SECOND / SPAN
    once, back = np.unique(users, return_inverse=True)                 # π is per user, not per sample
    n = np.bincount(world.user, minlength=world.params.users)[once]
    pi = inclusion_probabilities(_log_weights(world, once), n)[back]
    start, stop = _visit_windows(world, users)
    inside = (start - eps <= t) & (t <= stop + eps)
    density = np.where(inside, 1.0 / (stop - start), 0.0)
    survival = np.clip((stop - t) / (stop - start), 0.0, 1.0)
    # pi -> 1 with survival -> 0 (the end of a window) would be 0/0; such an item is due now.
    score = pi * density / np.maximum(1.0 - pi + pi * survival, 1e-12)
    return np.where(picked, 0.0, score)


def _world_index(ids) -> np.ndarray:
    """World indices of RecWorld ids ("U<n>", "I<n>")."""
    return np.array([int(x[1:]) for x in ids], np.int64)


def _picked_before(world, users: np.ndarray, times: np.ndarray) -> np.ndarray:
    """(rows, items) bool: the items each user picked strictly before each time."""
    order = np.lexsort((world.timestamp, world.user))
    wu, wi, wt = world.user[order], world.item[order], world.timestamp[order]
    first = np.searchsorted(wu, users, side="left")
    last = np.searchsorted(wu, users, side="right")
    out = np.zeros((len(users), world.params.items), bool)
    for r, (a, b, t) in enumerate(zip(first.tolist(), last.tolist(), np.asarray(times).tolist(), strict=True)):
        cut = a + int(np.searchsorted(wt[a:b], t, side="left"))
        out[r, wi[a:cut]] = True
    return out


def ceiling_ranks(world, frame, catalog_ids) -> np.ndarray:
    """1-based rank (float, NaN = target outside the catalogue) of each row's target under
    :func:`next_pick_scores`, among the catalogue items ``catalog_ids`` ("I<n>" ids), ties pessimistic.

    ``frame``: a split's rows with ``user_id``, ``item_id``, ``timestamp``.
    """
    from reczero.metrics import target_ranks

    cat = _world_index(catalog_ids)
    col = np.full(world.params.items, -1, np.int64)
    col[cat] = np.arange(len(cat))
    users, items = _world_index(frame["user_id"]), _world_index(frame["item_id"])
    times = np.asarray(frame["timestamp"], np.int64)
    ranks = np.full(len(users), np.nan)
    for lo in range(0, len(users), BLOCK):
        sl = slice(lo, lo + BLOCK)
        scores = next_pick_scores(world, users[sl], times[sl], _picked_before(world, users[sl], times[sl]))
        own = scores[np.arange(len(scores)), items[sl]]
        if (own <= 0).any():
            bad = int(np.flatnonzero(own <= 0)[0]) + lo
            raise AssertionError(f"row {bad} (item {items[bad]} of user {users[bad]}) has probability 0: "
                                 "the world and its splits disagree")
        known = col[items[sl]] >= 0
        sub = scores[:, cat]
        ranks[lo:lo + len(sub)][known] = target_ranks(sub[known], col[items[sl]][known])
    return ranks


PROTOCOL = ("items ranked by the posterior probability of being the user's next pick at the target's time, "
            "given the world's latent choice weights, the user's pick count and window, the items' releases and "
            "every earlier pick (probability 0); among the evaluator's catalogue (items in the train split), "
            "targets outside it are misses; ties pessimistic (recworld_ceiling)")


def ceiling_metrics(ranks: np.ndarray, user_n: np.ndarray, *, split: str, n_items: int) -> dict[str, Any]:
    """The evaluator's metrics (``reczero.rankings.compute_ranking_metrics``) of ceiling ranks."""
    import pyarrow as pa

    from reczero.rankings import compute_ranking_metrics

    table = pa.table({"rank": pa.array(np.where(np.isnan(ranks), 0, ranks).astype(np.int64), mask=np.isnan(ranks)),
                      "user_n": pa.array(np.asarray(user_n, np.int64))})
    out = compute_ranking_metrics(table, method="ceiling", split=split, n_items=n_items, mask_history=True)
    for key in ("task", "method", "split", "mask_history"):
        out.pop(key)
    return out


def split_ceilings(data_dir: Path, world) -> dict[str, Any]:
    """``manifest["ranking_ceiling"]``: the ceiling's metrics on each written valid/test split, with
    the protocol and the world's ``choice_temperature``."""
    from reczero.rankings import ItemCatalog, load_ranking_rows

    catalog = ItemCatalog.from_data(data_dir)
    out: dict[str, Any] = {}
    for split in SPLITS[1:]:
        rows = load_ranking_rows(data_dir, split, timestamps=True)
        if len(rows):
            ranks = ceiling_ranks(world, rows, catalog.ids)
            out[split] = ceiling_metrics(ranks, rows["user_n"].to_numpy(), split=split, n_items=len(catalog))
    out["protocol"] = PROTOCOL
    out["choice_temperature"] = world.params.choice_temperature
    return out
