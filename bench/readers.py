"""Raw-dump reader throughput: lines/s of each source's ``read_interactions`` alone (no prepare).

Generates an N-line review file per format (realistic field sets and text lengths, ~3% bad lines),
plain and gzip, then times one full read of each. Numbers are CPU-bound and single-threaded, the best of
``--repeat`` reads; on a shared machine compare the rows of one run with each other, not across runs.

    python bench/readers.py --lines 200000 [--repeat 3] [--formats amazon2018,yelp] [--dir /tmp/reczero-bench]
"""

from __future__ import annotations

import argparse
import gzip
import importlib
import json
import random
import time
from datetime import UTC, datetime
from pathlib import Path

from reczero.data.sources import RejectLog

WORDS = ("good great fine poor book story plot kettle works broke loved hated value price quality fast "
         "slow again would buy recommend never always the a it is was and but not very").split()


def _text(rng: random.Random, lo: int, hi: int) -> str:
    return " ".join(rng.choices(WORDS, k=rng.randint(lo, hi)))


def _record(fmt: str, rng: random.Random, n: int) -> dict:
    user, item = f"A{rng.randrange(200_000):07d}", f"B{rng.randrange(50_000):09d}"
    rating, t = float(rng.randint(1, 5)), 1_300_000_000 + n * 300
    review, summary = _text(rng, 10, 120), _text(rng, 2, 6)
    if fmt in ("amazon2014", "amazon2018"):
        rec = {"overall": rating, "vote": "1,234", "verified": True, "reviewTime": "05 13, 2014",
               "reviewerID": user, "asin": item, "style": {"Format:": " Paperback"}, "reviewerName": "A reader",
               "reviewText": review, "summary": summary, "unixReviewTime": t}
    elif fmt == "amazon2023":
        rec = {"rating": rating, "title": summary, "text": review, "images": [], "asin": item, "parent_asin": item,
               "user_id": user, "timestamp": t * 1000, "helpful_vote": 0, "verified_purchase": True}
    else:
        rec = {"review_id": f"R{n}", "user_id": user, "business_id": item, "stars": int(rating), "useful": 0,
               "funny": 0, "cool": 0, "text": review, "date": datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M:%S")}
    return rec


def generate(fmt: str, lines: int, path: Path, dirty: bool, seed: int = 0) -> Path:
    rng = random.Random(seed)
    out = bytearray()
    for n in range(lines):
        if dirty and n % 33 == 32:
            out += b'{"broken": \n'
        else:
            out += json.dumps(_record(fmt, rng, n)).encode() + b"\n"
    path.write_bytes(bytes(out))
    gzip_path = path.with_name(path.name + ".gz")
    gzip_path.write_bytes(gzip.compress(bytes(out), compresslevel=6, mtime=0))
    return path


def time_read(fmt: str, path: Path, vectorised: bool, repeat: int) -> tuple[float, float, int, int]:
    """Best wall and CPU seconds of ``repeat`` full reads (on a shared machine the minimum is the
    least disturbed run, and CPU time is what one uncontended core would take)."""
    module = importlib.import_module(f"reczero.data.sources.{fmt}")
    wall = cpu = float("inf")
    for _ in range(repeat):
        rejects = RejectLog(path.with_suffix(".rejects.jsonl"))
        start, start_cpu = time.perf_counter(), time.process_time()
        rows = sum(batch.num_rows for batch in module.read_interactions(path, rejects, vectorised=vectorised))
        wall, cpu = min(wall, time.perf_counter() - start), min(cpu, time.process_time() - start_cpu)
        rejects.close()
    return wall, cpu, rejects.read["interactions"], rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lines", type=int, default=200_000)
    ap.add_argument("--formats", default="amazon2014,amazon2018,amazon2023,yelp")
    ap.add_argument("--repeat", type=int, default=3, help="report the best of this many reads")
    ap.add_argument("--dir", default="/tmp/reczero-bench-readers")
    args = ap.parse_args()
    directory = Path(args.dir)
    directory.mkdir(parents=True, exist_ok=True)
    print("| format | lines | file | path | kept | wall s | lines/s (wall) | CPU s | lines per CPU-s |\n"
          "|---|---|---|---|---:|---:|---:|---:|---:|")
    for fmt in args.formats.split(","):
        for dirty in (False, True):
            plain = generate(fmt, args.lines, directory / f"{fmt}{'-dirty' if dirty else ''}.json", dirty)
            for path in (plain, plain.with_name(plain.name + ".gz")):
                for vectorised in (True, False):
                    wall, cpu, read, kept = time_read(fmt, path, vectorised, args.repeat)
                    print(f"| {fmt} | {'3% bad' if dirty else 'clean'} | {path.suffix} | "
                          f"{'vectorised' if vectorised else 'line loop'} | {kept:,} | {wall:.2f} | "
                          f"{read / wall:,.0f} | {cpu:.2f} | {read / cpu:,.0f} |", flush=True)


if __name__ == "__main__":
    main()
