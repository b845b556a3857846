"""RecWorld as a raw dump in a real format (Amazon 2018, Amazon 2023, Yelp), for loaders and benchmarks.

What this module chose, and why:

* **The real field names, types and time units**, one JSON object per line, keys in the order of
  the published dumps: Amazon 2018 ``overall`` (float) and ``unixReviewTime`` (seconds) plus the
  ``reviewTime`` string; Amazon 2023 ``rating`` (float) and ``timestamp`` in milliseconds; Yelp
  ``stars`` (float) and ``date`` as "YYYY-MM-DD HH:MM:SS" (UTC). Fields the world has no value for
  carry the dumps' usual empty value ("" / [] / null / 0), chosen so that no reader turns them into
  attributes: ``data prepare`` on the export gives back exactly the world's interactions and items
  (Yelp has no item description or review summary; its reader builds its own description).
* **The meta file beside the reviews**, named as in the dumps: ``meta_<name>`` for Amazon,
  ``review`` → ``business`` in the name for Yelp (see :func:`meta_path`).
* **gzip when the name ends in .gz**, at level 6 with a zero mtime and no file name in the header,
  so the same seed gives byte-identical files. Lines are serialised with ``orjson`` in batches.
* Whole stars only: none of these formats holds half stars, so ``--half-stars`` is refused.
"""

from __future__ import annotations

import gzip
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

import numpy as np
import orjson

from reczero.config import ConfigError

log = logging.getLogger(__name__)

FORMATS = ("amazon2018", "amazon2023", "yelp")
BATCH = 65_536


def meta_path(reviews: Path, fmt: str) -> Path:
    """Where the item (meta / business) file of a review dump goes."""
    if fmt == "yelp":
        name = reviews.name.replace("review", "business") if "review" in reviews.name else f"business_{reviews.name}"
        return reviews.with_name(name)
    return reviews.with_name(f"meta_{reviews.name}")


@contextmanager
def _open(path: Path) -> Iterator[IO[bytes]]:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".gz":
        with open(path, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, compresslevel=6, mtime=0) as fh:
            yield fh
    else:
        with open(path, "wb") as fh:
            yield fh


def _write(path: Path, records: Iterator[list[dict]], total: int) -> int:
    from tqdm import tqdm

    n = 0
    with _open(path) as fh, tqdm(total=total, unit="rec", desc=path.name, disable=None, leave=False) as bar:
        for batch in records:
            fh.write(b"\n".join(map(orjson.dumps, batch)) + b"\n")
            n += len(batch)
            bar.update(len(batch))
    return n


def export_raw(world, fmt: str, reviews: Path) -> tuple[Path, Path]:
    """Write ``world`` (a :class:`reczero.data.recworld.World`) as a ``fmt`` dump; returns (reviews, meta)."""
    if fmt not in FORMATS:
        raise ConfigError(f"raw_format: {fmt!r} is not one of {', '.join(FORMATS)}")
    if world.params.half_stars:
        raise ConfigError(f"--half-stars cannot be exported as {fmt}: its ratings are whole stars")
    reviews = Path(reviews)
    meta = meta_path(reviews, fmt)
    n = _write(reviews, _review_batches(world, fmt), len(world.user))
    m = _write(meta, _meta_batches(world, fmt), world.params.items)
    log.info("raw %s export: %d reviews -> %s, %d items -> %s", fmt, n, reviews, m, meta)
    return reviews, meta


def _review_batches(world, fmt: str) -> Iterator[list[dict]]:
    users = world.user_ids.to_pylist()
    items = world.item_ids.to_pylist()
    days = world.timestamp // 86400
    day_text = {d: np.datetime64(int(d), "D").astype(object).strftime("%m %d, %Y").replace(" 0", " ")
                for d in np.unique(days).tolist()}
    for lo in range(0, len(world.user), BATCH):
        hi = min(lo + BATCH, len(world.user))
        u = [users[k] for k in world.user[lo:hi].tolist()]
        i = [items[k] for k in world.item[lo:hi].tolist()]
        r = world.rating[lo:hi].tolist()
        t = world.timestamp[lo:hi].tolist()
        text = world.review.slice(lo, hi - lo).to_pylist()
        summary = world.summary.slice(lo, hi - lo).to_pylist()
        if fmt == "amazon2018":
            d = [day_text[x] for x in days[lo:hi].tolist()]
            yield [{"overall": r[k], "verified": True, "reviewTime": d[k], "reviewerID": u[k], "asin": i[k],
                    "reviewerName": f"Reader {u[k]}", "reviewText": text[k], "summary": summary[k],
                    "unixReviewTime": t[k]} for k in range(hi - lo)]
        elif fmt == "amazon2023":
            yield [{"rating": r[k], "title": summary[k], "text": text[k], "images": [], "asin": i[k],
                    "parent_asin": i[k], "user_id": u[k], "timestamp": t[k] * 1000, "helpful_vote": 0,
                    "verified_purchase": True} for k in range(hi - lo)]
        else:
            dates = np.char.replace(np.datetime_as_string(world.timestamp[lo:hi].astype("datetime64[s]")), "T", " ").tolist()
            yield [{"review_id": f"R{lo + k:012d}", "user_id": u[k], "business_id": i[k], "stars": r[k],
                    "useful": 0, "funny": 0, "cool": 0, "text": text[k], "date": dates[k]} for k in range(hi - lo)]


def _meta_batches(world, fmt: str) -> Iterator[list[dict]]:
    items = world.items_table().to_pylist()
    counts = np.bincount(world.item, minlength=len(items))
    sums = np.bincount(world.item, weights=world.rating, minlength=len(items))
    avg = np.round(np.divide(sums, counts, out=np.zeros_like(sums), where=counts > 0), 1).tolist()
    counts = counts.tolist()
    out = []
    for k, it in enumerate(items):
        if fmt == "amazon2018":
            out.append({"category": it["attributes"], "tech1": "", "description": [it["description"]], "fit": "",
                        "title": it["title"], "also_buy": [], "tech2": "", "brand": "", "feature": [], "rank": "",
                        "also_view": [], "main_cat": "", "similar_item": "", "date": "", "price": "",
                        "asin": it["item_id"], "imageURL": [], "imageURLHighRes": []})
        elif fmt == "amazon2023":
            out.append({"main_category": None, "title": it["title"], "average_rating": avg[k],
                        "rating_number": counts[k], "features": [], "description": [it["description"]],
                        "price": None, "images": [], "videos": [], "store": None, "categories": it["attributes"],
                        "details": {}, "parent_asin": it["item_id"], "bought_together": None})
        else:
            out.append({"business_id": it["item_id"], "name": it["title"], "address": f"{k + 1} Main Street",
                        "city": "Recville", "state": "RW", "postal_code": f"{10000 + k % 90000:05d}",
                        "latitude": 0.0, "longitude": 0.0, "stars": round(avg[k] * 2) / 2,
                        "review_count": counts[k], "is_open": 1, "attributes": None,
                        "categories": ", ".join(it["attributes"]), "hours": None})
        if len(out) == BATCH:
            yield out
            out = []
    if out:
        yield out
