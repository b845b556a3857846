"""Summarise a demo directory as Markdown for bench/RESULTS.md: the results table (every method on
the same test samples, with the Bayes floor), the claims, and for each trained model its learning
curve (validation MAE against step) and collapse signals (share of groups with zero reward variance,
entropy, prediction spread, format and parse rates).

    python bench/learning.py demo-out-full            # after `reczero demo --out demo-out-full`
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from reczero.data.schema import read_manifest
from reczero.demo import MODELS, claims, load_test_predictions
from reczero.train.common import read_log


def results(root: Path) -> dict[str, dict]:
    out = {}
    for f in sorted((root / "runs").glob("*/eval/test/metrics.json")):
        m = json.loads(f.read_text())
        out[m.get("method") or f.parents[2].name] = m
    return out


def fmt(x, spec=".3f") -> str:
    return "–" if x is None else format(x, spec)


def table(metrics: dict[str, dict], floor: dict | None) -> list[str]:
    lines = ["| method | MAE | RMSE | parse failures | Pearson | pred std | distinct | n |", "|---|---|---|---|---|---|---|---|"]
    for name, m in sorted(metrics.items(), key=lambda kv: kv[1]["mae"]):
        lines.append(f"| {name} | {m['mae']:.3f} | {m['rmse']:.3f} | {m.get('parse_failure_rate', 0):.1%} | "
                     f"{fmt(m.get('pearson'))} | {fmt(m.get('pred_std'))} | {m.get('n_distinct_predictions', '–')} | {m['n']} |")
    if floor:
        lines.append(f"| Bayes floor | {floor['mae']:.3f} | {floor['rmse']:.3f} | | | | | {floor.get('n', '')} |")
    return lines


def curve(run: Path) -> list[str]:
    log = read_log(run / "log.jsonl")
    val = [r for r in log if "val_mae" in r]
    train = [r for r in log if "reward" in r]
    if not train and not val:
        return []
    lines = [f"**{run.name}** — validation (greedy) by step:", "",
             "| step | val MAE | parse rate | pred std | distinct |", "|---|---|---|---|---|"]
    lines += [f"| {r['step']} | {r['val_mae']:.3f} | {r['val_parse_rate']:.2f} | {r['val_pred_std']:.2f} | {r['val_n_distinct']} |"
              for r in val]

    def mean(key, rows):
        vals = [r[key] for r in rows if isinstance(r.get(key), int | float)]
        return statistics.fmean(vals) if vals else None

    if train:
        first, last = train[: max(1, len(train) // 5)], train[-max(1, len(train) // 5):]
        lines += ["", "| rollouts (first / last fifth of steps) | first | last |", "|---|---|---|"]
        for key in ("reward", "rewards/answer/mean", "format_rate", "parse_rate", "pred_std", "pred_distinct",
                    "frac_reward_zero_std", "entropy", "completions/mean_length"):
            lines.append(f"| {key} | {fmt(mean(key, first))} | {fmt(mean(key, last))} |")
    return lines + [""]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("demo_dir", type=Path)
    args = ap.parse_args()
    metrics = results(args.demo_dir)
    floor = read_manifest(args.demo_dir / "data").get("bayes", {}).get("test")
    out = table(metrics, floor) + [""]
    out += [f"- {'holds' if h else 'does not hold' if h is False else 'n/a'}: {t}" for t, h in claims(metrics, load_test_predictions(args.demo_dir / "runs"))] + [""]
    for name in MODELS:
        out += curve(args.demo_dir / "runs" / name)
    stages = sorted((args.demo_dir / ".stages").glob("*.json"))
    if stages:
        total = sum(json.loads(s.read_text())["seconds"] for s in stages)
        out.append("Stage times: " + ", ".join(f"{s.stem} {json.loads(s.read_text())['seconds']:.0f}s" for s in stages)
                   + f"; total {total / 60:.1f} min.")
    print("\n".join(out))


if __name__ == "__main__":
    main()
