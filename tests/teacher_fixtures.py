"""A small prepared dataset for the teacher tests (``schema.SAMPLE_SCHEMA`` rows + a manifest).

Users have tastes over a handful of genres; an item's rating is the user's mean plus their taste
for its genres, plus noise, rounded to 1..5. Histories and averages use only earlier ratings, as
in a real prepared dataset.
"""

from __future__ import annotations

import random
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from reczero.data import schema

GENRES = ["jazz", "noir", "drama", "comedy", "folk", "space"]


def make_dataset(out: Path, users: int = 12, items: int = 30, per_user: int = 8, seed: int = 0) -> Path:
    rng = random.Random(seed)
    item_attrs = {f"i{j}": rng.sample(GENRES, 2) for j in range(items)}
    titles = {i: f"Title {i}" for i in item_attrs}
    rows, item_seen = [], {i: [] for i in item_attrs}
    t = 1_000
    events = []
    for u in range(users):
        taste = {g: rng.choice([-1.5, -0.7, 0.0, 0.7, 1.5]) for g in GENRES}
        mean = rng.uniform(2.5, 4.0)
        for i in rng.sample(sorted(item_attrs), per_user):
            raw = mean + sum(taste[g] for g in item_attrs[i]) / 2 + rng.gauss(0, 0.5)
            events.append((t + rng.randrange(10_000), f"u{u}", i, float(min(5, max(1, round(raw))))))
    events.sort()
    history: dict[str, list[dict]] = {}
    for ts, u, i, rating in events:
        hist = history.setdefault(u, [])
        prior_i = item_seen[i]
        rows.append({
            "sample_id": schema.sample_id("train", u, i, ts), "user_id": u, "item_id": i, "rating": rating,
            "timestamp": ts, "item_title": titles[i], "item_attributes": item_attrs[i],
            "item_description": f"A {' and '.join(item_attrs[i])} piece.",
            "user_history": hist[-10:], "item_history": prior_i[-10:],
            "user_n": len(hist), "item_n": len(prior_i),
            "user_avg": sum(h["rating"] for h in hist) / len(hist) if hist else None,
            "item_avg": sum(r["rating"] for r in prior_i) / len(prior_i) if prior_i else None,
        })
        hist.append({"item_id": i, "title": titles[i], "attributes": item_attrs[i], "rating": rating,
                     "review": f"{'loved' if rating >= 4 else 'meh'} this {item_attrs[i][0]} one", "timestamp": ts})
        prior_i.append({"user_id": u, "rating": rating, "review": "fine" if rating >= 3 else "dull", "timestamp": ts})
    out.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=schema.SAMPLE_SCHEMA), schema.split_path(out, "train"))
    for split in ("valid", "test"):
        pq.write_table(schema.SAMPLE_SCHEMA.empty_table(), schema.split_path(out, split))
    schema.write_manifest(out, {
        "source": "teacher-test", "rating_scale": schema.RatingScale(1, 5).to_dict(),
        "counts": {"read": len(rows), "kept": len(rows), "rejected": {}, "splits": {"train": len(rows)}},
    })
    return out
