"""End-to-end ``reczero data prepare`` throughput and peak memory on Amazon-2018-format dumps,
and on SASRec-style item-sequence files (``--source sequences``).

Generates a reviews file (JSON lines, as ``<Category>.json``) and its ``meta_`` file of N reviews,
then runs ``reczero data prepare --source amazon2018`` on it in a fresh process under
``/usr/bin/time`` and records wall time, reviews/s and peak RSS. The dump looks like a real
category: day-resolution ``unixReviewTime`` (many same-second ties), skewed user activity and item
popularity, unique review texts of realistic length (~90 words), ~5% rating-only lines, ~0.3%
duplicate (user, item) pairs, ~1% reviews of items missing from meta, a few malformed lines.

    python bench/prepare.py --sizes 100000,300000,1000000 [--dir /tmp/reczero-bench-prepare] [--gzip]
        [--results bench/RESULTS.md] [--baseline-src DIR]

``--source sequences`` generates instead a benchmark file of N interactions in the SASRec / S3-Rec
format (``user item item ...``, one user per line), shaped like S3-Rec's Amazon Beauty (~9 items a
user, at least 5, skewed item popularity, no item twice in a line), and prepares it as the
protocol those files are made for does: ``--split leave-last --history 50`` (SASRec's maximum
length). Its table goes to the section "Implicit sources: prepare speed".

    python bench/prepare.py --source sequences --sizes 200000,1000000

``--baseline-src DIR`` (a copy of another version's ``src``, holding ``reczero/``) runs that version
too, on the same dumps, right before the current one at each size, so the two are measured under the
same machine load. Absolute times depend on the machine and its load (recorded: the 1-min load
average before and after each run); the sizes of one run are comparable with each other (cost per
review should stay flat if the pipeline is linear), and CPU seconds per review are the stable figure.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import orjson

ROOT = Path(__file__).resolve().parents[1]
SECTION = "## prepare"
MARK, END_MARK = "<!-- prepare:run -->", "<!-- /prepare:run -->"   # the generated part of the section
SEQUENCES_SECTION = "## Implicit sources: prepare speed"
SEQUENCES_MARK, SEQUENCES_END = "<!-- prepare-sequences:run -->", "<!-- /prepare-sequences:run -->"
SEQUENCES_ARGS = ["--split", "leave-last", "--history", "50"]
SYLLABLES = "ka lo mi nu pe ra si to vu be da fe go hi ju ke la mo ne po qu re sa ti un ve wa xo yo ze".split()


def vocabulary(rng: np.random.Generator, size: int = 4000) -> np.ndarray:
    words = {"".join(rng.choice(SYLLABLES, rng.integers(1, 4))) for _ in range(size * 2)}
    return np.array(sorted(words)[:size])


def generate(reviews: Path, n: int, seed: int = 0) -> Path:
    """Write ``reviews`` (n review lines) and ``meta_<name>`` beside it; returns the meta path."""
    rng = np.random.default_rng(seed)
    words = vocabulary(rng)
    n_users, n_items = max(n // 8, 10), max(n // 25, 10)
    users = (n_users * rng.random(n) ** 2.0).astype(np.int64)        # skewed activity
    items = (n_items * rng.random(n) ** 3.0).astype(np.int64)        # skewed popularity
    dup = rng.random(n) < 0.003
    users[dup], items[dup] = users[np.roll(dup, -1)], items[np.roll(dup, -1)]
    days = rng.integers(12_800, 17_800, n)                           # 2005..2018, day resolution
    ratings = rng.choice([1.0, 2.0, 3.0, 4.0, 5.0], n, p=[0.06, 0.05, 0.09, 0.2, 0.6])
    lengths = np.clip(rng.lognormal(4.3, 0.7, n).astype(np.int64), 3, 600)
    text_idx = rng.integers(0, len(words), int(lengths.sum()))
    ends = np.cumsum(lengths)
    no_text = rng.random(n) < 0.05
    malformed = rng.random(n) < 0.0002
    opener = gzip.open if reviews.suffix == ".gz" else open
    with opener(reviews, "wb") as fh:
        lines = []
        for k in range(n):
            rec = {"overall": float(ratings[k]), "vote": f"{k % 1500:,}", "verified": bool(k % 3),
                   "reviewTime": "01 1, 2015", "reviewerID": f"A{users[k]:013d}", "asin": f"B{items[k]:09d}",
                   "style": {"Format:": " Paperback"}, "reviewerName": "A reader",
                   "summary": " ".join(words[text_idx[ends[k] - 3:ends[k]]]), "unixReviewTime": int(days[k]) * 86_400}
            if not no_text[k]:
                rec["reviewText"] = " ".join(words[text_idx[ends[k] - lengths[k]:ends[k]]])
            line = orjson.dumps(rec)
            lines.append(line[: len(line) // 2] if malformed[k] else line)
            if len(lines) == 65_536:
                fh.write(b"\n".join(lines) + b"\n")
                lines = []
        fh.write(b"\n".join(lines) + b"\n" if lines else b"")
    meta = reviews.with_name("meta_" + reviews.name)
    cats = [["Books", "Literature & Fiction", w] for w in words[:40]]
    with opener(meta, "wb") as fh:
        for item in range(n_items):
            if item % 97 == 5:                                         # ~1% of reviewed items have no meta
                continue
            rec = {"category": cats[item % 40], "description": [" ".join(words[rng.integers(0, len(words), 40)])],
                   "title": " ".join(words[rng.integers(0, len(words), 4)]).title(), "also_buy": [], "brand": "",
                   "feature": [], "rank": "1,234 in Books (", "main_cat": "Books", "price": "$9.99",
                   "asin": f"B{item:09d}"}
            fh.write(orjson.dumps(rec) + b"\n")
    return meta


def generate_sequences(path: Path, n: int, seed: int = 0) -> int:
    """Write a SASRec-style sequences file of ``n`` interactions; returns its number of users.

    Shaped like S3-Rec's Amazon Beauty (198,502 interactions, 22,363 users, 12,101 items): user
    lengths 5 + geometric (mean ~9), item popularity Zipf-like, no item twice in a line."""
    rng = np.random.default_rng(seed)
    n_items = max(n // 16, 50)
    drawn = np.minimum(4 + rng.geometric(1 / 5, n // 4 + 10), 200)       # mean ~9: n // 4 are plenty
    lengths = drawn[:int(np.searchsorted(np.cumsum(drawn), n)) + 1].tolist()
    lengths[-1] -= sum(lengths) - n                                       # exactly n interactions
    cdf = np.cumsum(1.0 / (np.arange(n_items) + 10.0) ** 0.9)
    draws = np.searchsorted(cdf / cdf[-1], rng.random(3 * n)) + 1
    lines, at = [], 0
    for user, length in enumerate(lengths, start=1):
        items = list(dict.fromkeys(draws[at:at + 3 * length].tolist()))[:length]   # distinct, in draw order
        at += 3 * length
        lines.append(f"{user} {' '.join(map(str, items))}\n")
    path.write_text("".join(lines))
    return len(lengths)


def run_prepare(reviews: Path, meta: Path | None, out: Path, src: Path | None = None, source: str = "amazon2018",
                extra: list[str] | None = None) -> dict:
    """Run the CLI in a fresh process under /usr/bin/time (with ``src`` first on the path if given);
    returns seconds, CPU seconds, peak RSS, the load before and after, and the manifest."""
    cmd = [sys.executable, "-m", "reczero.cli", "-q", "data", "prepare", "--source", source,
           "--input", str(reviews), *(["--meta", str(meta)] if meta is not None else []), *(extra or []),
           "--out", str(out), "--overwrite"]
    stats = out.with_suffix(".time")
    env = {**os.environ, "TQDM_DISABLE": "1"}
    if src is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(src), *filter(None, [env.get("PYTHONPATH")])])
    load_before = os.getloadavg()[0]
    start = time.perf_counter()
    subprocess.run(["/usr/bin/time", "-f", "%M %U %S", "-o", str(stats), *cmd], check=True, env=env)
    seconds = time.perf_counter() - start
    manifest = json.loads((out / "manifest.json").read_text())
    rss_kib, user, system = stats.read_text().split()[-3:]
    return {"seconds": seconds, "cpu_seconds": float(user) + float(system), "peak_rss_mib": int(rss_kib) / 1024,
            "load": (load_before, os.getloadavg()[0]), "manifest": manifest}


def record(rows: list[dict], results: Path, gz: bool, baseline: Path | None) -> None:
    """Write this run's table into the ``## prepare`` section of RESULTS.md, between the
    ``<!-- prepare:run -->`` markers (the section's notes and the other sections stay as they are)."""
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    compare = f" --baseline-src {baseline}" if baseline else ""
    lines = [MARK,
             f"`python bench/prepare.py --sizes {','.join(dict.fromkeys(str(r['n']) for r in rows))}"
             f"{' --gzip' if gz else ''}{compare}` — {when}, {platform.machine()}, {os.cpu_count()} cores shared with "
             f"other jobs (1-min load average before/after each run in the table), Python {platform.python_version()}. "
             "End to end: `reczero data prepare --source amazon2018` in a fresh process (read + parse + checks + "
             "dedupe + split + histories + Parquet). Peak RSS from `/usr/bin/time`; CPU = user + system seconds of "
             "all its threads (on a loaded machine the wall time mostly measures the other tenants; CPU per "
             "review is the stable figure).", "",
             "| code | reviews | input MiB | kept | wall s | reviews/s (wall) | CPU s | reviews/CPU-s | µs CPU/review "
             "| peak RSS MiB | load before/after |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['code']} | {r['n']:,} | {r['mib']:.0f} | {r['kept']:,} | {r['seconds']:.1f} "
                     f"| {r['n'] / r['seconds']:,.0f} | {r['cpu_seconds']:.1f} | {r['n'] / r['cpu_seconds']:,.0f} "
                     f"| {1e6 * r['cpu_seconds'] / r['n']:.1f} | {r['peak_rss_mib']:.0f} "
                     f"| {r['load'][0]:.1f} / {r['load'][1]:.1f} |")
    lines += ["", "Targets: >= 50,000 reviews/s at 1M, peak RSS <= 3 GiB, cost per review flat in N.", END_MARK]
    write_section(results, SECTION, MARK, END_MARK, "\n".join(lines))


def record_sequences(rows: list[dict], results: Path) -> None:
    """Write this run's table into the section "Implicit sources: prepare speed" (between its markers)."""
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [SEQUENCES_MARK,
             f"`python bench/prepare.py --source sequences --sizes {','.join(str(r['n']) for r in rows)}` — {when}, "
             f"{platform.machine()}, {os.cpu_count()} cores shared with other jobs, Python "
             f"{platform.python_version()}. End to end, in a fresh process: `reczero data prepare --source sequences "
             f"{' '.join(SEQUENCES_ARGS)}` on a generated SASRec-format file shaped like S3-Rec's Amazon Beauty "
             "(read + checks + dedupe + leave-last split + histories + Parquet). CPU = user + system seconds.", "",
             "| interactions | users | input MiB | kept | wall s | interactions/s (wall) | CPU s | peak RSS MiB "
             "| load before/after |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['n']:,} | {r['users']:,} | {r['mib']:.1f} | {r['kept']:,} | {r['seconds']:.1f} "
                     f"| {r['n'] / r['seconds']:,.0f} | {r['cpu_seconds']:.1f} | {r['peak_rss_mib']:.0f} "
                     f"| {r['load'][0]:.1f} / {r['load'][1]:.1f} |")
    lines += ["", "Target (issue 15): a 200k-interaction sequences file prepares in seconds.", SEQUENCES_END]
    write_section(results, SEQUENCES_SECTION, SEQUENCES_MARK, SEQUENCES_END, "\n".join(lines))


def write_section(results: Path, section: str, mark: str, end_mark: str, block: str) -> None:
    """Put ``block`` between ``mark`` and ``end_mark`` in ``section`` of RESULTS.md (the section's
    notes and the other sections stay as they are); a missing section is appended."""
    text = results.read_text() if results.exists() else "# Benchmark results\n\nMeasured with the scripts in `bench/`.\n"
    head, found, rest = text.partition(section)
    if not found:
        text = text.rstrip("\n") + f"\n\n{section}\n\n{block}\n"
    elif mark in rest.split("\n## ")[0]:
        before, _, after = rest.partition(mark)
        text = head + section + before + block + after.partition(end_mark)[2]
    else:                                          # a section without markers: the run goes first
        text = head + section + "\n\n" + block + rest
    results.write_text(text)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--source", default="amazon2018", choices=["amazon2018", "sequences"])
    ap.add_argument("--sizes", default="100000,300000,1000000")
    ap.add_argument("--dir", default="/tmp/reczero-bench-prepare")
    ap.add_argument("--gzip", action="store_true", help="Gzip the dumps (as downloaded).")
    ap.add_argument("--results", default=str(ROOT / "bench" / "RESULTS.md"), help="'' to skip recording.")
    ap.add_argument("--baseline-src", default="", help="Also run this copy of another version's src, side by side.")
    args = ap.parse_args()
    baseline = Path(args.baseline_src).resolve() if args.baseline_src else None
    work = Path(args.dir)
    work.mkdir(parents=True, exist_ok=True)
    if args.source == "sequences":
        bench_sequences([int(s) for s in args.sizes.split(",")], work, args.results)
        return
    rows = []
    for n in (int(s) for s in args.sizes.split(",")):
        reviews = work / f"Books_{n}.json{'.gz' if args.gzip else ''}"
        if not reviews.exists():
            t = time.perf_counter()
            partial = reviews.with_name("partial_" + reviews.name)
            generate(partial, n)
            partial.with_name("meta_" + partial.name).replace(reviews.with_name("meta_" + reviews.name))
            partial.replace(reviews)
            print(f"generated {reviews} in {time.perf_counter() - t:.1f} s", flush=True)
        meta = reviews.with_name("meta_" + reviews.name)
        for code, src in ([("baseline", baseline)] if baseline else []) + [("current", None)]:
            r = run_prepare(reviews, meta, work / f"out_{n}", src)
            counts = r["manifest"]["counts"]
            rows.append({"code": code, "n": n, "mib": reviews.stat().st_size / 2**20, "kept": counts["kept"], **r})
            print(f"{code:>8} {n:>9,} reviews: {r['seconds']:.1f} s, {n / r['seconds']:,.0f} reviews/s, "
                  f"CPU {r['cpu_seconds']:.1f} s, peak RSS {r['peak_rss_mib']:.0f} MiB, load {r['load'][0]:.1f}"
                  f"/{r['load'][1]:.1f}, rejected {counts['rejected']}", flush=True)
    if args.results:
        record(rows, Path(args.results), args.gzip, baseline)


def bench_sequences(sizes: list[int], work: Path, results: str) -> None:
    rows = []
    for n in sizes:
        path = work / f"sequences_{n}.txt"
        t = time.perf_counter()
        users = generate_sequences(path, n)
        print(f"generated {path} ({users:,} users) in {time.perf_counter() - t:.1f} s", flush=True)
        r = run_prepare(path, None, work / f"out_sequences_{n}", source="sequences", extra=SEQUENCES_ARGS)
        counts = r["manifest"]["counts"]
        rows.append({"n": n, "users": users, "mib": path.stat().st_size / 2**20, "kept": counts["kept"], **r})
        print(f"sequences {n:>9,} interactions: {r['seconds']:.1f} s, {n / r['seconds']:,.0f} interactions/s, "
              f"CPU {r['cpu_seconds']:.1f} s, peak RSS {r['peak_rss_mib']:.0f} MiB, rejected {counts['rejected']}",
              flush=True)
    if results:
        record_sequences(rows, Path(results))


if __name__ == "__main__":
    main()
