"""RecWorld benchmark: generation speed, and the default world's room to win by reading.

Usage::

    python bench/recworld.py floor [--users 2000 --items 600 --seed 0 ...] [--record]
    python bench/recworld.py speed [--users 40000 --items 3000]   # ~1M reviews, --raw-only path

``floor`` generates a world with ``reczero data synth`` and scores on its test split, side by side:
the training global mean, user+item biases, biased MF, the history-only reference and the Bayes
floor of the manifest (MAE and RMSE). It checks the two targets of issue 3: the floor at least 25%
below biased MF's MAE, and the history-only reference closing at least half of the MF-to-floor gap.

* **Biased MF** twice: the project's ``reczero baseline mf`` (SGD, its defaults, early stopping on
  valid) and the small numpy ALS below (alternating ridge solves of factors and biases; factors and
  L2 chosen on valid, then refit on train + valid for test). The targets use the better of the two.
* **The history-only reference** never sees latent parameters: per sample it reads only what a
  prompt shows (user_avg, item_avg, the item's description and attributes, the user's last
  ``history`` entries with their ratings and review snippets) and fits a ridge regression on the
  training samples. Features: the averages (and whether they exist, and how many ratings are behind
  them), the description's quality word, the mean liked-minus-disliked clause count of the user's
  and of the item's visible reviews (the taste behind each average), and for the target's
  attributes, the user's mean rating deviation on history items sharing them and the number of
  them the history's reviews call liked / disliked / fine / never mention.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd

from reczero.baselines import make_baseline
from reczero.cli import main as reczero_main
from reczero.data import recworld_text as text
from reczero.data import schema as S

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
TRIPLE = ["user_id", "item_id", "rating"]


# ------------------------------------------------------------------------------------------------
# Collaborative baselines (rating triples only)
# ------------------------------------------------------------------------------------------------


def _index(train: pd.DataFrame, other: pd.DataFrame):
    users = {u: k for k, u in enumerate(train.user_id.unique())}
    items = {i: k for k, i in enumerate(train.item_id.unique())}
    tu = train.user_id.map(users).to_numpy()
    ti = train.item_id.map(items).to_numpy()
    ou = other.user_id.map(users).fillna(-1).astype(int).to_numpy()
    oi = other.item_id.map(items).fillna(-1).astype(int).to_numpy()
    return tu, ti, ou, oi, len(users), len(items)


def biased_mf(train: pd.DataFrame, test: pd.DataFrame, factors: int, reg: float, reg_const: float = 2.0,
              iters: int = 15, seed: int = 0) -> np.ndarray:
    """ALS for r ≈ mu + b_u + b_i + p_u·q_i (factors=0: the bias model); unknown ids fall back.

    L2 per row is ``reg * n_ratings + reg_const`` (weighted-lambda ALS, plus a constant that
    shrinks rarely seen users and items toward the mean)."""
    tu, ti, ou, oi, nu, ni = _index(train, test)
    r = train.rating.to_numpy(float)
    mu = r.mean()
    rng = np.random.default_rng(seed)
    P = 0.1 * rng.standard_normal((nu, factors))
    Q = 0.1 * rng.standard_normal((ni, factors))
    bu, bi = np.zeros(nu), np.zeros(ni)
    for _ in range(iters):
        bu, P = _solve(tu, ti, r - mu - bi[ti], Q, nu, reg, reg_const)
        bi, Q = _solve(ti, tu, r - mu - bu[tu], P, ni, reg, reg_const)
    known_u, known_i = ou >= 0, oi >= 0
    pred = mu + np.where(known_u, bu[ou], 0) + np.where(known_i, bi[oi], 0)
    both = known_u & known_i
    pred[both] += np.einsum("nk,nk->n", P[ou[both]], Q[oi[both]])
    return np.clip(pred, 1.0, 5.0)


def _solve(rows, cols, target, V, n, reg, reg_const):
    """Per row, ridge-solve [bias, factors] against the other side's [1, V]."""
    order = np.argsort(rows, kind="stable")
    bounds = np.searchsorted(rows[order], np.arange(n + 1))
    X = np.hstack([np.ones((len(cols), 1)), V[cols]])[order]                 # (m, k+1)
    t = target[order]
    eye = np.eye(X.shape[1])
    sol = np.zeros((n, X.shape[1]))
    for r in range(n):
        a, b = bounds[r], bounds[r + 1]
        Xr = X[a:b]
        sol[r] = np.linalg.solve(Xr.T @ Xr + (reg * (b - a) + reg_const) * eye, Xr.T @ t[a:b])
    return sol[:, 0], sol[:, 1:]


def tuned_mf(train, valid, test, grid) -> tuple[np.ndarray, dict]:
    best = min(grid, key=lambda g: _mae(biased_mf(train, valid, *g), valid.rating))
    return biased_mf(pd.concat([train, valid]), test, *best), {"factors": best[0], "reg": best[1]}


# ------------------------------------------------------------------------------------------------
# The history-only reference (reads the prompt, never the latent parameters)
# ------------------------------------------------------------------------------------------------


