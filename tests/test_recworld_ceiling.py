"""RecWorld's ranking ceiling: top-k inclusion against Monte Carlo, what the posterior ranks and
why, the manifest entry (deterministic, the evaluator's catalogue and metrics), and that no
baseline exceeds it beyond sampling noise (paired bootstrap on the same test samples)."""

from pathlib import Path

import numpy as np
import pytest

from reczero.cli import main
from reczero.data import schema as S
from reczero.data.recworld import SPAN, START, WorldParams, generate
from reczero.data.recworld_ceiling import (
    ceiling_ranks,
    choice_scores,
    inclusion_probabilities,
    next_pick_scores,
    split_ceilings,
)
from reczero.metrics import bootstrap_mean, target_ranks
from reczero.rankings import ItemCatalog, load_ranking_rows, per_sample_ndcg, read_rankings

WORLD = ["--users", "600", "--items", "200", "--seed", "4"]
PARAMS = WorldParams(users=600, items=200, seed=4)


@pytest.fixture(scope="module")
def world_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("rwc") / "world"
    assert main(["-q", "data", "synth", "--out", str(out), *WORLD]) == 0
    return out


@pytest.fixture(scope="module")
def world():
    return generate(PARAMS)


@pytest.mark.parametrize(("items", "picks"), [(300, 12), (300, 120), (40, 8)])
def test_inclusion_probabilities_match_gumbel_top_k_frequencies(items, picks):
    rng = np.random.default_rng(items + picks)
    log_w = -0.7 * np.log1p(rng.permutation(items)) + rng.choice([-1.4, 0.0, 1.0, 2.0], items)
    pi = inclusion_probabilities(log_w[None], np.array([picks]))[0]
    keys = log_w + rng.gumbel(size=(20_000, items))                        # RecWorld's own draw
    freq = np.bincount(np.argpartition(-keys, picks - 1, axis=1)[:, :picks].ravel(), minlength=items) / 20_000
    assert pi.sum() == pytest.approx(picks)
    assert np.abs(pi - freq).max() < 0.03                                   # MC sd <= 0.0035 per item


def test_posterior_is_zero_for_picked_and_unreleased_items_and_keeps_the_choice_order_otherwise(world):
    u = int(np.argmax(np.bincount(world.user)))                             # the busiest user
    ts = np.sort(world.timestamp[world.user == u])
    t = int(ts[len(ts) // 2])                                               # halfway through the user's picks
    picked = np.zeros((1, PARAMS.items), bool)
    picked[0, world.item[(world.user == u) & (world.timestamp < t)]] = True
    post = next_pick_scores(world, np.array([u]), np.array([t]), picked)[0]
    choice = choice_scores(world, np.array([u]), np.array([t]))[0]
    frac = (t - START) / SPAN
    assert (post[picked[0]] == 0).all() and (post[world.release > frac + 1e-6] == 0).all()
    assert (choice[world.release > frac + 1e-6] == 0).all()
    # Items out since the start share one visit window, so among them the posterior is monotone in
    # the choice weight; a late release has had less time to be picked and is ranked up.
    old = (world.release == 0) & ~picked[0] & (post > 0)
    assert old.sum() > 20
    assert (np.diff(post[old][np.argsort(choice[old])]) >= -1e-12 * post.max()).all()


def test_manifest_ceiling_is_deterministic_and_uses_the_evaluators_catalogue(world_dir, world):
    m = S.read_manifest(world_dir)
    ceiling = m["ranking_ceiling"]
    assert ceiling["choice_temperature"] == PARAMS.choice_temperature == m["world"]["choice_temperature"]
    assert "posterior" in ceiling["protocol"]
    again = split_ceilings(world_dir, generate(PARAMS))                     # a fresh draw of the same world
    assert again == ceiling
    catalog = ItemCatalog.from_data(world_dir)
    for split in ("valid", "test"):
        c = ceiling[split]
        rows = load_ranking_rows(world_dir, split)
        assert c["n"] == len(rows) > 100 and c["n_items"] == len(catalog)
        assert c["n_unknown_targets"] == int((catalog.index(list(rows["item_id"])) < 0).sum())
        assert 0 < c["ndcg@5"] <= c["ndcg@10"] <= c["ndcg@20"] < c["hit@20"] <= 1
        assert c["hit@5"] <= c["hit@10"] <= c["hit@20"] and 0 < c["mrr"] < 1
        assert sum(b["n"] for b in c["ndcg@10_by_history"]) == c["n"]


def _ceiling_ndcg(world, world_dir) -> tuple[np.ndarray, list[str]]:
    rows = load_ranking_rows(world_dir, "test", timestamps=True)
    ranks = ceiling_ranks(world, rows, ItemCatalog.from_data(world_dir).ids)
    return per_sample_ndcg(ranks, 10), list(rows["sample_id"])


def test_the_ceiling_is_not_below_the_naive_choice_order(world_dir, world):
    rows = load_ranking_rows(world_dir, "test", timestamps=True)
    catalog = ItemCatalog.from_data(world_dir)
    ceiling, _ = _ceiling_ndcg(world, world_dir)
    users = np.array([int(x[1:]) for x in rows["user_id"]])
    times = rows["timestamp"].to_numpy()
    cols = np.array([int(x[1:]) for x in catalog.ids])
    target = catalog.index(list(rows["item_id"]))
    scores = choice_scores(world, users, times)
    for r, (u, t) in enumerate(zip(users, times, strict=True)):            # every earlier pick masked, as the ceiling's
        scores[r, world.item[(world.user == u) & (world.timestamp < t)]] = 0.0
    ranks = np.full(len(rows), np.nan)
    known = target >= 0
    ranks[known] = target_ranks(scores[:, cols][known], target[known])
    _, lo, _ = bootstrap_mean(per_sample_ndcg(ranks, 10) - ceiling)
    assert lo <= 0


@pytest.mark.parametrize(("method", "args"), [("popularity", []), ("itemknn", []),
                                             ("sasrec", ["--epochs", "2", "--hidden", "32"])])
def test_no_baseline_exceeds_the_ceiling_beyond_noise(world_dir, world, tmp_path, method, args):
    run = tmp_path / method
    assert main(["-q", "baseline", "--method", method, "--data", str(world_dir), "--out", str(run), *args]) == 0
    res = read_rankings(run / "eval" / "test")
    ceiling, sample_ids = _ceiling_ndcg(world, world_dir)
    assert res.metrics["ranking_ceiling"] == S.read_manifest(world_dir)["ranking_ceiling"]["test"]
    base = res.rankings.set_index("sample_id").loc[sample_ids]
    diff, lo, hi = bootstrap_mean(per_sample_ndcg(base["rank"], 10) - ceiling)
    print(f"{method}: NDCG@10 - ceiling {diff:+.4f} [{lo:+.4f}, {hi:+.4f}]")
    assert lo <= 0, f"{method} beats the ceiling: NDCG@10 difference {diff:.4f} [{lo:.4f}, {hi:.4f}]"
