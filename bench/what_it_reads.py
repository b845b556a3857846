"""What each method of a demo reads from its prompt, and what reading only the item could reach.

    python bench/what_it_reads.py DEMO_DIR [MORE_RUN_DIRS ...]

For every method scored on the test split (``DEMO_DIR/runs/*/eval/test`` and any extra run
directories) it prints the test MAE and the correlation of its predictions with the user's and the
item's shown averages. For the models that write the four-step answer it also reads back the
averages the answer quotes ("User average: 3.4" / "user 3.4", or the older "avg 3.4 over ...") and
compares them with the prompt's: a student that copies them is reading its prompt; one whose
quoted user average does not correlate with the real one writes the teacher's shape without it.

Then two ceilings, least squares fitted on the train split and scored on test (rounded to the
rating grid, as every model answers): what the item alone can give (its average and the
description's quality word) and what adding the user's average gives. A model that reads only
the item cannot get below the first by more than noise.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from reczero.teacher.heuristic import QUALITY, quality_word

QUOTES = {  # step -> patterns of the average it quotes (current wording first, then the old one)
    "user": (r"User average: (\d\.\d)", r"<analyze user>avg (\d\.\d)"),
    "item": (r"Item average: (\d\.\d)", r"<analyze item>[^<]*?avg (\d\.\d)"),
}


def quoted(completions: pd.Series, who: str) -> pd.Series:
    def first(text: str) -> float:
        for pattern in QUOTES[who]:
            m = re.search(pattern, text or "")
            if m:
                return float(m.group(1))
        return np.nan
    return completions.map(first)


def corr(a: pd.Series, b: pd.Series) -> float:
    ok = a.notna() & b.notna()
    return float(np.corrcoef(a[ok], b[ok])[0, 1]) if ok.sum() > 2 and a[ok].std() > 0 else float("nan")


def num(x: float) -> str:
    return "–" if np.isnan(x) else f"{x:+.2f}"


def features(df: pd.DataFrame, with_user: bool) -> np.ndarray:
    desc = df["item_description"].fillna("").str.lower()
    quality = desc.map(lambda s: quality_word(s) or "none")
    cols = [pd.get_dummies(quality).reindex(columns=[*QUALITY, "none"], fill_value=False).astype(float).to_numpy(),
            df["item_avg"].fillna(3.5).to_numpy()[:, None], df["item_avg"].isna().to_numpy(float)[:, None]]
    if with_user:
        cols += [df["user_avg"].fillna(3.5).to_numpy()[:, None], df["user_avg"].isna().to_numpy(float)[:, None]]
    return np.hstack([*cols, np.ones((len(df), 1))])


def ceiling(train: pd.DataFrame, test: pd.DataFrame, with_user: bool) -> float:
    w = np.linalg.lstsq(features(train, with_user), train["rating"].to_numpy(float), rcond=None)[0]
    pred = np.clip(np.round(features(test, with_user) @ w), 1, 5)
    return float(np.abs(pred - test["rating"].to_numpy(float)).mean())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("demo", type=Path, help="a `reczero demo --out` directory")
    ap.add_argument("runs", type=Path, nargs="*", help="more run directories scored on the same test split")
    args = ap.parse_args(argv)
    test = pd.read_parquet(args.demo / "data" / "test.parquet").set_index("sample_id")
    train = pd.read_parquet(args.demo / "data" / "train.parquet", columns=["rating", "item_description",
                                                                          "item_avg", "user_avg"])
    paths = sorted((args.demo / "runs").glob("*/eval/test/predictions.parquet"))
    paths += [p for r in args.runs for p in sorted(r.glob("**/eval/**/predictions.parquet"))]
    print("| method | test MAE | corr. with user avg | with item avg | quoted user avg: corr. / exact | "
          "quoted item avg: corr. / exact |\n|---|---|---|---|---|---|")
    for path in paths:
        p = pd.read_parquet(path).set_index("sample_id").join(test[["user_avg", "item_avg"]])
        name = next(q for q in path.parents if q.name == "eval").parent.name
        row = [name, f"{(p.prediction - p.rating).abs().mean():.3f}",
               num(corr(p.prediction, p.user_avg)), num(corr(p.prediction, p.item_avg))]
        for who in ("user", "item"):
            q = quoted(p["completion"], who) if "completion" in p and p["completion"].notna().any() else None
            if q is None or q.notna().mean() < 0.05:
                row.append("–")
                continue
            real = p[f"{who}_avg"].round(1)
            row.append(f"{num(corr(q, real))} / {(q == real).mean():.0%}")
        print("| " + " | ".join(row) + " |")
    item_only, with_user = (ceiling(train, test, with_user) for with_user in (False, True))
    print(f"\nceilings (least squares on train, rounded, test MAE): item average + quality word "
          f"{item_only:.3f}; + user average {with_user:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
