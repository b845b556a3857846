"""RecWorld: determinism, the world's shape, the exact Bayes floor, legible reviews, raw round trip, CLI."""

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from reczero.cli import main
from reczero.data import recworld_text as text
from reczero.data import schema as S
from reczero.data.recworld import WorldParams, bayes_floor, draw_ratings, generate, predictive, rating_grid
from reczero.data.recworld_raw import meta_path

SMALL = ["--users", "200", "--items", "80"]
FILES = (S.ITEMS, S.INTERACTIONS, "train.parquet", "valid.parquet", "test.parquet")


def synth(out: Path, *args: str) -> int:
    return main(["-q", "data", "synth", "--out", str(out), *args])


@pytest.fixture(scope="module")
def world_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("rw") / "world"
    assert synth(out, "--users", "400", "--items", "150") == 0
    return out


@pytest.fixture(scope="module")
def world() -> object:
    return generate(WorldParams(users=300, items=100, seed=3))


def _manifest_without_clock(path: Path) -> dict:
    m = json.loads((path / S.MANIFEST).read_text())
    del m["options"]["out"]
    return {k: v for k, v in m.items() if k not in ("created", "seconds")}


def test_same_seed_gives_identical_files_and_another_seed_does_not(tmp_path):
    for name, seed in (("a", "0"), ("b", "0"), ("c", "1")):
        assert synth(tmp_path / name, *SMALL, "--seed", seed) == 0
    for f in FILES:
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes(), f
    assert _manifest_without_clock(tmp_path / "a") == _manifest_without_clock(tmp_path / "b")
    assert (tmp_path / "a" / S.INTERACTIONS).read_bytes() != (tmp_path / "c" / S.INTERACTIONS).read_bytes()


def test_manifest_counts_splits_and_floor(world_dir):
    m = S.read_manifest(world_dir)
    assert m["source"] == "recworld"
    assert m["counts"]["read"] == m["counts"]["kept"] == m["world"]["n_interactions"]
    assert sum(m["splits"].values()) == m["n_interactions"]
    assert m["world"]["users"] == 400 and m["world"]["items"] == 150 and m["world"]["seed"] == 0
    for split in S.SPLITS:
        floor = m["bayes"][split]
        assert floor["n"] == m["splits"][split]
        assert 0.2 < floor["mae"] < 0.8 and floor["mae"] <= floor["rmse"] + 1e-9
        assert floor["method"].startswith("exact")
    assert m["rating_scale"] == {"min": 1.0, "max": 5.0, "step": 1.0}


def test_world_shape(world_dir):
    items = pq.read_table(world_dir / S.ITEMS).to_pandas()
    inter = pq.read_table(world_dir / S.INTERACTIONS).to_pandas()
    assert len(text.ATTRIBUTES) >= 24 and len(set(text.ATTRIBUTES)) == len(text.ATTRIBUTES)
    for it in items.itertuples():
        assert 1 <= len(it.attributes) <= 3 and set(it.attributes) <= set(text.ATTRIBUTES)
        assert 2 <= len(it.title.split()) <= 4
        assert all(re.search(rf"\b{a}\b", it.description) for a in it.attributes)
    assert not inter.duplicated(["user_id", "item_id"]).any()
    assert set(inter.rating.unique()) <= {1.0, 2.0, 3.0, 4.0, 5.0} and inter.rating.nunique() == 5
    per_user = inter.groupby("user_id").size()
    assert per_user.max() > 4 * per_user.median()               # long-tailed activity
    per_item = inter.groupby("item_id").size()
    assert per_item.max() > 4 * per_item.median()               # popularity skew
    test = S.load_split(world_dir, "test")
    train = S.load_split(world_dir, "train")
    assert test.timestamp.min() >= train.timestamp.max()
    assert (test.user_n == 0).any()                             # cold users in the test split
    assert test.user_history.map(len).max() == 10


def test_predictive_and_floor_match_monte_carlo():
    rng = np.random.default_rng(0)
    for half in (False, True):
        p = WorldParams(half_stars=half, noise=0.7)
        expected = rng.uniform(0.3, 5.8, 200)
        probs = predictive(expected, p.noise, p.scale)
        assert np.allclose(probs.sum(1), 1.0)
        draws = draw_ratings(np.repeat(expected, 4000), p.noise, p.scale, rng).reshape(200, 4000)
        grid = rating_grid(p.scale)
        freq = (draws[:, :, None] == grid).mean(1)
        assert np.abs(freq - probs).max() < 0.035                # 4000 draws: sd <= 0.008
        floor = bayes_floor(np.repeat(expected, 4000), draws.ravel(), p.noise, p.scale)
        median = grid[np.argmax(np.cumsum(freq, 1) >= 0.5, 1)]
        mc_mae = np.abs(draws - median[:, None]).mean()
        mc_rmse = np.sqrt(((draws - draws.mean(1, keepdims=True)) ** 2).mean())
        assert floor["mae"] == pytest.approx(mc_mae, abs=0.01)
        assert floor["mae_expected"] == pytest.approx(floor["mae"], abs=0.01)
        assert floor["rmse"] == pytest.approx(mc_rmse, abs=0.01)


