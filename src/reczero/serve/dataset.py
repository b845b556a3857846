"""A prepared dataset read once for serving: items by id, each user's and each item's interactions.

What this module chose, and why:

* **Samples of the training shape.** A request becomes a dict of ``schema.SAMPLE_SCHEMA``'s
  fields, which :func:`reczero.prompts.render_prompt` renders exactly as in training and
  evaluation: the user's history window (``history`` entries, the manifest's sample option), the
  item's earlier reviews by others (``item_history``), review snippets cut to ``snippet_chars`` (the
  review, else its summary, as ``data prepare`` cuts them), and the counts and averages.
* **"Now" is everything the dataset holds**: a known user's history is all of their interactions
  (every split), most recent last. A pair the user already rated is predicted as if for the first
  time: that interaction is left out of the user's history and of the item's reviews, so the
  answer is never in the prompt.
* **A user the dataset has never seen** sends their history (items by id or by text, with ratings):
  the same sample shape, the averages computed from what was sent. An item it has never seen comes
  as text (title, attributes, description) with no reviews and no average.
* Held in memory as Arrow columns sorted by time, with one numpy ordering by user and one by item
  (two ``argsort``\\s at start); a request touches only its own user's and item's rows.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from reczero.data import schema
from reczero.errors import DataError
from reczero.serve.errors import InvalidValue, NotFound

log = logging.getLogger(__name__)


def _mean(values: Sequence[float]) -> float | None:
    kept = [float(v) for v in values if v is not None and not math.isnan(v)]
    return sum(kept) / len(kept) if kept else None


class DatasetIndex:
    """Users' and items' interactions of a prepared dataset, and its items' text."""

    def __init__(self, data_dir: str | Path) -> None:
        import pyarrow as pa
        import pyarrow.compute as pc
        import pyarrow.parquet as pq

        self.path = Path(data_dir)
        manifest = schema.read_manifest(self.path)
        self.scale = schema.rating_scale(manifest) if manifest.get("rating_scale") else None
        options = manifest.get("options", {})
        self.history = int(options.get("history", 10))
        self.item_history = int(options.get("item_history", 10))
        self.snippet_chars = int(options.get("snippet_chars", 200))
        self.global_mean = schema.train_global_mean(self.path) if self.scale else None
        for name in (schema.ITEMS, schema.INTERACTIONS):
            if not (self.path / name).is_file():
                raise DataError(f"{self.path / name}: missing; serving needs the prepared dataset's {name}")

        items = pq.read_table(self.path / schema.ITEMS, columns=["item_id", "title", "attributes", "description"])
        self.items: dict[str, dict[str, Any]] = {row.pop("item_id"): row for row in items.to_pylist()}

        table = pq.read_table(self.path / schema.INTERACTIONS,
                              columns=["user_id", "item_id", "rating", "timestamp", "review", "summary"])
        table = table.take(pc.sort_indices(table, [("timestamp", "ascending")]))     # stable: ties keep file order
        review, summary = (pc.utf8_slice_codeunits(table[c], 0, self.snippet_chars) for c in ("review", "summary"))
        self._user_ids = table["user_id"].to_numpy(zero_copy_only=False).astype(object)
        self._item_ids = table["item_id"].to_numpy(zero_copy_only=False).astype(object)
        self._ratings = table["rating"].to_numpy(zero_copy_only=False).astype(np.float64)   # NaN where implicit
        self._timestamps = table["timestamp"].to_numpy()
        self._reviews = pc.coalesce(review, summary).combine_chunks() if table.num_rows else pa.array([], pa.string())
        self._by_user = self._group(self._user_ids)
        self._by_item = self._group(self._item_ids)
        log.info("%s: %d users, %d items, %d interactions", self.path, len(self._by_user), len(self.items), table.num_rows)

    @staticmethod
    def _group(keys: np.ndarray) -> dict[str, np.ndarray]:
        """Row positions of each key, in time order (a stable sort keeps the rows' time order)."""
        if len(keys) == 0:
            return {}
        order = np.argsort(keys, kind="stable")
        sorted_keys = keys[order]
        starts = np.flatnonzero(np.r_[True, sorted_keys[1:] != sorted_keys[:-1]])
        ends = np.r_[starts[1:], len(keys)]
        return {sorted_keys[s]: order[s:e] for s, e in zip(starts, ends, strict=True)}

    # ------------------------------------------------------------------------------------------

    def has_user(self, user_id: str) -> bool:
        return user_id in self._by_user

    def has_item(self, item_id: str) -> bool:
        return item_id in self.items

    def title(self, item_id: str) -> str | None:
        item = self.items.get(item_id)
        return None if item is None else item.get("title")

    def require_user(self, user_id: str) -> np.ndarray:
        rows = self._by_user.get(user_id)
        if rows is None:
            raise NotFound(f"unknown user_id {user_id!r}: not in the dataset {self.path}; send the user's "
                           "'history' instead", param="user_id")
        return rows

    def require_item(self, item_id: str, param: str = "item_id") -> dict[str, Any]:
        item = self.items.get(item_id)
        if item is None:
            raise NotFound(f"unknown {param} {item_id!r}: not in the dataset {self.path}", param=param)
        return item

    def user_items(self, user_id: str) -> list[str]:
        """The item ids of a known user's interactions, oldest first."""
        return [str(i) for i in self._item_ids[self.require_user(user_id)]]

    # ------------------------------------------------------------------------------------------

    def sample(self, *, user_id: str | None = None, history: Sequence[Any] | None = None,
               item_id: str | None = None, item: Any = None) -> dict[str, Any]:
        """A sample of ``SAMPLE_SCHEMA``'s shape (no target rating) for a known or explicit user and item.

        ``history`` holds entries with ``item_id`` or ``title`` (+ ``attributes``), ``rating`` and
        an optional ``review`` (the request's :class:`~reczero.serve.schemas.HistoryEntry`);
        ``item`` has ``title``, ``attributes`` and ``description``.
        """
        if item_id is not None:
            known = self.require_item(item_id)
            title, attributes, description = known["title"], known["attributes"], known["description"]
        else:
            title, attributes, description = item.title, list(item.attributes), item.description
        if user_id is not None:
            rows = self.require_user(user_id)
            rows = rows[self._item_ids[rows] != item_id] if item_id is not None else rows
            ratings = [r for r in self._ratings[rows] if not math.isnan(r)]
            user_history = [self._history_entry(r) for r in rows[-self.history:]] if self.history else []
            user_n = len(rows)
        else:
            user_history = [self._explicit_entry(i, e) for i, e in enumerate(history or [])][-self.history:]
            ratings = [float(e.rating) for e in history or []]
            user_n = len(history or [])
        if item_id is not None:
            irows = self._by_item.get(item_id, np.empty(0, np.int64))
            if user_id is not None:
                irows = irows[self._user_ids[irows] != user_id]
            item_history = [self._review_entry(r) for r in irows[-self.item_history:]] if self.item_history else []
            item_n, item_avg = len(irows), _mean(self._ratings[irows])
        else:
            item_history, item_n, item_avg = [], 0, None
        return {
            "sample_id": f"serve-{user_id or 'history'}-{item_id or 'item'}", "user_id": user_id, "item_id": item_id,
            "rating": None, "timestamp": None, "item_title": title, "item_attributes": list(attributes or []),
            "item_description": description, "user_history": user_history, "item_history": item_history,
            "user_n": user_n, "item_n": item_n, "user_avg": _mean(ratings), "item_avg": item_avg,
        }

    def _history_entry(self, row: int) -> dict[str, Any]:
        item_id = str(self._item_ids[row])
        item = self.items.get(item_id, {})
        return {"item_id": item_id, "title": item.get("title"), "attributes": list(item.get("attributes") or []),
                "rating": float(self._ratings[row]), "review": self._reviews[row].as_py(),
                "timestamp": int(self._timestamps[row])}

    def _review_entry(self, row: int) -> dict[str, Any]:
        return {"user_id": str(self._user_ids[row]), "rating": float(self._ratings[row]),
                "review": self._reviews[row].as_py(), "timestamp": int(self._timestamps[row])}

    def _explicit_entry(self, index: int, entry: Any) -> dict[str, Any]:
        if self.scale is not None and not self.scale.contains(entry.rating):
            raise InvalidValue(f"history[{index}].rating {entry.rating:g} is off the rating scale "
                               f"{self.scale.lo:g}..{self.scale.hi:g}", param=f"history[{index}].rating")
        title, attributes = entry.title, list(entry.attributes)
        if entry.item_id is not None:
            known = self.require_item(entry.item_id, param=f"history[{index}].item_id")
            title, attributes = title or known["title"], attributes or list(known["attributes"] or [])
        review = entry.review[: self.snippet_chars] if entry.review else None
        return {"item_id": entry.item_id, "title": title, "attributes": attributes, "rating": float(entry.rating),
                "review": review, "timestamp": None}
