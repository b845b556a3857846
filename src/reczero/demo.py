"""`reczero demo`: the whole pipeline on the embedded default, every stage for real.

RecWorld data → baselines (global, median, user, item, avg-blend, mf) → tiny base model →
RecZero (GRPO from the base) → heuristic teacher → SFT-only (distillation from the base) → RecOne
(GRPO from the SFT-only model: cold start, then RL) → evaluation of every model on the test split →
report, with the claims of the papers checked in words.

The stage settings live in ``configs/cpu/demo-quick.yaml`` and ``demo-full.yaml`` (one section per
stage, keys of that stage's command). Each stage writes a marker ``.stages/<name>.json`` when it
finished; a rerun skips finished stages (``--force`` redoes them from scratch). Every stage calls the
same library function as its CLI command, so a user can rerun any one by hand.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any

from reczero.config import (
    BaseConfig,
    BaselineConfig,
    DemoConfig,
    EvalConfig,
    GRPORecipe,
    SFTRecipe,
    SynthConfig,
    TeacherConfig,
    load_yaml,
    resolve,
)

log = logging.getLogger(__name__)

MODELS = ("reczero", "sft-only", "recone")


def demo_settings(quick: bool) -> dict[str, Any]:
    name = "demo-quick.yaml" if quick else "demo-full.yaml"
    with resources.as_file(resources.files("reczero") / "configs" / "cpu" / name) as path:
        return load_yaml(path)


class Stages:
    """Runs named stages once: prints name and time, records a marker, skips finished ones."""

    def __init__(self, root: Path, force: bool) -> None:
        self.root, self.force = root, force
        self.marks = root / ".stages"
        self.marks.mkdir(parents=True, exist_ok=True)
        self.times: dict[str, float] = {}

    def run(self, name: str, fn: Callable[[], Any], outputs: list[Path], always: bool = False) -> None:
        mark = self.marks / f"{name}.json"
        if mark.is_file() and not (self.force or always):
            print(f"== {name}: already done ({json.loads(mark.read_text())['seconds']:.0f}s), skipped")
            return
        for out in outputs:  # a forced stage, or one that did not finish, is redone from scratch
            if out.is_dir():
                shutil.rmtree(out)
            elif out.exists():
                out.unlink()
        print(f"== {name} ...", flush=True)
        t0 = time.time()
        rc = fn()
        if isinstance(rc, int) and rc != 0:
            raise RuntimeError(f"stage {name} failed with exit code {rc}")
        seconds = time.time() - t0
        self.times[name] = seconds
        mark.write_text(json.dumps({"seconds": seconds, "finished": time.strftime("%Y-%m-%d %H:%M:%S")}))
        print(f"== {name}: done in {seconds:.0f}s", flush=True)


MAX_PARSE_FAILURE = 0.05  # a model claim needs >= 95% parsed answers: otherwise the fallback, not the model, predicted
MIN_GAP = 0.01            # "below" means lower MAE by at least this much: a smaller difference is a tie, not an ordering


def claims(metrics: dict[str, dict[str, Any]],
           predictions: dict[str, Any] | None = None) -> list[tuple[str, bool | None]]:
    """The mission's claims on this run, each True/False (None when a method is missing).

    A claim about a model holds only if that model's parse-failure rate is at most 5%: a model whose
    answers fall back to the user's average is not what is being compared; and only if its MAE is
    lower by at least :data:`MIN_GAP` (0.01) — a full demo once printed "holds" for 0.887 vs 0.888.
    With ``predictions`` (method -> DataFrame of ``sample_id``, ``rating``, ``prediction``), each
    comparison also needs the 95% paired-bootstrap interval of the MAE difference on the shared
    samples to lie below zero, and the claim's text carries the difference and its interval.
    """
    from reczero.metrics import paired_mae_difference

    def compare(a: str, b: str) -> tuple[bool, str]:
        gap_ok = metrics[a]["mae"] <= metrics[b]["mae"] - MIN_GAP
        if not predictions or a not in predictions or b not in predictions:
            return gap_ok, ""
        both = predictions[a].merge(predictions[b], on="sample_id", suffixes=("_a", "_b"))
        if both.empty:
            return gap_ok, ""
        d, lo, hi = paired_mae_difference(both["rating_a"], both["prediction_a"], both["prediction_b"])
        return gap_ok and hi < 0, f"vs {b} {d:+.3f} [{lo:+.3f}, {hi:+.3f}]"

    def below(text: str, a: str, bs: list[str]) -> tuple[str, bool | None]:
        if a not in metrics or any(b not in metrics for b in bs):
            return text, None
        results = [compare(a, b) for b in bs]
        details = "; ".join(d for _, d in results if d)
        if details:
            text = f"{text} — MAE difference, 95% interval: {details}"
        models = [m for m in (a, *bs) if m in MODELS]
        if any(metrics[m].get("parse_failure_rate", 0.0) > MAX_PARSE_FAILURE for m in models):
            return text, False
        return text, all(ok for ok, _ in results)

    return [
        below("RecZero-tiny is below every constant predictor (global mean, global median)",
              "reczero", ["global", "median"]),
        below("RecOne-tiny is below SFT-only (distillation alone)", "recone", ["sft-only"]),
        below("RecOne-tiny is below RecZero-tiny", "recone", ["reczero"]),
        below("RecOne-tiny is below the prompt-only heuristics (user, item, avg-blend)",
              "recone", ["user", "item", "avg-blend"]),
    ]


def load_test_predictions(runs: Path) -> dict[str, Any]:
    """Each method's test predictions (``sample_id``, ``rating``, ``prediction``) under ``runs``."""
    import pandas as pd

    out = {}
    for f in sorted(runs.glob("*/eval/test/predictions.parquet")):
        mfile = f.with_name("metrics.json")
        name = (json.loads(mfile.read_text()).get("method") if mfile.is_file() else None) or f.parents[2].name
        out[name] = pd.read_parquet(f, columns=["sample_id", "rating", "prediction"])
    return out


