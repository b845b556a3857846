"""How much of a demo's ordering is the GRPO seed: RecZero-tiny, RecOne-tiny (and, after
``bench/template_ablation.py``, rate-only RecOne) re-trained with other seeds on a finished demo.

Only the GRPO seed changes. The data, base, teacher and SFT model are the demo's own, and the
recipes are the demo's (``configs/cpu/demo-*.yaml``), so the spread is RL's alone. Seed 0 is the
demo's own run. Before a run or an evaluation already on disk is counted, its recorded
``config.yaml`` is compared with the recipe this script would use, so results made under an older
recipe are never mixed in; every arm and seed must be scored on the same samples.

For each pair of arms it prints two things. First, how many (seed i, seed j) pairs have the first
arm below. Second, the **seed-averaged paired comparison**: for each test sample, each arm's absolute
error is averaged over its seeds, then the mean difference gets a bootstrap interval over samples
(``reczero.metrics.bootstrap_mean``). That interval is over test samples only. With a handful of
seeds, the pair count shows the seed spread.

    reczero demo --out demo-full                                   # seed 0 of reczero and recone
    python bench/template_ablation.py demo-full                    # seed 0 of recone-rate-only (optional)
    python bench/seeds.py demo-full --seeds 0 1 2 3                # ~8 min per (arm, seed) on one core

Runs go to ``DEMO/seeds/ARM-sN`` and are resumable: a finished run or evaluation is skipped, an
interrupted one continues from its last checkpoint. The tables are also written to
``DEMO/seeds/summary.json``, and a figure of every seed's MAE to ``DEMO/seeds/seeds.png``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from reczero.config import EvalConfig, GRPORecipe, resolve
from reczero.demo import demo_settings
from reczero.metrics import bootstrap_mean

# arm -> (demo section, model it starts from, the demo's own seed-0 run, recipe overrides)
ARMS = {
    "reczero": ("reczero", "base", "runs/reczero", {}),
    "recone": ("recone", "runs/sft-only", "runs/recone", {}),
    "recone-rate-only": ("recone", "ablation/sft-rate-only", "ablation/recone-rate-only",
                         {"template": "rate-only", "max_completion_length": 16}),
}
# recorded fields that may differ between runs of one recipe (paths, threads, the resume switch); an
# evaluation's seed and method name change nothing it scores (greedy decoding)
IGNORED = {"data", "model", "out", "threads", "resume", "dry_run"}
IGNORED_EVAL = IGNORED | {"seed", "method"}


def run_dir(root: Path, arm: str, seed: int) -> Path:
    return root / ARMS[arm][2] if seed == 0 else root / "seeds" / f"{arm}-s{seed}"


def recipe_for(root: Path, s: dict, arm: str, seed: int, threads: int) -> GRPORecipe:
    section, start, _, extra = ARMS[arm]
    out = run_dir(root, arm, seed)
    return resolve(GRPORecipe, None, {**s[section], **s.get("prompt", {}), **extra, "seed": seed,
                                      "threads": threads, "resume": out.exists(), "data": str(root / "data"),
                                      "model": str(root / start), "out": str(out)})


def refuse_mismatch(cfg: GRPORecipe | EvalConfig, folder: Path, ignored: set[str]) -> None:
    """Stop if ``folder`` already holds a run or evaluation whose recorded ``config.yaml`` differs from
    ``cfg`` in a field outside ``ignored``: results of another recipe must not be mixed in."""
    f = folder / "config.yaml"
    if not f.is_file():
        return
    recorded = yaml.safe_load(f.read_text()) or {}
    want = vars(cfg)
    diff = [f"{k}: recorded {recorded[k]!r}, now {want[k]!r}" for k in sorted(want)
            if k not in ignored and k in recorded and recorded[k] != want[k]]
    if diff:
        raise SystemExit(f"{folder}: made under another recipe than the demo's current one "
                         f"({'; '.join(diff)}); move it away to redo it")


def train_and_eval(root: Path, s: dict, arm: str, seed: int, splits: list[str], threads: int) -> Path:
    from reczero.evaluate import evaluate
    from reczero.train.grpo import train_grpo

    recipe = recipe_for(root, s, arm, seed, threads)
    run = Path(recipe.out)
    refuse_mismatch(recipe, run, IGNORED)
    if not (run / "done.json").is_file():
        print(f"== train {arm} seed {seed} -> {run}", flush=True)
        train_grpo(recipe)
    for split in splits:
        cfg = resolve(EvalConfig, None, {
            **s["eval"], **s.get("prompt", {}), "template": recipe.template, "seed": seed, "threads": threads,
            "model": str(run), "data": str(root / "data"), "split": split, "method": arm})
        refuse_mismatch(cfg, run / "eval" / split, IGNORED_EVAL)
        if not (run / "eval" / split / "metrics.json").is_file():
            print(f"== eval {arm} seed {seed} on {split}", flush=True)
            evaluate(cfg)
    return run


def abs_errors(run: Path, split: str) -> pd.Series:
    p = pd.read_parquet(run / "eval" / split / "predictions.parquet", columns=["sample_id", "rating", "prediction"])
    return (p["rating"] - p["prediction"]).abs().set_axis(p["sample_id"]).sort_index()


def summarise(root: Path, arms: list[str], seeds: list[int], split: str) -> dict:
    """Per-arm MAE per seed, and each pair of arms compared over seeds, on ``split``."""
    errors = {a: {s: abs_errors(run_dir(root, a, s), split) for s in seeds} for a in arms}
    first = errors[arms[0]][seeds[0]].index
    for a, s in itertools.product(arms, seeds):
        if not errors[a][s].index.equals(first):      # averages and pairs need the very same samples
            raise SystemExit(f"{run_dir(root, a, s)}: scored on other {split} samples than "
                             f"{run_dir(root, arms[0], seeds[0])}")
    out: dict = {"split": split, "seeds": seeds, "mae": {}, "pairs": []}
    for a in arms:
        maes = [float(errors[a][s].mean()) for s in seeds]
        out["mae"][a] = {"per_seed": maes, "mean": float(np.mean(maes)),
                         "sd": float(np.std(maes, ddof=1)) if len(maes) > 1 else 0.0}
    for a, b in itertools.combinations(arms, 2):
        ea = pd.concat(errors[a].values(), axis=1).mean(axis=1)
        eb = pd.concat(errors[b].values(), axis=1).mean(axis=1)
        diff, lo, hi = bootstrap_mean((ea - eb).to_numpy())
        wins = sum(x < y for x, y in itertools.product(out["mae"][a]["per_seed"], out["mae"][b]["per_seed"]))
        out["pairs"].append({"a": a, "b": b, "seed_averaged_diff": diff, "ci": [lo, hi],
                             "seed_pairs_a_below": wins, "seed_pairs": len(seeds) ** 2})
    return out


def render(summary: dict) -> str:
    seeds = summary["seeds"]
    lines = [f"{summary['split']} MAE by GRPO seed", "",
             "| arm | " + " | ".join(f"seed {s}" for s in seeds) + " | mean | sd |",
             "|---|" + "---|" * (len(seeds) + 2)]
    for a, m in summary["mae"].items():
        lines.append(f"| {a} | " + " | ".join(f"{x:.3f}" for x in m["per_seed"]) + f" | {m['mean']:.3f} | {m['sd']:.3f} |")
    lines.append("")
    for p in summary["pairs"]:
        lo, hi = p["ci"]
        lines.append(f"{p['a']} minus {p['b']}: seed-averaged {p['seed_averaged_diff']:+.3f} [{lo:+.3f}, {hi:+.3f}]"
                     f" (95% bootstrap over samples); {p['a']} below in {p['seed_pairs_a_below']} of "
                     f"{p['seed_pairs']} seed pairs")
    return "\n".join(lines)


def plot(summaries: list[dict], path: Path) -> None:
    """One panel per split: each arm's MAE per seed (dots, seed number beside) and its mean (bar)."""
    from reczero.report.plots import _plt, colors

    plt = _plt()
    fig, axes = plt.subplots(1, len(summaries), figsize=(4.2 * len(summaries), 3.2), sharey=True, squeeze=False)
    for ax, summary in zip(axes[0], summaries, strict=True):
        arms = list(summary["mae"])
        for i, (arm, color) in enumerate(zip(arms, colors(len(arms)), strict=True)):
            maes = summary["mae"][arm]["per_seed"]
            xs = i + 0.06 * (np.arange(len(maes)) - (len(maes) - 1) / 2)    # seeds side by side: ties stay visible
            ax.scatter(xs, maes, color=color, zorder=3)
            for x, seed, mae in zip(xs, summary["seeds"], maes, strict=True):
                ax.annotate(str(seed), (x, mae), xytext=(0, 5), textcoords="offset points", fontsize=7,
                            color="0.4", ha="center")
            ax.hlines(summary["mae"][arm]["mean"], i - 0.25, i + 0.25, color=color, linewidth=2)
        ax.set_xticks(range(len(arms)), arms)
        ax.set_xlim(-0.6, len(arms) - 0.4)
        ax.set_title(f"{summary['split']} MAE by GRPO seed (bar: mean)")
    axes[0][0].set_ylabel("MAE")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("demo_dir", help="a finished `reczero demo` output directory")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3],
                    help="GRPO seeds; 0 is the demo's own run (default: 0 1 2 3)")
    ap.add_argument("--arms", nargs="+", choices=sorted(ARMS), default=["recone", "reczero"],
                    help="which RL stages to re-seed (recone-rate-only needs bench/template_ablation.py first)")
    ap.add_argument("--splits", nargs="+", choices=["test", "valid"], default=["test", "valid"],
                    help="splits to score; the first is summarised, then each other one")
    ap.add_argument("--quick", action="store_true", help="the demo was run with --quick (use its settings)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads per run (0: torch's default)")
    args = ap.parse_args(argv)
    root = Path(args.demo_dir)
    s = demo_settings(args.quick)
    for arm in args.arms:
        start = root / ARMS[arm][1]
        if not any((d / "config.json").is_file() for d in (start, start / "model")):   # the base, or a run
            ap.error(f"{start}: no model there (run `reczero demo --out {root}`"
                     f"{' and bench/template_ablation.py' if arm == 'recone-rate-only' else ''} first)")
    for arm, seed in itertools.product(args.arms, args.seeds):
        train_and_eval(root, s, arm, seed, args.splits, args.threads)
    summaries = [summarise(root, args.arms, args.seeds, split) for split in args.splits]
    (root / "seeds").mkdir(exist_ok=True)
    (root / "seeds" / "summary.json").write_text(json.dumps(summaries, indent=2) + "\n")
    plot(summaries, root / "seeds" / "seeds.png")
    for summary in summaries:
        print()
        print(render(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
