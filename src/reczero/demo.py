"""`reczero demo`: the whole pipeline on the embedded default, every stage for real.

**Rating part**: RecWorld data → baselines (global, median, user, item, avg-blend, mf) → tiny base
model → RecZero (GRPO from the base) → heuristic teacher → SFT-only (distillation from the base) →
RecOne (GRPO from the SFT-only model: cold start, then RL) → evaluation of every model on the test
split → report, with the claims of the papers checked in words.

**Ranking part** (``--task ranking``; in ``OUT/ranking``): a RecWorld whose choices follow taste
more strongly (``choice_temperature`` in the recipe, recorded in the manifest: on the default world
the room between popularity and the ranking ceiling is small, R2EC.md) → popularity and SASRec →
a tiny base warmed up for R2ec's reasoning (``reczero base --format-warmup r2ec``) → R2ec-tiny by
RecPO, its no-reasoning ablation (user vector right after the prompt, item loss only) and RecPO
with the token loss off (what the reference effectively trained) → full-ranking evaluation on the
test split → the table with the ranking ceiling, and the claims checked by the paired bootstrap of
per-sample NDCG@10 differences (95% interval above zero and a gap of at least
:data:`MIN_NDCG_GAP`). The rating part keeps its world.

The stage settings live in ``configs/cpu/demo-quick.yaml`` and ``demo-full.yaml`` (one section per
stage, keys of that stage's command; the ranking part's in their ``ranking`` section, and ``parts``
says which parts a plain ``reczero demo`` runs). Each stage writes a marker ``.stages/<name>.json`` when it
finished; a rerun skips finished stages (``--force`` redoes them from scratch). Every stage calls the
same library function as its CLI command, so a user can rerun any one by hand.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from importlib import resources
from pathlib import Path
from typing import Any

from reczero.config import (
    BaseConfig,
    BaselineConfig,
    DemoConfig,
    EvalConfig,
    GRPORecipe,
    R2ecRecipe,
    SFTRecipe,
    SynthConfig,
    TeacherConfig,
    load_yaml,
    resolve,
)
from reczero.stages import Stage, Stages

log = logging.getLogger(__name__)

MODELS = ("reczero", "sft-only", "recone")


def read_test_metrics(runs: Path) -> dict[str, dict]:
    """Each run's test ``metrics.json`` below ``runs``, by method name (rating and ranking alike)."""
    metrics = {}
    for mfile in sorted(runs.glob("*/eval/test/metrics.json")):
        m = json.loads(mfile.read_text())
        metrics[m.get("method") or mfile.parents[2].name] = m
    return metrics


def demo_settings(quick: bool) -> dict[str, Any]:
    name = "demo-quick.yaml" if quick else "demo-full.yaml"
    with resources.as_file(resources.files("reczero") / "configs" / "cpu" / name) as path:
        return load_yaml(path)


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
    s = demo_settings(cfg.quick)
    root = Path(cfg.out)
    parts = ["rating", "ranking"] if cfg.task == "all" else [cfg.task] if cfg.task else s.get("parts", ["rating"])
    jobs = cfg.jobs or s.get("jobs", 1)
    st = Stages(root, cfg.force)
    t_start = time.time()
    print(f"reczero demo ({'quick' if cfg.quick else 'full'}; {' + '.join(parts)}) -> {root}")
    lanes = {}
    if "rating" in parts:
        rating_prelude(cfg, s, root, st)
        lanes.update({lane: (rating_lanes, (cfg, s, root)) for lane in ("recone", "reczero")})
    if "ranking" in parts:
        print(f"-- ranking part -> {root / 'ranking'}  (user prompt: {user_prompt_label(s['ranking'].get('prompt', {}))})")
        lanes["ranking"] = (ranking_lanes, (cfg, s["ranking"], root / "ranking"))
    st.run_lanes(lanes, jobs)
    if "rating" in parts:
        rating_summary(root, st)
    if "ranking" in parts:
        ranking_summary(s["ranking"], root / "ranking", st)
    elif not cfg.quick:
        print("\nthe ranking part (R2ec-tiny): reczero demo --task ranking" + (f" --out {root}" if cfg.out != "demo" else ""))
    print(f"(total {time.time() - t_start:.0f}s)")
    return 0