def test_floor_is_below_a_bias_model_and_the_mean(world_dir):
    train, test = S.load_split(world_dir, "train"), S.load_split(world_dir, "test")
    mu = train.rating.mean()
    bu = (train.rating - mu).groupby(train.user_id).sum() / (train.groupby("user_id").size() + 5)
    bi = (train.rating - mu - train.user_id.map(bu)).groupby(train.item_id).sum() / (train.groupby("item_id").size() + 5)
    pred = np.clip(mu + test.user_id.map(bu).fillna(0) + test.item_id.map(bi).fillna(0), 1, 5)
    bias_mae = np.abs(pred - test.rating).mean()
    floor = S.read_manifest(world_dir)["bayes"]["test"]
    assert floor["mae"] < 0.85 * bias_mae
    assert floor["rmse"] < np.sqrt(((pred - test.rating) ** 2).mean())
    assert floor["mae"] < np.abs(test.rating - test.rating.median()).mean()


def test_reviews_name_attributes_and_sentiment_follows_rating(world):
    reviews = world.review.to_pylist()
    summaries = world.summary.to_pylist()
    opener_level = {o: lvl for lvl, row in enumerate(text.OPENERS, 1) for o in row}
    for k in range(0, len(reviews), 7):
        review, u, i = reviews[k], world.user[k], world.item[k]
        opener = next(o for o in opener_level if review.startswith(o))
        assert opener_level[opener] == world.rating[k]
        assert summaries[k] in text.SUMMARIES[int(world.rating[k]) - 1]
        for a in world.item_attributes[i][world.item_attributes[i] >= 0]:
            cls = text.LIKED if world.affinity[u, a] > 0 else text.DISLIKED if world.affinity[u, a] < 0 else text.NEUTRAL
            assert any(c.format(a=text.ATTRIBUTES[a]) in review for c in text.CLAUSES[cls]), (review, cls)
    # sentiment words carry the rating: a word-count classifier learns it almost perfectly
    pos = np.array(["Loved it" in r or "gem" in r or "wonderful" in r for r in reviews])
    assert set(world.rating[pos]) == {5.0}


def test_half_stars(tmp_path):
    assert synth(tmp_path / "h", *SMALL, "--half-stars") == 0
    m = S.read_manifest(tmp_path / "h")
    assert m["rating_scale"]["step"] == 0.5
    ratings = pq.read_table(tmp_path / "h" / S.INTERACTIONS)["rating"].to_numpy()
    assert (ratings % 1 == 0.5).any() and ((ratings * 2) % 1 == 0).all()
    assert m["bayes"]["test"]["mae"] > 0


@pytest.mark.parametrize("fmt", ["amazon2018", "amazon2023", "yelp"])
def test_raw_export_prepares_back_to_the_same_samples(tmp_path, fmt):
    name = "yelp_academic_dataset_review.json" if fmt == "yelp" else "Books.jsonl.gz"
    raw = tmp_path / name
    assert synth(tmp_path / "direct", *SMALL, "--raw-format", fmt, "--raw-out", str(raw)) == 0
    assert meta_path(raw, fmt).is_file()
    assert main(["-q", "data", "prepare", "--source", fmt, "--input", str(raw), "--meta", str(meta_path(raw, fmt)),
                 "--out", str(tmp_path / "back")]) == 0
    for split in S.SPLITS:
        a = pd.read_parquet(tmp_path / "direct" / f"{split}.parquet")
        b = pd.read_parquet(tmp_path / "back" / f"{split}.parquet")
        if fmt == "yelp":                      # Yelp businesses have no description; its reader builds one
            a, b = a.drop(columns="item_description"), b.drop(columns="item_description")
        assert len(a) > 0
        pd.testing.assert_frame_equal(a, b)


def test_raw_only_writes_no_prepared_dataset(tmp_path):
    raw = tmp_path / "r" / "Music.json"
    assert main(["-q", "data", "synth", *SMALL, "--raw-only", "--raw-format", "amazon2018", "--raw-out", str(raw)]) == 0
    first = json.loads(raw.read_text().splitlines()[0])
    assert {"overall", "reviewerID", "asin", "unixReviewTime", "reviewText", "summary"} <= set(first)
    assert isinstance(first["overall"], float) and isinstance(first["unixReviewTime"], int)
    assert sorted(p.name for p in raw.parent.iterdir()) == ["Music.json", "meta_Music.json"]
    gz = [tmp_path / k / "Music.json.gz" for k in "ab"]
    for path in gz:
        assert main(["-q", "data", "synth", *SMALL, "--raw-only", "--raw-format", "yelp", "--raw-out", str(path)]) == 0
    assert gz[0].read_bytes() == gz[1].read_bytes() and gz[0].read_bytes()[:2] == b"\x1f\x8b"


def test_cli_errors_are_one_line(tmp_path, capsys):
    out = tmp_path / "w"
    assert synth(out, *SMALL) == 0
    assert synth(out, *SMALL) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert synth(out, *SMALL, "--overwrite", "--seed", "5") == 0
    assert S.read_manifest(out)["world"]["seed"] == 5
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "keep.txt").write_text("x")
    assert synth(tmp_path / "other", *SMALL, "--overwrite") == 2
    assert (tmp_path / "other" / "keep.txt").exists()
    assert synth(tmp_path / "x", *SMALL, "--half-stars", "--raw-format", "yelp", "--raw-out", str(tmp_path / "y.json")) == 2
    err = capsys.readouterr().err
    assert "whole stars" in err and "Traceback" not in err
