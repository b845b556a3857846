"""The report: finds results recursively, sorts, warns on constant predictors, renders real images."""

import base64
import json
import re
from argparse import Namespace

import numpy as np
import pandas as pd
import pytest

from reczero import cli
from reczero.errors import DataError
from reczero.predictions import write_results
from reczero.report import Entry, find_results, report, report_cli


def _write_run(root, name, predictions, split="test", log=None):
    """A run directory like `reczero baseline` writes: RUN/eval/<split>/ and RUN/log.jsonl."""
    write_results(root / name / "eval" / split, predictions, method=name, split=split)
    if log:
        (root / name / "log.jsonl").write_text("".join(json.dumps(row) + "\n" for row in log))


def _frame(pred, rating, user_n=None):
    n = len(rating)
    return pd.DataFrame({"sample_id": [f"s{k}" for k in range(n)], "user_id": [f"u{k % 9}" for k in range(n)],
                         "item_id": [f"i{k % 4}" for k in range(n)], "rating": rating, "prediction": pred,
                         "parsed": True, "user_n": user_n if user_n is not None else np.arange(n) % 15})


@pytest.fixture
def runs(tmp_path):
    rng = np.random.default_rng(0)
    rating = rng.integers(1, 6, 120).astype(float)
    root = tmp_path / "demo"
    _write_run(root, "good", _frame(np.clip(rating + rng.normal(0, 0.5, 120), 1, 5), rating),
               log=[{"step": s, "reward": 0.1 * s, "format_rate": min(1.0, 0.3 * s), "val_mae": 1.0 / s,
                     "note": "text is ignored"} for s in range(1, 6)])
    _write_run(root, "median", _frame(np.full(120, 4.0), rating))
    _write_run(root, "coin", _frame(np.where(rng.random(120) < 0.5, 3.0, 4.0), rating))
    _write_run(root, "two-valued", _frame(np.where(rating + rng.normal(0, 1, 120) > 3.5, 4.0, 3.0), rating))
    _write_run(root, "good", _frame(rating, rating), split="valid")         # another split: not reported
    return root


def test_find_results_is_recursive_and_sorted(runs):
    entries = find_results([runs], "test")
    maes = [e.metrics["mae"] for e in entries]
    assert maes == sorted(maes)
    assert {e.name for e in entries} == {"good", "median", "coin", "two-valued"}
    assert {e.name: e.constant for e in entries} == {"good": False, "median": True, "coin": True,
                                                    "two-valued": False}   # 3 or 4 as the rating goes: it reads
    assert next(e for e in entries if e.name == "good").log[0]["reward"] == 0.1
    flat = Entry("flat-truth", runs, {}, _frame(np.where(np.arange(120) % 2, 3.0, 4.0), np.full(120, 4.0)))
    assert flat.constant                                    # nothing to follow: a coin all the same


def test_report_renders_table_warnings_claims_and_images(runs, tmp_path):
    out = tmp_path / "report"
    html_path = report([runs], out, title="Test report", claims=[("good beats median", True), ("coin is best", False)])
    html = html_path.read_text()
    md = (out / "report.md").read_text()
    for text in (html, md):
        assert "Test report" in text and "near-constant predictions" in text
        assert text.index("good") < text.index("coin") or text.index("good") < text.index("median")
    assert "does not hold" in html and "holds" in html and "❌ does not hold: coin is best" in md
    images = re.findall(r'src="data:image/png;base64,([^"]+)"', html)
    assert len(images) >= 4                  # MAE bars, curves, error histograms, predicted-vs-true
    for data in images:
        png = base64.b64decode(data)
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
    for stem in ("mae", "curves", "errors", "pred_vs_true"):
        assert (out / f"{stem}.png").stat().st_size > 5000 and f"({stem}.png)" in md


def test_bayes_floor_row_and_duplicate_method_names(tmp_path):
    from reczero.report import _table_rows

    rating = np.arange(1, 6, dtype=float).repeat(4)
    for run in ("a", "b"):
        write_results(tmp_path / run / "eval" / "test", _frame(rating + 0.5, rating), method="mf", split="test")
    entries = find_results([tmp_path], "test")
    assert sorted(e.name for e in entries) == ["mf (a)", "mf (b)"]
    entries[0].metrics.update(bayes_mae=0.3, bayes_rmse=0.4)
    rows = _table_rows(entries)
    assert rows[0][0].startswith("Bayes floor") and rows[0][1] == "0.3000"


def test_report_cli_and_missing_results(runs, tmp_path, capsys):
    assert cli.main(["report", str(runs), "--out", str(tmp_path / "r"), "--split", "valid"]) == 0
    assert (tmp_path / "r" / "report.html").is_file()
    with pytest.raises(DataError, match="no results for split 'test'"):
        report_cli(Namespace(runs=[str(tmp_path / "r")], out=str(tmp_path / "x"), split="test", title="t"))
    assert cli.main(["report", str(tmp_path / "missing"), "--out", str(tmp_path / "y")]) == 2