def rating_prelude(cfg: DemoConfig, s: dict[str, Any], root: Path, st: Stages) -> None:
    """The rating part's shared inputs: the world, the rating baselines and the base model."""
    from reczero.baselines import run_baseline
    from reczero.data.recworld import synth

    data, runs = root / "data", root / "runs"
    # the recipe's data section may pin the world's seed (the quick demo: the shipped base's world)
    st.run("data", lambda: synth(resolve(SynthConfig, None, {"seed": cfg.seed, **s["data"], "out": str(data)})),
           [data])
    for method in s["baselines"]:
        st.run(f"baseline-{method}", lambda m=method: run_baseline(resolve(
            BaselineConfig, None, {**s.get("baseline", {}), "seed": cfg.seed, "method": m, "data": str(data),
                                   "out": str(runs / m)})), [runs / method])
    st.run("base", lambda: base_stage(cfg, s, data, root / "base"), [root / "base"])


def base_stage(cfg: DemoConfig, s: dict[str, Any], data: Path, out: Path) -> int:
    """The base: the shipped one when the recipe allows it (``base: {shipped: true}``) and it was
    trained on exactly this world (:func:`reczero.models.shipped.shipped_base`), copied to ``out``;
    otherwise built here with the recipe's ``base`` settings."""
    from reczero.models import build_base
    from reczero.models.shipped import shipped_base

    settings = dict(s["base"])
    prompt = s.get("prompt", {})
    if settings.pop("shipped", False):
        path, why = shipped_base(data)
        if path is not None:
            shutil.copytree(path, out)
            print(f"base: {why}; copied to {out} (rebuilt by `make shipped-base`)")
            return 0
        print(f"base: {why}; building this world's own base (about 25 minutes on 2 cores)")
        prompt = {}     # the shipped base's own recipe, prompt included: the base the demo was measured from
    return build_base(resolve(BaseConfig, None, {**settings, "seed": cfg.seed, **prompt,
                                                 "data": str(data), "out": str(out)}))


def rating_lanes(cfg: DemoConfig, s: dict[str, Any], root: Path) -> dict[str, list[Stage]]:
    """The rating part's two lanes after the base: RecOne's (teacher, SFT-only, RecOne and its
    evaluation) and RecZero's (GRPO from the base, its evaluation, then SFT-only's evaluation, which
    waits for SFT-only: RecOne's lane is the longer one)."""
    from reczero.evaluate import evaluate
    from reczero.teacher import run_teacher
    from reczero.train.grpo import train_grpo
    from reczero.train.sft import train_sft

    data, base, runs = root / "data", root / "base", root / "runs"
    teacher_file = root / "teacher.jsonl"
    common = {"seed": cfg.seed, **s.get("prompt", {})}   # the prompt options go to every stage that prompts a model

    def evaluation(name: str, after: tuple[str, ...] = ()) -> Stage:
        return Stage(f"eval-{name}", lambda: evaluate(resolve(EvalConfig, None, {
            **s["eval"], **common, "model": str(runs / name), "data": str(data), "method": name})),
            [runs / name / "eval" / "test"], after)

    return {
        "recone": [
            Stage("teacher", lambda: run_teacher(resolve(TeacherConfig, None, {
                **s["teacher"], **common, "data": str(data), "heuristic": True, "out": str(teacher_file)})),
                [teacher_file]),
            Stage("sft-only", lambda: train_sft(resolve(SFTRecipe, None, {
                **s["sft"], **common, "data": str(data), "model": str(base), "teacher_data": str(teacher_file),
                "out": str(runs / "sft-only")})), [runs / "sft-only"]),
            Stage("recone", lambda: train_grpo(resolve(GRPORecipe, None, {
                **s["recone"], **common, "data": str(data), "model": str(runs / "sft-only"),
                "out": str(runs / "recone")})), [runs / "recone"]),
            evaluation("recone"),
        ],
        "reczero": [
            Stage("reczero", lambda: train_grpo(resolve(GRPORecipe, None, {
                **s["reczero"], **common, "data": str(data), "model": str(base), "out": str(runs / "reczero")})),
                [runs / "reczero"]),
            evaluation("reczero"),
            evaluation("sft-only", after=("sft-only",)),   # here: RecOne's lane is the longer one
        ],
    }


