"""RecWorld: the embedded synthetic world, with a known generative model and so a known Bayes floor.

The generative model (every number is a field of :class:`WorldParams`, recorded in the manifest's
``world``; time is a fraction of a five-year span starting 2015-01-01):

* **Attributes.** 32 single words (``recworld_text.ATTRIBUTES``): 12 genres, 10 moods, 10 styles.
* **Items.** One genre plus 0–2 moods/styles (1–3 attributes, P = .25/.45/.30), a title of 2–4
  words, a description naming the attributes with a quality word, a latent quality
  ``q_i ~ N(0, item_quality_sd)``, a Zipf popularity ``rank^-popularity_exponent`` and a release
  time: 0 for the catalogue, uniform over the span for the ``late_item_fraction`` released later.
* **Users.** A rating bias ``b_u ~ N(0, user_bias_sd)``; ``liked_per_user`` liked attributes
  (affinity ``+like_weight``) and ``disliked_per_user`` disliked ones (``-dislike_weight``), the
  others neutral (0); an arrival uniform over the span and an active lifetime ~ Exp(``user_lifetime``);
  a long-tailed (log-normal) lifetime count of interactions, of which only the part inside the span
  is observed. Counts are scaled so the observed mean is ``interactions_per_user``. Users arriving
  late are the cold users of the temporal test split, items released late its cold items.
* **Choice.** Each user picks distinct items with probability ∝ ``popularity_i ·
  exp(choice_temperature · taste_ui)`` (Gumbel top-k): people mostly pick what they like, as on real
  sites. Each interaction happens uniformly inside the user's active window after the release
  (a release after the window is a late visit within ``min_visit``).
* **Ratings.** ``taste_ui = Σ_{a ∈ attributes(i)} affinity_ua``; the expected rating is
  ``m_ui = global_mean + b_u + q_i + taste_ui``; the rating is ``m_ui + N(0, noise²)`` rounded to
  the step (1, or 0.5 with ``half_stars``) and clipped to 1–5.
* **Text** (``recworld_text``): a review opens with a sentiment sentence chosen by the rating,
  says for each of the item's attributes whether the user likes, dislikes or does not mind it, and
  with probability ``reveal_prob`` names one more of the user's tastes that the item lacks.

**The Bayes floor** (``recworld_floor``): given the true ``m_ui``, the rating's predictive
distribution is exact (normal CDF over the rounding cells); its median is the best MAE predictor,
its mean the best RMSE predictor, and the manifest's ``bayes`` holds their errors per split.

**The ranking ceiling** (``recworld_ceiling``): ranking every item by its posterior probability of
being the user's next pick (the choice weights, the user's window and pick count, the releases and
the earlier picks are all known) gives the best Hit@K / NDCG@K / MRR any next-item ranker could
expect; the manifest's ``ranking_ceiling`` holds them for the valid and test splits, over the
evaluator's catalogue (items of the train split).

**How the defaults were tuned** (``python bench/recworld.py floor``, figures in bench/RESULTS.md).
Targets: the floor ≥ 25% below biased MF's test MAE, and a history-only reader (ridge regression on
features of the visible prompt, never the latent parameters) closing ≥ half of the MF-to-floor gap.
The first draft (like 0.9, dislike 1.1, reveal 0.5; users arriving over the first 90% and active
until the end) had every test user warm and the reader closing only 44%. Giving users lifetimes
(cold users in test), raising the taste weights to +1.0/−1.4 (taste is what ratings alone learn
worst, with ~25 ratings per user over 32 attributes) and letting every review reveal one more taste
(``reveal_prob`` 1.0) moved it to: floor ~38% below MF, reader closing ~57–60% (seeds 0–2).
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from reczero.data import recworld_text as text
from reczero.data.recworld_floor import bayes_floor, draw_ratings, predictive, rating_grid, split_floors
from reczero.data.schema import INTERACTIONS_SCHEMA, ITEMS_SCHEMA, MANIFEST, RatingScale
from reczero.errors import DataError

__all__ = ["World", "WorldParams", "bayes_floor", "draw_ratings", "generate", "predictive", "rating_grid", "synth"]

log = logging.getLogger(__name__)

START = 1420070400          # 2015-01-01T00:00:00Z
SPAN = 5 * 365 * 86400      # five years, in seconds
N_GENRES = len(text.GENRES)


@dataclass(frozen=True)
class WorldParams:
    """Every parameter of the generative model (the manifest's ``world``)."""

    users: int = 2000
    items: int = 600
    interactions_per_user: float = 25.0
    noise: float = 0.6
    half_stars: bool = False
    seed: int = 0
    global_mean: float = 3.3
    user_bias_sd: float = 0.35
    item_quality_sd: float = 0.45
    liked_per_user: tuple[int, int] = (2, 4)        # inclusive range, uniform
    disliked_per_user: tuple[int, int] = (2, 3)
    like_weight: float = 1.0
    dislike_weight: float = 1.4
    choice_temperature: float = 1.0
    popularity_exponent: float = 0.7
    activity_sigma: float = 0.9
    min_interactions: int = 3
    late_item_fraction: float = 0.2
    user_lifetime: float = 0.4                     # mean active span of a user, fraction of the five years
    min_visit: float = 0.02
    reveal_prob: float = 1.0
    description_noise: float = 0.3                 # in item-quality standard deviations

    @property
    def scale(self) -> RatingScale:
        return RatingScale(1.0, 5.0, 0.5 if self.half_stars else 1.0)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d.update(attributes=list(text.ATTRIBUTES), start=START, span_seconds=SPAN)
        return d


@dataclass
class World:
    """A generated world: latent parameters and the interactions drawn from them.

    Users, items and attributes are indices; interactions are parallel arrays sorted by
    (timestamp, user, item).
    """

    params: WorldParams
    affinity: np.ndarray           # (U, A) +like_weight / -dislike_weight / 0
    item_quality: np.ndarray       # (I,)
    item_attributes: np.ndarray    # (I, 3) attribute ids, -1 = none
    titles: list[str]
    descriptions: list[str]
    user: np.ndarray               # (n,) interaction arrays
    item: np.ndarray
    timestamp: np.ndarray
    expected: np.ndarray           # m_ui, the latent expected rating before noise
    rating: np.ndarray
    review: pa.Array
    summary: pa.Array
    # What the choice and timing drew from (``recworld_ceiling`` needs them); times are fractions of the span.
    log_popularity: np.ndarray     # (I,) -popularity_exponent * log(1 + popularity rank)
    release: np.ndarray            # (I,) release time, 0 for the catalogue
    arrival: np.ndarray            # (U,) start of the user's active window
    window_end: np.ndarray         # (U,) its end (arrival + lifetime, cut at the span's end)

    @property
    def user_ids(self) -> pa.Array:
        return _ids("U", self.params.users)

    @property
    def item_ids(self) -> pa.Array:
        return _ids("I", self.params.items)

    def items_table(self) -> pa.Table:
        attrs = [[text.ATTRIBUTES[a] for a in row if a >= 0] for row in self.item_attributes.tolist()]
        return pa.table([self.item_ids, pa.array(self.titles), pa.array(attrs, pa.list_(pa.string())),
                         pa.array(self.descriptions)], schema=ITEMS_SCHEMA)

    def interactions_table(self) -> pa.Table:
        return pa.table([
            self.user_ids.take(pa.array(self.user)), self.item_ids.take(pa.array(self.item)),
            pa.array(self.rating), pa.array(self.timestamp), self.review, self.summary,
        ], schema=INTERACTIONS_SCHEMA)


def _ids(prefix: str, n: int) -> pa.Array:
    width = len(str(n - 1))
    return pa.array([f"{prefix}{k:0{width}d}" for k in range(n)])


# ------------------------------------------------------------------------------------------------
# Generation
# ------------------------------------------------------------------------------------------------


def generate(p: WorldParams) -> World:
    """Draw a world from ``p`` (deterministic in ``p.seed``; independent streams per part)."""
    rng_items, rng_users, rng_choice, rng_noise, rng_text = (
        np.random.default_rng(s) for s in np.random.SeedSequence(p.seed).spawn(5))
    n_attr = len(text.ATTRIBUTES)

    # Items: one genre + 0..2 moods/styles, quality, popularity, release time.
    n_extra = rng_items.choice(3, size=p.items, p=(0.25, 0.45, 0.30))
    genre = rng_items.integers(0, N_GENRES, p.items)
    extras = N_GENRES + np.argsort(rng_items.random((p.items, n_attr - N_GENRES)), axis=1)[:, :2]
    attrs = np.stack([genre, np.where(n_extra >= 1, extras[:, 0], -1),
                      np.where(n_extra >= 2, extras[:, 1], -1)], axis=1)
    onehot = np.zeros((p.items, n_attr), np.float32)
    rows = np.repeat(np.arange(p.items), 3)
    valid = attrs.ravel() >= 0
    onehot[rows[valid], attrs.ravel()[valid]] = 1.0
    quality = rng_items.normal(0.0, p.item_quality_sd, p.items)
    log_pop = -p.popularity_exponent * np.log1p(rng_items.permutation(p.items)).astype(np.float32)
    late = rng_items.random(p.items) < p.late_item_fraction
    release = np.where(late, rng_items.uniform(0.0, 0.98, p.items), 0.0)
    qwords = text.quality_word_index(quality, p.item_quality_sd, p.description_noise, rng_items)
    titles = text.make_titles(p.items, rng_items)
    descriptions = [text.make_description([a for a in row if a >= 0], q)
                    for row, q in zip(attrs.tolist(), qwords.tolist(), strict=True)]

    # Users: bias, liked/disliked attributes, activity, arrival.
    bias = rng_users.normal(0.0, p.user_bias_sd, p.users)
    n_liked = rng_users.integers(p.liked_per_user[0], p.liked_per_user[1] + 1, p.users)
    n_disliked = rng_users.integers(p.disliked_per_user[0], p.disliked_per_user[1] + 1, p.users)
    rank = np.argsort(np.argsort(rng_users.random((p.users, n_attr)), axis=1), axis=1)
    liked = rank < n_liked[:, None]
    disliked = ~liked & (rank < (n_liked + n_disliked)[:, None])
    affinity = (p.like_weight * liked - p.dislike_weight * disliked).astype(np.float32)
    # Activity: a lifetime count n_u (log-normal) spread over [arrival, arrival + lifetime]; only
    # the part inside the span is observed, so late arrivals are few-interaction (cold) users. The
    # lifetime counts are scaled so that the observed mean is interactions_per_user.
    arrival = rng_users.uniform(0.0, 1.0, p.users)
    lifetime = np.maximum(rng_users.exponential(p.user_lifetime, p.users), 0.01)
    seen = np.minimum(lifetime, 1.0 - arrival) / lifetime
    base = rng_users.lognormal(-p.activity_sigma**2 / 2, p.activity_sigma, p.users)
    cap = max(1, p.items // 2)
    scale = p.interactions_per_user
    for _ in range(4):               # fixed point: observed mean == interactions_per_user
        activity = np.clip(np.rint(np.maximum(base * scale, p.min_interactions) * seen), 1, cap).astype(np.int64)
        scale *= p.interactions_per_user / activity.mean()
    end = arrival + np.minimum(lifetime, 1.0 - arrival)

    # Choice: Gumbel top-n_u over popularity * exp(temperature * taste), in chunks of users sorted
    # by activity (so each chunk's top-k is close to what its users need).
    user_parts, item_parts, taste_parts = [], [], []
    by_activity = np.argsort(activity, kind="stable")
    chunk = max(1, 4_000_000 // p.items)
    for lo in range(0, p.users, chunk):
        us = by_activity[lo:lo + chunk]
        taste = affinity[us] @ onehot.T                                        # (c, I)
        with np.errstate(divide="ignore"):                                      # u = 0 -> key -inf
            gumbel = -np.log(-np.log(rng_choice.random(taste.shape, dtype=np.float32)))
        keys = log_pop + p.choice_temperature * taste + gumbel
        k = int(activity[us].max())
        top = np.argpartition(-keys, k - 1, axis=1)[:, :k]                    # k <= items // 2
        top = np.take_along_axis(top, np.argsort(-np.take_along_axis(keys, top, 1), axis=1), 1)
        take = np.arange(k)[None, :] < activity[us, None]
        user_parts.append(np.broadcast_to(us[:, None], top.shape)[take])
        item_parts.append(top[take])
        taste_parts.append(np.take_along_axis(taste, top, 1)[take])
    user, item, taste = (np.concatenate(x) for x in (user_parts, item_parts, taste_parts))
    # A release after the user's window is a late visit: within min_visit of the release.
    start = np.maximum(arrival[user], release[item])
    stop = np.minimum(np.maximum(end[user], start + p.min_visit), 1.0)
    frac = start + rng_choice.random(len(user)) * (stop - start)
    timestamp = START + np.floor(frac * SPAN).astype(np.int64)

    order = np.lexsort((item, user, timestamp))
    user, item, taste, timestamp = user[order], item[order], taste[order].astype(np.float64), timestamp[order]
    expected = p.global_mean + bias[user] + quality[item] + taste
    rating = draw_ratings(expected, p.noise, p.scale, rng_noise)

    review, summary = _reviews(p, user, item, rating, attrs, affinity, liked | disliked, rng_text)
    log.info("RecWorld: %d users, %d items, %d interactions (mean rating %.2f)",
             p.users, p.items, len(user), rating.mean() if len(rating) else float("nan"))
    return World(p, affinity, quality, attrs, titles, descriptions,
                 user, item, timestamp, expected, rating, review, summary, log_pop, release, arrival, end)


def _reviews(p: WorldParams, user, item, rating, attrs, affinity, tastes, rng) -> tuple[pa.Array, pa.Array]:
    """Per-interaction inputs of ``recworld_text.compose_reviews`` (all vectorised)."""
    clause_attr = attrs[item]                                                  # (n, 3)
    aff = np.take_along_axis(affinity[user], np.maximum(clause_attr, 0), 1)
    clause_class = np.where(aff > 0, text.LIKED, np.where(aff < 0, text.DISLIKED, text.NEUTRAL))
    # One of the user's tastes, chosen uniformly; mentioned only if the item lacks it.
    n_taste = tastes.sum(1)
    taste_ids = np.argsort(~tastes, axis=1, kind="stable")                    # taste attributes first
    pick = (rng.random(len(user)) * n_taste[user]).astype(np.int64)
    reveal = taste_ids[user, pick]
    reveal_ok = (rng.random(len(user)) < p.reveal_prob) & ~(clause_attr == reveal[:, None]).any(1)
    reveal = np.where(reveal_ok, reveal, -1)
    level = np.clip(np.floor(rating + 0.5), 1, 5)
    return text.compose_reviews(level, clause_attr, clause_class, reveal,
                                (affinity[user, reveal] > 0).astype(np.int64), rng)


# ------------------------------------------------------------------------------------------------
# The command
# ------------------------------------------------------------------------------------------------


def params_from_config(cfg) -> WorldParams:
    """The world of a :class:`reczero.config.SynthConfig` (its other fields keep their defaults)."""
    names = {f.name for f in dataclasses.fields(WorldParams)}
    return WorldParams(**{k: v for k, v in dataclasses.asdict(cfg).items() if k in names})


def synth(cfg) -> int:
    """`reczero data synth`: generate the world; write the raw dump and/or the prepared dataset."""
    from reczero.data.recworld_ceiling import split_ceilings
    from reczero.data.recworld_raw import export_raw
    from reczero.data.samples import write_prepared
    from reczero.data.schema import read_manifest, write_manifest

    out = None if cfg.raw_only else Path(cfg.out)
    if out is not None and out.exists() and any(out.iterdir()):
        if not cfg.overwrite:
            raise DataError(f"{out}: already exists and is not empty; pass --overwrite to replace it")
        if not (out / MANIFEST).is_file():
            raise DataError(f"{out}: is not a prepared dataset (no {MANIFEST}); refusing to delete it")
        shutil.rmtree(out)
    params = params_from_config(cfg)
    if cfg.raw_format and params.half_stars:      # fail before generating, not after
        raise DataError(f"--half-stars cannot be exported as {cfg.raw_format}: its ratings are whole stars")
    world = generate(params)
    if cfg.raw_format:
        export_raw(world, cfg.raw_format, Path(cfg.raw_out))
    if out is None:
        if not cfg.raw_format:
            log.warning("--raw-only without --raw-format: the world was generated (%d interactions) but nothing "
                        "was written", len(world.rating))
        return 0
    stats = {"n_interactions": len(world.rating), "mean_rating": round(float(world.rating.mean()), 4),
             "rating_counts": {f"{k:g}": int((world.rating == k).sum()) for k in rating_grid(params.scale)}}
    write_prepared(out, world.interactions_table(), world.items_table(), cfg, scale=params.scale,
                   source="recworld", rejects=None, inputs=[], extra={"world": {**params.to_dict(), **stats}})
    manifest = read_manifest(out)
    manifest["bayes"] = split_floors(out, world)
    if manifest["splits"]["train"]:               # the ceiling ranks over the items known at training time
        manifest["ranking_ceiling"] = split_ceilings(out, world)
    else:
        log.warning("no train targets: no ranking ceiling (its catalogue is the items of the train split)")
    write_manifest(out, manifest)
    for split, f in manifest["bayes"].items():
        if f["n"]:
            log.info("Bayes floor on %s: MAE %.4f, RMSE %.4f (%d targets)", split, f["mae"], f["rmse"], f["n"])
    for split in ("valid", "test"):
        c = manifest.get("ranking_ceiling", {}).get(split)
        if c:
            log.info("Ranking ceiling on %s: NDCG@10 %.4f, Hit@10 %.4f (%d targets, %d unknown at training time)",
                     split, c["ndcg@10"], c["hit@10"], c["n"], c["n_unknown_targets"])
    return 0
