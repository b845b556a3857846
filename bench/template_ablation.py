"""The paper's "no thinking" ablation of RecOne on a finished demo: the same pipeline with
``--template rate-only`` (the answer is ``<rate>N</rate>`` alone), beside the demo's structured RecOne.

Both arms start from the demo's base, ask the same heuristic teacher for the same train samples (the
rate-only teacher writes only its rating; what it predicts and when it rationalises is the same), and
use the demo's SFT and GRPO settings (``configs/cpu/demo-*.yaml``, sections ``sft`` and ``recone``)
and its evaluation budget. Only the template differs, so the comparison asks whether writing the
four steps helps the rating.

    reczero demo --out demo-full                      # first (the structured arm and the base)
    python bench/template_ablation.py demo-full       # then: rate-only teacher, SFT, GRPO, eval, table
    python bench/template_ablation.py demo-q --quick  # for a `reczero demo --quick` directory
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from reczero.config import EvalConfig, GRPORecipe, SFTRecipe, TeacherConfig, resolve
from reczero.demo import demo_settings
from reczero.evaluate import evaluate
from reczero.teacher import run_teacher
from reczero.train.grpo import train_grpo
from reczero.train.sft import train_sft

TEMPLATE = "rate-only"


def run_arm(root: Path, s: dict, seed: int) -> dict[str, float]:
    """Teacher, SFT, GRPO and evaluation of the rate-only arm under ``root/ablation``; wall seconds each."""
    data, base, out = root / "data", root / "base", root / "ablation"
    out.mkdir(exist_ok=True)
    teacher_file = out / "teacher-rate-only.jsonl"
    common = {"seed": seed, "data": str(data), "template": TEMPLATE}
    times: dict[str, float] = {}

    def stage(name: str, fn) -> None:
        t0 = time.time()
        fn()
        times[name] = round(time.time() - t0, 1)
        print(f"== {name}: {times[name]:.0f}s", flush=True)

    stage("teacher", lambda: run_teacher(resolve(TeacherConfig, None, {
        **s["teacher"], **common, "heuristic": True, "out": str(teacher_file)})))
    stage("sft", lambda: train_sft(resolve(SFTRecipe, None, {
        **s["sft"], **common, "model": str(base), "teacher_data": str(teacher_file), "out": str(out / "sft-rate-only"),
        "max_completion_length": 16})))
    stage("grpo", lambda: train_grpo(resolve(GRPORecipe, None, {
        **s["recone"], **common, "model": str(out / "sft-rate-only"), "out": str(out / "recone-rate-only"),
        "max_completion_length": 16})))
    for name in ("sft-rate-only", "recone-rate-only"):
        stage(f"eval-{name}", lambda n=name: evaluate(resolve(EvalConfig, None, {
            **s["eval"], **common, "model": str(out / n), "method": n})))
    return times


def metrics_of(run: Path) -> dict | None:
    f = run / "eval" / "test" / "metrics.json"
    return json.loads(f.read_text()) if f.is_file() else None


def table(root: Path) -> str:
    rows = [("recone (structured)", root / "runs" / "recone"), ("sft-only (structured)", root / "runs" / "sft-only"),
            ("recone-rate-only", root / "ablation" / "recone-rate-only"),
            ("sft-rate-only", root / "ablation" / "sft-rate-only")]
    lines = ["| arm | test MAE | RMSE | Pearson | distinct | parse failures | n |", "|---|---|---|---|---|---|---|"]
    for name, run in rows:
        m = metrics_of(run)
        if m:
            pearson = m.get("pearson")
            lines.append(f"| {name} | {m['mae']:.3f} | {m['rmse']:.3f} | {'–' if pearson is None else f'{pearson:.3f}'} | "
                         f"{m.get('n_distinct_predictions', '–')} | {m.get('parse_failure_rate', 0):.1%} | {m['n']} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("demo_dir", help="a finished `reczero demo` output directory")
    ap.add_argument("--quick", action="store_true", help="the demo was run with --quick (use its settings)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    root = Path(args.demo_dir)
    if not (root / "base" / "config.json").is_file():
        ap.error(f"{root}: no demo base model there (run `reczero demo --out {root}` first)")
    times = run_arm(root, demo_settings(args.quick), args.seed)
    print()
    print(table(root))
    print(f"\nwall seconds: {json.dumps(times)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