def rating_summary(root: Path, st: Stages) -> None:
    """The rating part's report, table and claims (every run's test metrics and predictions)."""
    from reczero.data.schema import read_manifest
    from reczero.report import report

    data, runs = root / "data", root / "runs"
    metrics = read_test_metrics(runs)
    floor = read_manifest(data).get("bayes", {}).get("test")
    checked = claims(metrics, load_test_predictions(runs))
    st.run("report", lambda: report([runs], root / "report", split="test", title="reczero demo on RecWorld",
                                    claims=checked), [], always=True)
    print()
    print(results_table(metrics, floor))
    print()
    for text, holds in checked:
        print(f"  [{'holds' if holds else 'does not hold' if holds is False else 'n/a'}] {text}")
    print(f"\nreport: {root / 'report' / 'report.html'}")


# ----------------------------------------------------------------------------------------------
# The ranking part
# ----------------------------------------------------------------------------------------------

#: The R2ec runs of the ranking part and what each changes in the recipe's ``r2ec`` section (the
#: recipe's ``variants`` section adds per-run settings, e.g. a smaller group where nothing is sampled).
R2EC_RUNS: dict[str, dict[str, Any]] = {
    "r2ec": {},
    "r2ec-no-reasoning": {"reasoning": False},     # user vector right after the prompt, item loss only
    "r2ec-item-loss-only": {"token_loss": False},  # RecPO with the token loss off: the reference's effective training
}
RANKING_BASELINES = ("popularity", "sasrec")
MIN_NDCG_GAP = 0.005   # "above" means a higher NDCG@10 by at least this much, and a paired interval above zero


def user_prompt_label(prompt: dict[str, Any]) -> str:
    """What the R2ec user prompt shows, in words (for the table)."""
    from reczero.config import R2ecPromptOptions

    o = R2ecPromptOptions(**prompt)
    parts = ["title", "rating", "time before"] + (["attributes"] if o.history_attributes else []) + (
        [f"review snippet ({o.review_chars} chars)"] if o.history_reviews else [])
    return f"the newest {o.history_window} history items: {', '.join(parts)}"


def ranking_claims(metrics: dict[str, dict[str, Any]],
                   rankings: dict[str, Any] | None = None) -> list[tuple[str, bool | None]]:
    """The ranking claims on this run, each True/False (None when a method is missing).

    "A above B" holds when A's NDCG@10 is higher by at least :data:`MIN_NDCG_GAP` and, with
    ``rankings`` (method -> DataFrame of ``sample_id`` and ``rank``), the 95% paired-bootstrap
    interval of the per-sample NDCG@10 difference on the shared samples lies above zero; the text
    then carries the difference and its interval."""
    from reczero.metrics import bootstrap_mean
    from reczero.rankings import per_sample_ndcg

    def above(text: str, a: str, b: str) -> tuple[str, bool | None]:
        if a not in metrics or b not in metrics:
            return text, None
        holds = metrics[a]["ndcg@10"] >= metrics[b]["ndcg@10"] + MIN_NDCG_GAP
        if rankings and a in rankings and b in rankings:
            both = rankings[a].merge(rankings[b], on="sample_id", suffixes=("_a", "_b"))
            if not both.empty:
                d, lo, hi = bootstrap_mean(per_sample_ndcg(both["rank_a"], 10) - per_sample_ndcg(both["rank_b"], 10))
                text = f"{text} — NDCG@10 difference {d:+.4f}, 95% interval [{lo:+.4f}, {hi:+.4f}]"
                holds = holds and lo > 0
        return text, holds

    return [
        above("R2ec-tiny is above popularity", "r2ec", "popularity"),
        above("R2ec-tiny is above its no-reasoning ablation", "r2ec", "r2ec-no-reasoning"),
        above("R2ec-tiny is above RecPO with the token loss off (what the reference effectively trained)",
              "r2ec", "r2ec-item-loss-only"),
        above("R2ec-tiny is above SASRec (moonshot)", "r2ec", "sasrec"),
    ]


