"""``reczero report``: one self-contained HTML page and a Markdown twin comparing runs.

What this module chose, and why:

* Results are found, not configured: every ``metrics.json`` below the given directories whose
  ``split`` is the requested one and which has its ``predictions.parquet`` beside it (the layout
  ``RUN/eval/<split>/`` of model evaluations and baselines, or any ``eval --out`` directory). A
  run's ``log.jsonl`` is looked for in the results directory and in the run directory above
  ``eval/<split>``.
* The table is sorted by MAE, best first, with the dataset's **Bayes floor** (the best possible
  MAE/RMSE of a known synthetic world) as its own row, and a plain warning beside any method whose
  predictions are (near-)constant: a standard deviation below :data:`MIN_STD`, or fewer than
  :data:`MIN_DISTINCT` distinct values that do not follow the rating beyond chance (a coin between 3
  and 4 is flagged, a model answering 3 or 4 as its prompt says is not). A constant can score a
  respectable MAE; the reader must see it.
* Figures are PNGs (matplotlib, Agg): written beside ``report.md`` and embedded as base64 in
  ``report.html`` so the page opens anywhere, offline, as one file.
* ``claims``: statements with a verdict computed by the caller (the demo), rendered as
  "holds" / "does not hold"; the report never decides them itself.
* **Ranking results** (``rankings.parquet`` beside ``metrics.json``) get their own section,
  built by ``report.ranking``: a Hit/NDCG/MRR table with the ranking ceiling row, paired-bootstrap
  NDCG@10 differences, Hit/NDCG@K and NDCG-by-history figures. A report may hold both kinds; the
  rating part is unchanged, and absent when no rating result is found.
"""

from __future__ import annotations

import base64
import html
import json
import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from reczero.errors import DataError
from reczero.io import read_jsonl
from reczero.predictions import METRICS, PREDICTIONS, read_results

log = logging.getLogger(__name__)

MIN_DISTINCT = 3          # <= 2 distinct predictions is a constant or a coin ...
MIN_FOLLOW_Z = 3.0        # ... unless they follow the rating (|Pearson| * sqrt(n) >= this, far beyond chance): a
                          # 3-or-4 model that reads its prompt
MIN_STD = 0.05


@dataclass
class Entry:
    name: str
    dir: Path
    metrics: dict[str, Any]
    predictions: Any
    log: list[dict[str, Any]] = field(default_factory=list)

    @property
    def constant(self) -> bool:
        pred = self.predictions["prediction"]          # from the file itself, whatever wrote the metrics
        if float(pred.std(ddof=0)) < MIN_STD:
            return True
        rating = self.predictions["rating"]
        r = float(np.corrcoef(pred, rating)[0, 1]) if float(rating.std(ddof=0)) > 0 else 0.0   # constant truth: no signal
        follows = abs(r) * math.sqrt(len(pred))
        return pred.nunique() < MIN_DISTINCT and follows < MIN_FOLLOW_Z

    def warning(self) -> str:
        if not self.constant:
            return ""
        pred = self.predictions["prediction"]
        return (f"near-constant predictions ({pred.nunique()} distinct values, "
                f"std {float(pred.std(ddof=0)):.3f}): it ignores its input")


def result_dirs(run_dirs: list[str | Path], split: str, table: str) -> Iterator[Path]:
    """Every result directory below ``run_dirs`` whose ``metrics.json`` is for ``split`` and that
    holds ``table`` (``predictions.parquet`` or ``rankings.parquet``), each once."""
    seen: set[Path] = set()
    for root in map(Path, run_dirs):
        if not root.exists():
            raise DataError(f"{root}: no such directory")
        for path in sorted(root.rglob(METRICS)):
            res_dir = path.parent.resolve()
            if res_dir in seen or not (res_dir / table).is_file():
                continue
            try:
                if json.loads(path.read_text()).get("split") != split:
                    continue
            except json.JSONDecodeError as err:
                raise DataError(f"{path}: not valid JSON ({err})") from err
            seen.add(res_dir)
            yield res_dir


