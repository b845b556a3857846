"""The ranking half of ``reczero report``: runs whose results directory holds ``rankings.parquet``.

What this module chose, and why:

* Found like rating results (``report.find_results``): every ``metrics.json`` of the requested
  split with ``rankings.parquet`` beside it, read by :func:`reczero.rankings.read_rankings`.
* The table (best NDCG@10 first) shows Hit@5/10/20, NDCG@5/10/20, MRR, ``n`` and the targets
  unknown at training time (misses for every method), with the dataset's **ranking ceiling**
  (RecWorld's ``manifest["ranking_ceiling"]``, carried in each ``metrics.json``) as its own row.
* **Paired-bootstrap differences** of NDCG@10, best against each other method, on the samples the
  two share (joined by ``sample_id``): per-sample NDCG differences through
  :func:`reczero.metrics.bootstrap_mean`. A difference is claimed only when its 95% interval
  excludes zero; when two runs scored different samples, the shared count says so.
* Figures: Hit@K and NDCG@K against K (the ceiling dashed), NDCG@10 by the user's history length
  (``metrics.json``'s ``ndcg@10_by_history``, buckets of ``user_n``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from reczero.rankings import RANKING_KS, RANKINGS, per_sample_ndcg, read_rankings

HEADER = (["method"] + [f"Hit@{k}" for k in RANKING_KS] + [f"NDCG@{k}" for k in RANKING_KS]
          + ["MRR", "n", "unknown targets"])
CEILING = "ranking ceiling (best possible)"
DIFF_HEADER = ["best", "other", "NDCG@10 difference", "95% interval", "shared samples", "verdict"]


@dataclass
class RankingEntry:
    name: str
    dir: Path
    metrics: dict[str, Any]
    rankings: Any                                   # pandas DataFrame of rankings.parquet
    log: list[dict[str, Any]] = field(default_factory=list)


def find_rankings(run_dirs: list[str | Path], split: str) -> list[RankingEntry]:
    """Every ranking result for ``split`` below ``run_dirs``, best NDCG@10 first."""
    from reczero.report import _read_log, name_runs, result_dirs

    entries: list[RankingEntry] = []
    for res_dir in result_dirs(run_dirs, split, RANKINGS):
        res = read_rankings(res_dir)
        entries.append(RankingEntry(res.metrics.get("method") or res_dir.name, res_dir, res.metrics,
                                    res.rankings, _read_log(res_dir)))
    name_runs(entries)
    return sorted(entries, key=lambda e: -e.metrics["ndcg@10"])


def ceiling(entries: list[RankingEntry]) -> dict[str, Any] | None:
    """The dataset's ranking ceiling on this split, if any result carries one."""
    return next((e.metrics["ranking_ceiling"] for e in entries if e.metrics.get("ranking_ceiling")), None)


def _row(name: str, m: dict[str, Any]) -> list[str]:
    return ([name] + [f"{m[f'hit@{k}']:.4f}" for k in RANKING_KS] + [f"{m[f'ndcg@{k}']:.4f}" for k in RANKING_KS]
            + [f"{m['mrr']:.4f}", str(m["n"]), str(m.get("n_unknown_targets", "–"))])


def table_rows(entries: list[RankingEntry]) -> list[list[str]]:
    """Methods and the ceiling, by NDCG@10, best first (the ceiling normally on top)."""
    rows = [(e.metrics["ndcg@10"], _row(e.name, e.metrics)) for e in entries]
    top = ceiling(entries)
    if top is not None:
        rows.append((top["ndcg@10"], _row(CEILING, top)))
    return [row for _, row in sorted(rows, key=lambda t: -t[0])]


def paired_differences(entries: list[RankingEntry], *, seed: int = 0) -> list[dict[str, Any]]:
    """NDCG@10(best) − NDCG@10(other) with a paired-bootstrap 95% interval, for every other run."""
    from reczero.metrics import bootstrap_mean

    if len(entries) < 2:
        return []
    best = entries[0]
    ndcg_best = _per_sample(best)
    out = []
    for other in entries[1:]:
        joined = ndcg_best.to_frame("a").join(_per_sample(other).to_frame("b"), how="inner")
        if joined.empty:
            out.append({"best": best.name, "other": other.name, "n": 0})
            continue
        diff, lo, hi = bootstrap_mean((joined["a"] - joined["b"]).to_numpy(), seed=seed)
        out.append({"best": best.name, "other": other.name, "n": len(joined), "diff": diff, "lo": lo, "hi": hi})
    return out


def _per_sample(entry: RankingEntry):
    import pandas as pd

    return pd.Series(per_sample_ndcg(entry.rankings["rank"], 10), index=entry.rankings["sample_id"].to_numpy())


def difference_rows(diffs: list[dict[str, Any]]) -> list[list[str]]:
    rows = []
    for d in diffs:
        if not d["n"]:
            rows.append([d["best"], d["other"], "–", "–", "0", "no shared samples: not comparable"])
            continue
        verdict = ("better" if d["lo"] > 0 else "worse" if d["hi"] < 0 else "within noise")
        rows.append([d["best"], d["other"], f"{d['diff']:+.4f}", f"[{d['lo']:+.4f}, {d['hi']:+.4f}]", str(d["n"]),
                     f"{d['best']} {verdict}" if verdict != "within noise" else verdict])
    return rows


def figures(entries: list[RankingEntry]) -> list[tuple[str, str, Any]]:
    """(file stem, caption, figure) of the ranking figures."""
    from reczero.report import plots as P

    palette = dict(zip([e.name for e in entries], P.colors(len(entries)), strict=True))
    top = ceiling(entries)
    figs = [("ranking_at_k", "Hit@K and NDCG@K of every ranking method"
             + ("; dashed: the ranking ceiling (best possible)." if top else "."),
             P.ranking_at_k({e.name: e.metrics for e in entries}, palette, RANKING_KS, top))]
    buckets = {e.name: e.metrics["ndcg@10_by_history"] for e in entries if e.metrics.get("ndcg@10_by_history")}
    if buckets:
        reference = ("ceiling", top["ndcg@10_by_history"]) if top and top.get("ndcg@10_by_history") else None
        figs.append(("ndcg_by_history", "NDCG@10 by the user's history length (cold users on the left)"
                     + ("; dashed: the ranking ceiling." if reference else "."),
                     P.by_history(buckets, palette, key="ndcg@10", label="NDCG@10", reference=reference)))
    return figs