def ranking_table(metrics: dict[str, dict[str, Any]], ceiling: dict[str, Any] | None) -> str:
    rows = sorted(metrics.items(), key=lambda kv: -kv[1]["ndcg@10"])
    lines = [f"{'method':22s} {'Hit@10':>7s} {'NDCG@10':>8s} {'n':>6s}"]
    if ceiling:
        lines.append(f"{'ranking ceiling':22s} {ceiling['hit@10']:7.4f} {ceiling['ndcg@10']:8.4f} {ceiling['n']:6d}")
    for name, m in rows:
        lines.append(f"{name:22s} {m['hit@10']:7.4f} {m['ndcg@10']:8.4f} {m['n']:6d}")
    return "\n".join(lines)


def load_test_rankings(runs: Path) -> dict[str, Any]:
    """Each method's test rankings (``sample_id``, ``rank``) under ``runs``."""
    from reczero.rankings import read_rankings

    out = {}
    for mfile in sorted(runs.glob("*/eval/test/metrics.json")):
        res = read_rankings(mfile.parent)
        out[res.metrics.get("method") or mfile.parents[2].name] = res.rankings[["sample_id", "rank"]]
    return out


def ranking_lanes(cfg: DemoConfig, s: dict[str, Any], root: Path) -> dict[str, list[Stage]]:
    """The ranking part's one lane (stages ``ranking-*``, files in ``root``): its world, popularity
    and SASRec, the R2ec base, the R2ec runs and their evaluations (see the module docstring)."""
    from reczero.baselines import run_baseline
    from reczero.data.recworld import synth
    from reczero.evaluate import evaluate
    from reczero.models import build_base
    from reczero.train.r2ec import train_r2ec

    data, base, runs = root / "data", root / "base", root / "runs"
    prompt = s.get("prompt", {})          # R2ec's prompt: the base's warm-up, RecPO and evaluation read the same
    stages = [Stage("ranking-data", lambda: synth(resolve(SynthConfig, None, {
        "seed": cfg.seed, **s["data"], "out": str(data)})), [data])]
    stages += [Stage(f"ranking-baseline-{method}", lambda m=method: run_baseline(resolve(BaselineConfig, None, {
        **s.get("baseline", {}), "seed": cfg.seed, "method": m, "data": str(data), "out": str(runs / m)})),
        [runs / method]) for method in s.get("baselines", RANKING_BASELINES)]
    stages.append(Stage("ranking-base", lambda: build_base(resolve(BaseConfig, None, {
        **s["base"], **prompt, "format_warmup": "r2ec", "seed": cfg.seed, "data": str(data), "out": str(base)})),
        [base]))
    for name, change in R2EC_RUNS.items():
        settings = {**s["r2ec"], **change, **s.get("variants", {}).get(name, {}), **prompt}
        stages.append(Stage(f"ranking-{name}", lambda n=name, v=settings: train_r2ec(resolve(R2ecRecipe, None, {
            **v, "seed": cfg.seed, "data": str(data), "model": str(base), "out": str(runs / n)})), [runs / name]))
        stages.append(Stage(f"ranking-eval-{name}", lambda n=name: evaluate(resolve(EvalConfig, None, {
            **s.get("eval", {}), "model": str(runs / n), "data": str(data), "split": "test", "method": n})),
            [runs / name / "eval" / "test"]))
    return {"ranking": stages}


def ranking_summary(s: dict[str, Any], root: Path, st: Stages) -> None:
    """The ranking part's report, table (with the ceiling) and claims."""
    from reczero.data.schema import read_manifest
    from reczero.report import report

    data, runs = root / "data", root / "runs"
    metrics = read_test_metrics(runs)
    ceiling = read_manifest(data).get("ranking_ceiling", {}).get("test")
    checked = ranking_claims(metrics, load_test_rankings(runs))
    st.run("ranking-report", lambda: report([runs], root / "report", split="test",
                                            title="reczero demo: ranking on RecWorld", claims=checked), [], always=True)
    world = read_manifest(data).get("world", {})
    print(f"\nranking on RecWorld (choice_temperature {world.get('choice_temperature')}), test split; "
          f"R2ec user prompt: {user_prompt_label(s.get('prompt', {}))}")
    print(ranking_table(metrics, ceiling))
    print()
    for text, holds in checked:
        print(f"  [{'holds' if holds else 'does not hold' if holds is False else 'n/a'}] {text}")
    print(f"\nreport: {root / 'report' / 'report.html'}")