def _patterns(groups: dict[int, list[str]]) -> dict[int, re.Pattern]:
    return {c: re.compile("|".join(re.escape(p).replace(re.escape("{a}"), r"(\w+)") for p in ps))
            for c, ps in groups.items()}


# RecWorld's review clauses about the item's own attributes, and about tastes it lacks.
CLAUSES = _patterns({c: list(text.CLAUSES[c]) for c in (text.DISLIKED, text.NEUTRAL, text.LIKED)})
REVEALS = _patterns({text.DISLIKED: list(text.REVEALS[0]), text.LIKED: list(text.REVEALS[1])})
QUALITY = {w: k for k, w in enumerate(text.QUALITY_WORDS)}


def _stances(review: str | None, patterns: dict[int, re.Pattern]) -> list[tuple[str, int]]:
    out = []
    for cls, pat in patterns.items():
        for m in pat.finditer(review or ""):
            out.append((next(g for g in m.groups() if g), cls))
    return out


def _taste(review: str | None) -> float:
    """Liked minus disliked clauses about the reviewed item's own attributes."""
    s = _stances(review, CLAUSES)
    return sum(c == text.LIKED for _, c in s) - sum(c == text.DISLIKED for _, c in s)


def _present(x) -> bool:
    return x is not None and x == x


def reader_features(samples: pd.DataFrame, fallback: float) -> np.ndarray:
    """One feature row per sample, from the visible prompt only."""
    rows = []
    for s in samples.itertuples(index=False):
        has_u, has_i = _present(s.user_avg), _present(s.item_avg)
        ua = s.user_avg if has_u else fallback
        ia = s.item_avg if has_i else fallback
        target = set(s.item_attributes)
        stance: dict[str, int] = {}
        devs, tastes = [], []
        for h in s.user_history:
            for a, c in _stances(h["review"], REVEALS) + _stances(h["review"], CLAUSES):
                stance[a] = c
            tastes.append(_taste(h["review"]))
            if has_u and target & set(h["attributes"]):
                devs.append(h["rating"] - ua)
        item_tastes = [_taste(h["review"]) for h in s.item_history]
        known = [stance[a] for a in target if a in stance]
        q = np.zeros(len(QUALITY))
        for w in s.item_description.replace(".", " ").split():
            if w in QUALITY:
                q[QUALITY[w]] = 1.0
        rows.append([
            float(has_u), ua, float(has_i), ia, np.log1p(s.item_n), np.log1p(s.user_n),
            np.mean(tastes) if tastes else 0.0, np.mean(item_tastes) if item_tastes else 0.0,
            np.mean(devs) if devs else 0.0, float(len(devs) > 0),
            sum(c == text.LIKED for c in known), sum(c == text.DISLIKED for c in known),
            sum(c == text.NEUTRAL for c in known), len(target) - len(known), *q,
        ])
    X = np.asarray(rows, float)
    # The averages' weights may grow with the number of ratings behind them.
    return np.hstack([X, X[:, [3]] * X[:, [4]], X[:, [1]] * X[:, [5]], X[:, [7]] * X[:, [4]]])


def history_reference(train, valid, test, fallback: float, reg: float = 1.0) -> np.ndarray:
    Xtr = np.hstack([np.ones((len(train), 1)), reader_features(train, fallback)])
    Xte = np.hstack([np.ones((len(test), 1)), reader_features(test, fallback)])
    w = np.linalg.solve(Xtr.T @ Xtr + reg * np.eye(Xtr.shape[1]), Xtr.T @ train.rating.to_numpy(float))
    return np.clip(Xte @ w, 1.0, 5.0)


# ------------------------------------------------------------------------------------------------
# Commands
# ------------------------------------------------------------------------------------------------


def _mae(pred, y) -> float:
    return float(np.mean(np.abs(np.asarray(pred) - np.asarray(y))))


def _rmse(pred, y) -> float:
    return float(np.sqrt(np.mean((np.asarray(pred) - np.asarray(y)) ** 2)))


def floor_table(data: Path) -> tuple[list[tuple[str, float, float]], dict]:
    manifest = S.read_manifest(data)
    train, valid, test = (S.load_split(data, s) for s in S.SPLITS)
    y = test.rating.to_numpy(float)
    mu = float(train.rating.mean())
    rows = [("global mean (train)", _mae(np.full_like(y, mu), y), _rmse(np.full_like(y, mu), y))]
    scale = S.rating_scale(manifest)
    for method, label in (("bias", "user + item bias (reczero baseline bias)"),
                          ("mf", "biased MF (reczero baseline mf, defaults, early stop on valid)")):
        model = make_baseline(method, scale=scale, seed=0).fit(train[TRIPLE], valid[TRIPLE])
        pred = model.predict(test[TRIPLE])
        rows.append((label, _mae(pred, y), _rmse(pred, y)))
    als, best = tuned_mf(train, valid, test, [(f, r) for f in (8, 32) for r in (0.03, 0.1, 0.3)])
    rows.append((f"biased MF (ALS, {best['factors']} factors, reg {best['reg']}, tuned on valid, refit on "
                 "train+valid)", _mae(als, y), _rmse(als, y)))
    ref = history_reference(train, valid, test, mu)
    rows.append(("history-only reference (ridge on prompt features)", _mae(ref, y), _rmse(ref, y)))
    floor = manifest["bayes"]["test"]
    rows.append(("Bayes floor (true latent parameters)", floor["mae"], floor["rmse"]))
    mf_mae = min(rows[2][1], rows[3][1])          # the better MF is the harder bar
    ref_mae, fl = rows[4][1], floor["mae"]
    checks = {"floor_below_mf": 1 - fl / mf_mae, "gap_closed": (mf_mae - ref_mae) / (mf_mae - fl),
              "test_samples": len(test), "cold_user_share": float((test.user_n == 0).mean()),
              "cold_item_share": float((test.item_n == 0).mean())}
    return rows, checks