def name_runs(entries: list[Any]) -> None:
    """The same method twice: name the run too (``mf (runA)``, ``mf (runB)``)."""
    names = [e.name for e in entries]
    for e in entries:
        if names.count(e.name) > 1:
            e.name = f"{e.name} ({_run_root(e.dir).name})"


def find_results(run_dirs: list[str | Path], split: str) -> list[Entry]:
    """Every result directory for ``split`` below ``run_dirs``, with its log when there is one."""
    entries: list[Entry] = []
    for res_dir in result_dirs(run_dirs, split, PREDICTIONS):
        res = read_results(res_dir)
        entries.append(Entry(res.metrics.get("method") or res_dir.name, res_dir, res.metrics, res.predictions,
                             _read_log(res_dir)))
    name_runs(entries)
    return sorted(entries, key=lambda e: e.metrics["mae"])


def _run_root(res_dir: Path) -> Path:
    return res_dir.parent.parent if res_dir.parent.name == "eval" else res_dir


def _read_log(res_dir: Path) -> list[dict[str, Any]]:
    for path in (res_dir / "log.jsonl", _run_root(res_dir) / "log.jsonl"):
        if path.is_file():
            return [row for _, row in read_jsonl(path)]     # a line that is not JSON is named and skipped
    return []


def _fmt(x: Any, digits: int = 4) -> str:
    return "–" if x is None else f"{x:.{digits}f}" if isinstance(x, float) else str(x)


def _table_rows(entries: list[Entry]) -> list[list[str]]:
    """Methods and Bayes floor(s) sorted by MAE (the floor sits where its MAE puts it, normally on top)."""
    rows = [(e.metrics["mae"], [e.name, _fmt(e.metrics["mae"]), _fmt(e.metrics["rmse"]),
                                f"{e.metrics['parse_failure_rate']:.1%}", str(e.metrics["n"]), e.warning()])
            for e in entries]
    floors = {(e.metrics["bayes_mae"], e.metrics.get("bayes_rmse")) for e in entries if e.metrics.get("bayes_mae") is not None}
    rows += [(m, ["Bayes floor (best possible)", _fmt(m), _fmt(r), "–", "–", ""]) for m, r in floors]
    return [row for _, row in sorted(rows, key=lambda t: t[0])]


HEADER = ["method", "MAE", "RMSE", "parse failures", "n", "warning"]


def _figures(entries: list[Entry]) -> list[tuple[str, str, Any]]:
    """(file stem, caption, figure) for every figure there is data for."""
    from reczero.report import plots as P

    palette = dict(zip([e.name for e in entries], P.colors(len(entries)), strict=True))
    bayes = next((e.metrics["bayes_mae"] for e in entries if e.metrics.get("bayes_mae") is not None), None)
    figs = [("mae", "MAE of every method, best on top; the dashed line is the Bayes floor where known.",
             P.mae_bars([e.name for e in entries], [e.metrics["mae"] for e in entries], bayes, [e.constant for e in entries]))]
    curves = P.training_curves({e.name: e.log for e in entries if e.log}, palette)
    if curves is not None:
        figs.append(("curves", "Training curves from each run's log.jsonl.", curves))
    preds = {e.name: e.predictions for e in entries}
    scale = next((e.metrics["rating_scale"] for e in entries if e.metrics.get("rating_scale")), None)
    truth_all = np.concatenate([p["rating"].to_numpy() for p in preds.values()])
    lo, hi = (scale["min"], scale["max"]) if scale else (float(truth_all.min()), float(truth_all.max()))
    step = scale.get("step", 1.0) if scale else 1.0
    figs.append(("errors", "Error histograms (prediction − rating).",
                 P.error_histograms({n: (p["prediction"] - p["rating"]).to_numpy() for n, p in preds.items()}, palette, step)))
    figs.append(("pred_vs_true", "Predictions per true rating (boxes: quartiles; dashed: perfect).",
                 P.predicted_vs_true({n: (p["rating"].to_numpy(), p["prediction"].to_numpy()) for n, p in preds.items()},
                                     palette, lo, hi)))
    buckets = {e.name: e.metrics["mae_by_history"] for e in entries if e.metrics.get("mae_by_history")}
    if buckets:
        figs.append(("mae_by_history", "MAE by the user's history length (cold users on the left).",
                     P.by_history(buckets, palette)))
    return figs


