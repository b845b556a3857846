"""The item-vector table: every catalog item read by the model, in batches, saved with the run.

What this module chose, and why:

* **Which items**: the catalog of :class:`reczero.rankings.ItemCatalog` (every item known at
  training time), in its order, so row ``j`` of the table is catalog index ``j`` everywhere
  (rewards, item loss, evaluation).
* **What the model reads**: :func:`reczero.r2ec.prompts.item_prompt` of each item, with title and
  description from ``items.parquet`` and the average rating and number of ratings of the **train
  split's** interactions only (no later ratings leak into the item text; implicit datasets show the
  number of interactions instead). Prompts are tokenised once.
* **Batches** are formed from prompts sorted by length (little padding) and written back in catalog
  order.
* **Stamped**: a table records a stamp of the weights it was computed with. During training the
  stamp is the optimiser step (the weights change exactly there), so the trainer recomputes the table
  when its stamp is stale (every ``item_refresh_steps`` steps; the reference only at evaluation).
  Saved with a run as ``RUN/model/item_vectors.pt`` (ids, float32 vectors, stamp = the model files'
  :func:`reczero.evaluate.weights_stamp`); ``reczero eval`` reuses it only while the stamp matches.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from reczero.errors import DataError
from reczero.io import atomic_write

log = logging.getLogger(__name__)

ITEM_VECTORS = "item_vectors.pt"


def item_records(data_dir: str | Path, catalog: Any) -> list[dict[str, Any]]:
    """One record per catalog item (catalog order): ``item_id, title, description, avg_rating,
    n_ratings`` with the statistics of the train split's interactions."""
    import pandas as pd
    import pyarrow.parquet as pq

    from reczero.data import schema

    items = pd.read_parquet(Path(data_dir) / schema.ITEMS, columns=["item_id", "title", "description"])
    items = items.drop_duplicates("item_id").set_index("item_id")
    train = pq.read_table(schema.split_path(data_dir, "train"), columns=["item_id", "rating"]).to_pandas()
    counts = train.groupby("item_id").size()
    rated = train.dropna(subset=["rating"])
    means = rated.groupby("item_id")["rating"].mean()
    n_rated = rated.groupby("item_id").size()
    implicit = len(rated) == 0
    out = []
    for item_id in catalog.ids:
        row = items.loc[item_id] if item_id in items.index else None
        avg = None if implicit or item_id not in means.index else float(means[item_id])
        n = int(counts.get(item_id, 0)) if implicit else int(n_rated.get(item_id, 0))
        out.append({"item_id": item_id, "title": None if row is None else row["title"],
                    "description": None if row is None else row["description"],
                    "avg_rating": avg, "n_ratings": n})
    missing = sum(1 for r in out if r["title"] is None)
    if missing:
        log.warning("%d catalog item(s) have no row in %s; their prompt shows '(untitled)'", missing, schema.ITEMS)
    return out


@dataclass
class ItemTable:
    """Item vectors in catalog order: ``vectors[j]`` belongs to ``ids[j]``."""

    ids: list[str]
    vectors: torch.Tensor          # (N, H) float32, on CPU
    stamp: str

    def save(self, path: str | Path) -> Path:
        data = {"ids": list(self.ids), "vectors": self.vectors.float().cpu(), "stamp": self.stamp}
        return atomic_write(path, lambda tmp: torch.save(data, tmp))

    @classmethod
    def load(cls, path: str | Path) -> ItemTable:
        path = Path(path)
        try:
            data = torch.load(path, map_location="cpu", weights_only=True)
        except (OSError, RuntimeError, EOFError) as err:
            raise DataError(f"{path}: not a readable item-vector table ({err})") from err
        if not isinstance(data, dict) or set(data) != {"ids", "vectors", "stamp"}:
            raise DataError(f"{path}: expected keys ids, vectors, stamp")
        if len(data["ids"]) != data["vectors"].shape[0]:
            raise DataError(f"{path}: {len(data['ids'])} ids for {data['vectors'].shape[0]} vectors")
        return cls(list(data["ids"]), data["vectors"], str(data["stamp"]))


def compute_item_table(r2ec: Any, prompt_ids: list[list[int]], ids: list[str], stamp: str, *,
                       batch_size: int = 64) -> ItemTable:
    """Vectors of every item prompt (token ids, catalog order) with ``r2ec`` (a ``R2ecModel``)."""
    if len(prompt_ids) != len(ids):
        raise ValueError(f"{len(prompt_ids)} item prompts for {len(ids)} ids")
    order = sorted(range(len(prompt_ids)), key=lambda i: len(prompt_ids[i]))
    vectors = r2ec.vectors([prompt_ids[i] for i in order], batch_size=batch_size)
    table = torch.empty_like(vectors)
    table[torch.tensor(order)] = vectors
    if not torch.isfinite(table).all():
        raise FloatingPointError("item vectors hold NaN or inf")
    log.debug("item table: %d vectors of size %d (%d batches)", len(ids), table.shape[1],
              math.ceil(len(ids) / batch_size))
    return ItemTable(list(ids), table, stamp)


def item_prompt_ids(r2ec: Any, records: list[dict[str, Any]], opts: Any) -> list[list[int]]:
    """Token ids of every item's prompt (:func:`reczero.r2ec.prompts.item_prompt`), in record order."""
    from reczero.r2ec.prompts import item_prompt

    return r2ec.tokenize([item_prompt(r, opts, r2ec.tokenizer) for r in records])


def table_stamp(model_path: str | Path, data_dir: str | Path, opts: Any) -> str:
    """What a saved table depends on: the model files (names, sizes, times), the dataset and the
    item-prompt options."""
    import hashlib

    from reczero.evaluate import weights_stamp

    weights = weights_stamp(str(model_path)) or f"hub:{model_path}"
    text = repr((weights, str(Path(data_dir).resolve()), opts.description_words))
    return hashlib.sha1(text.encode()).hexdigest()[:16]


def load_or_compute_table(r2ec: Any, model_path: str | Path, data_dir: str | Path, catalog: Any, opts: Any, *,
                          batch_size: int = 64) -> ItemTable:
    """``MODEL/item_vectors.pt`` when its stamp and ids still match, else computed (and saved there
    when ``model_path`` is a local folder)."""
    stamp = table_stamp(model_path, data_dir, opts)
    path = Path(model_path) / ITEM_VECTORS if Path(model_path).is_dir() else None
    if path is not None and path.is_file():
        table = ItemTable.load(path)
        if table.stamp == stamp and table.ids == list(catalog.ids):
            log.info("item vectors: %s (%d items, up to date)", path, len(table.ids))
            return table
        log.info("item vectors in %s are stale (other weights, data or item prompt): recomputing", path)
    records = item_records(data_dir, catalog)
    table = compute_item_table(r2ec, item_prompt_ids(r2ec, records, opts), list(catalog.ids), stamp,
                               batch_size=batch_size)
    if path is not None:
        table.save(path)
    return table
