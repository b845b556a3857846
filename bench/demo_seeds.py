"""Does a demo's verdict hold over seeds? The whole rating part of ``reczero demo`` once per seed.

``bench/seeds.py`` re-trains only the GRPO stages on one finished demo (the spread of RL alone);
this script re-runs the demo itself, ``reczero demo [--quick] --task rating --seed N``, so every
stage after the world changes its seed: the teacher's sample draw, SFT's order, both GRPO runs,
MF. The world stays the recipe's (the quick recipe pins its data seed to the shipped base's world),
so every seed is scored on the same test samples. Each run's claims are recomputed from its files
with the demo's own rule (:func:`reczero.demo.claims`: a gap of 0.01 MAE and a 95% paired-bootstrap
interval below zero, parse failures ≤ 5%), never read from its log.

    python bench/demo_seeds.py --quick --root demo-seeds --seeds 0 1 2 3     # about 12 minutes a seed

Runs go to ``ROOT/seed-N``; a demo rerun skips its finished stages, so an interrupted sweep resumes.
One demo at a time (each uses the recipe's ``jobs`` lanes). Prints a markdown table of every
method's test MAE per seed and each claim's verdict per seed, and writes ``ROOT/summary.json``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from reczero.demo import claims, load_test_predictions, read_test_metrics

SHORT = ["RecZero < constants", "RecOne < SFT-only", "RecOne < RecZero", "RecOne < heuristics"]


def run_seed(root: Path, seed: int, quick: bool) -> float:
    """``reczero demo`` for one seed (rating part); its wall-clock seconds (a resumed run: the rest)."""
    cmd = [str(Path(sys.executable).with_name("reczero")), "demo", "--task", "rating", "--seed", str(seed),
           "--out", str(root / f"seed-{seed}")] + (["--quick"] if quick else [])
    print("$", " ".join(cmd), flush=True)
    t0 = time.time()
    subprocess.run(cmd, check=True)
    return time.time() - t0


def verdicts(out: Path) -> tuple[dict[str, float], list[tuple[str, bool | None]]]:
    runs = out / "runs"
    metrics = read_test_metrics(runs)
    return {m: v["mae"] for m, v in metrics.items()}, claims(metrics, load_test_predictions(runs))


def markdown(results: dict[int, dict]) -> str:
    seeds = sorted(results)
    methods = sorted({m for r in results.values() for m in r["mae"]}, key=lambda m: results[seeds[0]]["mae"].get(m, 9))
    lines = ["| test MAE | " + " | ".join(f"seed {s}" for s in seeds) + " |", "|---" * (len(seeds) + 1) + "|"]
    lines += [f"| {m} | " + " | ".join(f"{results[s]['mae'].get(m, float('nan')):.3f}" for s in seeds) + " |"
              for m in methods]
    lines += ["", "| claim | " + " | ".join(f"seed {s}" for s in seeds) + " | holds on |",
              "|---" * (len(seeds) + 2) + "|"]
    for i, name in enumerate(SHORT):
        marks = [results[s]["claims"][i][1] for s in seeds]
        cells = ["holds" if v else "does not hold" if v is False else "n/a" for v in marks]
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {sum(bool(v) for v in marks)} of {len(seeds)} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--root", type=Path, default=Path("demo-seeds"), help="Directory of the per-seed demos, ROOT/seed-N (default: demo-seeds).")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3], help="Seeds to run (default 0 1 2 3).")
    ap.add_argument("--quick", action="store_true", help="The quick recipe (`make demo`); else the full demo's.")
    ap.add_argument("--no-run", action="store_true", help="Only tabulate the runs already in ROOT.")
    args = ap.parse_args(argv)
    results: dict[int, dict] = {}
    for seed in args.seeds:
        out = args.root / f"seed-{seed}"
        seconds = None if args.no_run else run_seed(args.root, seed, args.quick)
        if not (out / "runs").is_dir():
            print(f"{out}: no runs (skipped)")
            continue
        mae, checked = verdicts(out)
        results[seed] = {"mae": mae, "claims": checked, "seconds": seconds}
        print(f"seed {seed}: " + "; ".join(f"{n}: {'holds' if v else 'does not hold'}"
                                           for n, (_, v) in zip(SHORT, checked, strict=True)), flush=True)
    if not results:
        return 1
    table = markdown(results)
    print("\n" + table + "\n")
    for seed, r in results.items():
        for text, holds in r["claims"]:
            print(f"seed {seed}: [{'holds' if holds else 'does not hold'}] {text}")
    (args.root / "summary.json").write_text(json.dumps(
        {str(s): {"mae": r["mae"], "seconds": r["seconds"],
                  "claims": [{"claim": t, "holds": h} for t, h in r["claims"]]} for s, r in results.items()},
        indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