def cmd_floor(args, synth_args: list[str]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "world"
        t0 = time.perf_counter()
        rc = reczero_main(["-q", "data", "synth", "--out", str(data), *synth_args])
        if rc:
            sys.exit(rc)
        seconds = time.perf_counter() - t0
        rows, checks = floor_table(data)
    lines = ["| method | test MAE | test RMSE |", "|---|---|---|"]
    lines += [f"| {name} | {mae:.4f} | {rmse:.4f} |" for name, mae, rmse in rows]
    lines.append("")
    lines.append(f"Floor {100 * checks['floor_below_mf']:.1f}% below the better biased MF (target ≥ 25%); the reference "
                 f"closes {100 * checks['gap_closed']:.1f}% of the MF-to-floor gap (target ≥ 50%). "
                 f"{checks['test_samples']} test samples, {100 * checks['cold_user_share']:.1f}% with a cold "
                 f"user, {100 * checks['cold_item_share']:.1f}% with a cold item; synth took {seconds:.1f} s.")
    print("\n".join(lines))
    print(json.dumps(checks))
    if args.record:
        part = "-".join(["floor", *(a.lstrip("-") for a in synth_args)])
        record(part, f"`python bench/recworld.py floor {' '.join(synth_args)}`".replace(" `", "`"), "\n".join(lines))


def cmd_speed(args, synth_args: list[str]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        if reczero_main(["-q", "data", "synth", "--raw-only", *synth_args]):
            sys.exit(1)
        results = [("generate only (`--raw-only`, no file)", time.perf_counter() - t0)]
        for fmt in ("amazon2018", "amazon2023", "yelp"):
            raw = Path(tmp) / f"{fmt}.jsonl.gz"
            t0 = time.perf_counter()
            rc = reczero_main(["-q", "data", "synth", "--raw-only", "--raw-format", fmt, "--raw-out", str(raw),
                               *synth_args])
            if rc:
                sys.exit(rc)
            results.append((f"generate + raw {fmt} (.jsonl.gz, {raw.stat().st_size / 1e6:.0f} MB)",
                            time.perf_counter() - t0))
        t0 = time.perf_counter()
        rc = reczero_main(["-q", "data", "synth", "--out", str(Path(tmp) / "prepared"), *synth_args])
        prepared = time.perf_counter() - t0
        n = S.read_manifest(Path(tmp) / "prepared")["n_interactions"] if rc == 0 else None
    lines = ["| what | reviews | seconds |", "|---|---|---|"]
    lines += [f"| {what} | {n} | {sec:.1f} |" for what, sec in results]
    lines.append(f"| generate + prepared dataset (splits, histories) | {n} | {prepared:.1f} |")
    print("\n".join(lines))
    if args.record:
        record("speed", f"`python bench/recworld.py speed {' '.join(synth_args)}`", "\n".join(lines))


def record(part: str, command: str, table: str) -> None:
    """Replace this part of the recworld section of bench/RESULTS.md (other sections untouched)."""
    begin, end = f"<!-- recworld:{part} -->", f"<!-- /recworld:{part} -->"
    load = os.getloadavg()[0]
    block = (f"{begin}\n{command} — {date.today().isoformat()}, 2 CPU cores shared with other jobs "
             f"(load average {load:.1f} at the end)\n\n"
             f"{table}\n{end}")
    content = RESULTS.read_text() if RESULTS.exists() else "# Benchmark results\n"
    if begin in content:
        head, rest = content.split(begin, 1)
        content = head + block + rest.split(end, 1)[1]
    else:
        if "## RecWorld" not in content:
            content = content.rstrip() + "\n\n## RecWorld\n"
        head, sep, tail = content.partition("## RecWorld\n")
        nxt = tail.find("\n## ")
        section, after = (tail, "") if nxt < 0 else (tail[:nxt + 1], tail[nxt + 1:])
        content = head + sep + section.rstrip() + "\n\n" + block + "\n" + after
    RESULTS.write_text(content)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("what", choices=["floor", "speed"])
    parser.add_argument("--record", action="store_true", help="Write the table into bench/RESULTS.md.")
    args, synth_args = parser.parse_known_args(argv)
    (cmd_floor if args.what == "floor" else cmd_speed)(args, synth_args)


if __name__ == "__main__":
    main()