def report(run_dirs: list[str | Path], out: str | Path, split: str = "test", title: str = "reczero report",
           claims: list[tuple[str, bool]] | None = None) -> Path:
    """Write ``OUT/report.html`` (self-contained), ``OUT/report.md`` and its PNGs; return the HTML path."""
    import matplotlib.pyplot as plt

    from reczero.report import ranking as R

    entries = find_results(run_dirs, split)
    ranked = R.find_rankings(run_dirs, split)
    if not entries and not ranked:
        raise DataError(f"no results for split {split!r} below {', '.join(map(str, run_dirs))} "
                        f"(expected eval/{split}/metrics.json with predictions.parquet or rankings.parquet beside it)")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)

    def save(figs) -> list[tuple[Path, str]]:
        images = []
        for stem, caption, fig in figs:
            path = out / f"{stem}.png"
            fig.savefig(path, dpi=110)
            plt.close(fig)
            images.append((path, caption))
        return images

    images = save(_figures(entries)) if entries else []
    rows = _table_rows(entries)
    ranking = (Ranking(ranked, R.table_rows(ranked), R.difference_rows(R.paired_differences(ranked)),
                       save(R.figures(ranked))) if ranked else None)
    created = datetime.now(UTC).isoformat(timespec="seconds")
    (out / "report.md").write_text(_markdown(title, split, rows, images, claims or [], entries, created, ranking))
    html_path = out / "report.html"
    html_path.write_text(_html(title, split, rows, images, claims or [], entries, created, ranking))
    log.info("report of %d results -> %s", len(entries) + len(ranked), html_path)
    return html_path


@dataclass
class Ranking:
    """The ranking section: its results, table rows, paired differences and images."""

    entries: list
    rows: list[list[str]]
    differences: list[list[str]]
    images: list[tuple[Path, str]]

    def intro(self) -> str:
        m = self.entries[0].metrics
        masked = "masked" if m.get("mask_history") else "not masked"
        return (f"{len(self.entries)} ranking methods, sorted by NDCG@10 (best first); full ranking over the "
                f"{m.get('n_items', '?')} items known at training time, the user's history {masked}; "
                "unknown targets are misses for every method.")


DIFF_NOTE = ("Paired bootstrap (2,000 draws) of per-sample NDCG@10 differences on the samples both runs "
             "scored; a difference counts only when its 95% interval excludes zero.")


def _sources(entries: list, ranking: Ranking | None = None) -> list[str]:
    return [f"{e.name}: {e.dir}" for e in entries + (ranking.entries if ranking else [])]


def _md_table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + ["| " + " | ".join(r) + " |" for r in rows]


def _markdown(title, split, rows, images, claims, entries, created, ranking=None) -> str:
    from reczero.report import ranking as R

    lines = [f"# {title}", ""]
    if entries:
        lines += [f"Split **{split}**, {len(entries)} methods, sorted by MAE (best first). Created {created}.", ""]
        lines += _md_table(HEADER, [[("**" + c + "**" if j == 5 and c else c) for j, c in enumerate(r)] for r in rows])
    if claims:
        lines += ["", "## Claims", ""] + [f"- {'✅ holds' if ok else '❌ does not hold'}: {text}" for text, ok in claims]
    for path, caption in images:
        lines += ["", f"![{caption}]({path.name})", "", f"*{caption}*"]
    if ranking:
        lines += ["", "## Ranking", "", f"Split **{split}**. {ranking.intro()} Created {created}.", ""]
        lines += _md_table(R.HEADER, ranking.rows)
        if ranking.differences:
            lines += ["", "### NDCG@10: best against each other method", "", DIFF_NOTE, ""]
            lines += _md_table(R.DIFF_HEADER, ranking.differences)
        for path, caption in ranking.images:
            lines += ["", f"![{caption}]({path.name})", "", f"*{caption}*"]
    lines += ["", "## Sources", ""] + [f"- `{s}`" for s in _sources(entries, ranking)]
    return "\n".join(lines) + "\n"