def results_table(metrics: dict[str, dict[str, Any]], floor: dict[str, Any] | None) -> str:
    rows = sorted(metrics.items(), key=lambda kv: kv[1]["mae"])
    lines = [f"{'method':12s} {'MAE':>7s} {'RMSE':>7s} {'parse fail':>10s} {'n':>6s}"]
    for name, m in rows:
        lines.append(f"{name:12s} {m['mae']:7.3f} {m['rmse']:7.3f} {m.get('parse_failure_rate', 0.0):10.1%} {m['n']:6d}")
    if floor:
        lines.append(f"{'Bayes floor':12s} {floor['mae']:7.3f} {floor['rmse']:7.3f} {'':>10s} {floor.get('n', ''):>6}")
    return "\n".join(lines)


def demo(cfg: DemoConfig) -> int:
    from reczero.baselines import run_baseline
    from reczero.data.recworld import synth
    from reczero.data.schema import read_manifest
    from reczero.evaluate import evaluate
    from reczero.models import build_base
    from reczero.report import report
    from reczero.teacher import run_teacher
    from reczero.train.grpo import train_grpo
    from reczero.train.sft import train_sft

    s = demo_settings(cfg.quick)
    root = Path(cfg.out)
    data, base, runs = root / "data", root / "base", root / "runs"
    teacher_file = root / "teacher.jsonl"
    st = Stages(root, cfg.force)
    common = {"seed": cfg.seed, **s.get("prompt", {})}   # the prompt options go to every stage that prompts a model
    t_start = time.time()
    print(f"reczero demo ({'quick' if cfg.quick else 'full'}) -> {root}")

    st.run("data", lambda: synth(resolve(SynthConfig, None, {**s["data"], "seed": cfg.seed, "out": str(data)})), [data])
    for method in s["baselines"]:
        st.run(f"baseline-{method}", lambda m=method: run_baseline(resolve(
            BaselineConfig, None, {**s.get("baseline", {}), "seed": cfg.seed, "method": m, "data": str(data),
                                   "out": str(runs / m)})), [runs / method])
    st.run("base", lambda: build_base(resolve(BaseConfig, None, {**s["base"], **common, "data": str(data),
                                                                 "out": str(base)})), [base])
    st.run("reczero", lambda: train_grpo(resolve(GRPORecipe, None, {**s["reczero"], **common, "data": str(data),
                                                                    "model": str(base), "out": str(runs / "reczero")})),
           [runs / "reczero"])
    st.run("teacher", lambda: run_teacher(resolve(TeacherConfig, None, {**s["teacher"], **common, "data": str(data),
                                                                        "heuristic": True, "out": str(teacher_file)})),
           [teacher_file])
    st.run("sft-only", lambda: train_sft(resolve(SFTRecipe, None, {
        **s["sft"], **common, "data": str(data), "model": str(base), "teacher_data": str(teacher_file),
        "out": str(runs / "sft-only")})), [runs / "sft-only"])
    st.run("recone", lambda: train_grpo(resolve(GRPORecipe, None, {
        **s["recone"], **common, "data": str(data), "model": str(runs / "sft-only"), "out": str(runs / "recone")})),
        [runs / "recone"])
    for name in MODELS:
        st.run(f"eval-{name}", lambda n=name: evaluate(resolve(EvalConfig, None, {
            **s["eval"], **common, "model": str(runs / n), "data": str(data), "method": n})),
            [runs / name / "eval" / "test"])

    metrics = {}
    for mfile in sorted(runs.glob("*/eval/test/metrics.json")):
        m = json.loads(mfile.read_text())
        metrics[m.get("method") or mfile.parents[2].name] = m
    floor = read_manifest(data).get("bayes", {}).get("test")
    checked = claims(metrics, load_test_predictions(runs))
    st.run("report", lambda: report([runs], root / "report", split="test", title="reczero demo on RecWorld",
                                    claims=checked), [], always=True)
    print()
    print(results_table(metrics, floor))
    print()
    for text, holds in checked:
        print(f"  [{'holds' if holds else 'does not hold' if holds is False else 'n/a'}] {text}")
    print(f"\nreport: {root / 'report' / 'report.html'}  (total {time.time() - t_start:.0f}s)")
    return 0
