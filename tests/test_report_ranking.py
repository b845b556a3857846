"""The report's ranking half: real rankings written by ``rankings.write_rankings`` on a small
RecWorld (so the ceiling row comes from a real manifest), alone and beside rating results."""

import base64
import re

import numpy as np
import pandas as pd
import pytest

from reczero import cli
from reczero.data import schema as S
from reczero.predictions import write_results
from reczero.rankings import ItemCatalog, load_ranking_rows, rank_rows, write_rankings
from reczero.report import report
from reczero.report.ranking import CEILING, find_rankings, paired_differences, table_rows


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    out = tmp_path_factory.mktemp("rw") / "world"
    assert cli.main(["-q", "data", "synth", "--out", str(out), "--users", "300", "--items", "100"]) == 0
    return out


def _scorer(kind: str, rows, catalog: ItemCatalog, seed: int = 0):
    """Scores of a known quality: 'strong' puts the target near the top, 'noise' is random, 'constant' is 0."""
    rng = np.random.default_rng(seed)
    target = catalog.index(list(rows["item_id"]))

    def score_block(idx):
        s = rng.normal(size=(len(idx), len(catalog))).astype(np.float32)
        if kind == "constant":
            return np.zeros_like(s)
        if kind == "strong":
            t = target[idx]
            s[np.flatnonzero(t >= 0), t[t >= 0]] += 2.5
        return s
    return score_block


def _write_ranking_run(root, world, kind, *, rows=None, seed=0):
    rows = load_ranking_rows(world, "test") if rows is None else rows
    catalog = ItemCatalog.from_data(world)
    frame = rank_rows(_scorer(kind, rows, catalog, seed), rows, catalog)
    return write_rankings(root / kind / "eval" / "test", frame, method=kind, split="test", data_dir=world)


@pytest.fixture(scope="module")
def runs(world, tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    for kind in ("noise", "strong", "constant"):
        _write_ranking_run(root, world, kind)
    return root


def test_rankings_are_found_sorted_with_the_ceiling_row(runs, world):
    entries = find_rankings([runs], "test")
    assert [e.name for e in entries] == ["strong", "noise", "constant"]
    ceiling = S.read_manifest(world)["ranking_ceiling"]["test"]
    rows = table_rows(entries)
    by_name = {r[0]: r for r in rows}
    assert set(by_name) == {"strong", "noise", "constant", CEILING}
    assert by_name[CEILING][5] == f"{ceiling['ndcg@10']:.4f}" and by_name[CEILING][8] == str(ceiling["n"])
    assert by_name["constant"][1:7] == ["0.0000"] * 6                   # a constant scorer earns nothing (MRR: 1/n)
    m = entries[0].metrics
    assert by_name["strong"][1:9] == [f"{m[k]:.4f}" for k in ("hit@5", "hit@10", "hit@20", "ndcg@5", "ndcg@10",
                                                               "ndcg@20", "mrr")] + [str(m["n"])]
    ndcgs = [float(r[5]) for r in rows]
    assert ndcgs == sorted(ndcgs, reverse=True)


def test_paired_differences_agree_with_the_metrics_and_name_the_winner(runs):
    entries = find_rankings([runs], "test")
    diffs = {d["other"]: d for d in paired_differences(entries)}
    for other in ("noise", "constant"):
        d = diffs[other]
        m_other = next(e.metrics for e in entries if e.name == other)
        assert d["n"] == m_other["n"]
        assert d["diff"] == pytest.approx(entries[0].metrics["ndcg@10"] - m_other["ndcg@10"], abs=1e-12)
        assert 0 < d["lo"] <= d["diff"] <= d["hi"]                          # strong beats both beyond noise


def test_runs_on_different_samples_are_compared_on_the_shared_ones(world, tmp_path):
    rows = load_ranking_rows(world, "test")
    _write_ranking_run(tmp_path, world, "strong")
    _write_ranking_run(tmp_path, world, "noise", rows=rows.iloc[: len(rows) // 3].reset_index(drop=True))
    entries = find_rankings([tmp_path], "test")
    (d,) = paired_differences(entries)
    assert d["n"] == len(rows) // 3


def test_report_holds_rating_and_ranking_results_with_real_images(runs, world, tmp_path):
    rating = np.arange(1, 6, dtype=float).repeat(8)
    frame = pd.DataFrame({"sample_id": [f"s{k}" for k in range(40)], "user_id": "u", "item_id": "i",
                          "rating": rating, "prediction": rating + 0.5, "parsed": True, "user_n": np.arange(40)})
    write_results(tmp_path / "ratings" / "mf" / "eval" / "test", frame, method="mf", split="test")
    html_path = report([runs, tmp_path / "ratings"], tmp_path / "r", title="Both kinds")
    html = html_path.read_text()
    md = (tmp_path / "r" / "report.md").read_text()
    for text in (html, md):
        assert "sorted by MAE" in text and "Ranking" in text and CEILING in text
        assert text.index("strong") < text.index("noise") < text.index("constant")
        assert "strong better" in text                                     # a verdict of the paired bootstrap
    for stem in ("mae", "ranking_at_k", "ndcg_by_history"):
        assert (tmp_path / "r" / f"{stem}.png").stat().st_size > 5000 and f"({stem}.png)" in md
    images = re.findall(r'src="data:image/png;base64,([^"]+)"', html)
    assert len(images) >= 6                      # 4 rating figures + 2 ranking figures
    assert all(base64.b64decode(d)[:8] == b"\x89PNG\r\n\x1a\n" for d in images)


def test_ranking_only_report_from_the_cli(runs, tmp_path, capsys):
    assert cli.main(["report", str(runs), "--out", str(tmp_path / "r")]) == 0
    md = (tmp_path / "r" / "report.md").read_text()
    assert "sorted by MAE" not in md and "## Ranking" in md and "items known at training time" in md
    assert not (tmp_path / "r" / "mae.png").exists()