CSS = """body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:1em 0}td,th{padding:4px 10px;border-bottom:1px solid #ddd;text-align:right}
td:first-child,th:first-child,td:last-child{text-align:left}tr.floor{font-style:italic;background:#f3f3f3}
.warn{color:#b00020;font-weight:600}.ok{color:#1b7f3b;font-weight:600}.no{color:#b00020;font-weight:600}
img{max-width:100%;border:1px solid #eee;margin-top:.5em}figcaption{color:#555;font-size:.9em}code{font-size:.85em}"""


def _html_table(header: list[str], rows: list[list[str]], floor: str) -> str:
    e = html.escape
    out = ["<table><tr>" + "".join(f"<th>{e(h)}</th>" for h in header) + "</tr>"]
    for r in rows:
        cls = ' class="floor"' if r[0].startswith(floor) else ""
        out.append(f"<tr{cls}>" + "".join(f"<td>{e(c)}</td>" for c in r) + "</tr>")
    return "".join(out) + "</table>"


def _html_images(images) -> list[str]:
    e = html.escape
    out = []
    for path, caption in images:
        data = base64.b64encode(path.read_bytes()).decode("ascii")
        out.append(f'<figure><img alt="{e(caption)}" src="data:image/png;base64,{data}"><figcaption>{e(caption)}</figcaption></figure>')
    return out


def _html(title, split, rows, images, claims, entries, created, ranking=None) -> str:
    from reczero.report import ranking as R

    e = html.escape
    body = [f"<h1>{e(title)}</h1>"]
    if entries:
        body += [f"<p>Split <b>{e(split)}</b>, {len(entries)} methods, sorted by MAE (best first). Created {e(created)}.</p>",
                 "<table><tr>" + "".join(f"<th>{e(h)}</th>" for h in HEADER) + "</tr>"]
        for r in rows:
            cls = ' class="floor"' if r[0].startswith("Bayes floor") else ""
            cells = [f"<td>{e(c)}</td>" for c in r[:5]] + [f'<td class="warn">{"⚠ " + e(r[5]) if r[5] else ""}</td>']
            body.append(f"<tr{cls}>" + "".join(cells) + "</tr>")
        body.append("</table>")

    if claims:
        body.append("<h2>Claims</h2><ul>")
        body += [f'<li><span class="{"ok" if ok else "no"}">{"holds" if ok else "does not hold"}</span>: {e(text)}</li>'
                 for text, ok in claims]
        body.append("</ul>")
    body += _html_images(images)
    if ranking:
        body += ["<h2>Ranking</h2>", f"<p>Split <b>{e(split)}</b>. {e(ranking.intro())} Created {e(created)}.</p>",
                 _html_table(R.HEADER, ranking.rows, R.CEILING)]
        if ranking.differences:
            body += ["<h3>NDCG@10: best against each other method</h3>", f"<p>{e(DIFF_NOTE)}</p>",
                     _html_table(R.DIFF_HEADER, ranking.differences, R.CEILING)]
        body += _html_images(ranking.images)
    body.append("<h2>Sources</h2><ul>" + "".join(f"<li><code>{e(s)}</code></li>" for s in _sources(entries, ranking)) + "</ul>")
    return (f'<!doctype html><html><head><meta charset="utf-8"><title>{e(title)}</title><style>{CSS}</style></head>'
            f"<body>{''.join(body)}</body></html>\n")


def report_cli(args) -> int:
    """``reczero report DIR... --out OUT [--split test] [--title T]``."""
    path = report(args.runs, args.out, split=args.split, title=args.title)
    print(f"report: {path} (and {Path(args.out) / 'report.md'})")
    return 0
