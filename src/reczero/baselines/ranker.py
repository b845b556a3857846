"""The ranking-baseline contract: ``fit(train_rows, valid_rows=None) -> self``, ``score(histories)``.

What this module chose, and why:

* One small base class, as :class:`~reczero.baselines.rating.Baseline` is for ratings, kept apart
  from it: a ranker scores every catalog item for a history of item ids, a rating baseline one
  number per (user, item) pair; they share nothing but the ``name``/``HPARAMS`` convention.
* Rows are those of :func:`reczero.rankings.load_ranking_rows` (with ``timestamps=True`` for
  ``fit``). The catalog is :meth:`ItemCatalog.from_rows` of the training rows, so the items a
  ranker can recommend are exactly the items the evaluator ranks.
* **Training sequences** (:func:`training_sequences`): each user's train targets in time order,
  preceded by the history window of the user's first train row (so interactions kept out of the
  targets by ``--min-history`` are still learnt from). A history entry of a train row is strictly
  older than a train target, so no valid or test target can enter training.
* ``score(histories)`` takes item ids, oldest first, and ignores ids unknown to the catalog: a
  deployed ranker meets new items in histories and must not fail on them.
* ``save(dir)`` writes ``ranker.json`` (method, hyper-parameters, seed), ``items.json`` (the
  catalog) and the method's state; ``Ranker.load(dir)`` rebuilds the fitted ranker from them
  alone (the serving path: :func:`reczero.baselines.load_ranker`).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from reczero.errors import DataError, ReczeroError
from reczero.rankings import ItemCatalog, list_values

log = logging.getLogger(__name__)

STATE = "ranker.json"
ITEMS = "items.json"
TRAIN_COLUMNS = ("user_id", "item_id", "timestamp", "history", "history_timestamps")


def training_sequences(rows, catalog: ItemCatalog) -> list[np.ndarray]:
    """Each user's training interactions as catalog indices in time order (one array per user,
    users in order of first appearance). ``rows`` are train rows read with ``timestamps=True``.

    The sequence is the user's train targets in time order, preceded by the history window of the
    user's first train row (interactions before the first target, e.g. those ``--min-history``
    kept out of the targets), deduplicated by (item, timestamp). Vectorised: the other rows'
    histories repeat the targets and are never expanded."""
    import pandas as pd

    items, lengths = list_values(rows["history"])
    times, time_lengths = list_values(rows["history_timestamps"])
    if not np.array_equal(lengths, time_lengths):
        raise ReczeroError("training rows: history and history_timestamps differ in length")
    n = len(rows)
    user, _ = pd.factorize(rows["user_id"])                            # users in order of first appearance
    stamp = rows["timestamp"].to_numpy(dtype=np.int64)
    order = np.lexsort((np.arange(n), stamp, user))
    first = order[np.flatnonzero(np.r_[True, user[order][1:] != user[order][:-1]])]   # each user's first row
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    k = lengths[first]
    entry = np.repeat(starts[first] - np.concatenate([[0], np.cumsum(k)[:-1]]), k) + np.arange(k.sum())
    events = pd.DataFrame({
        "user": np.concatenate([np.repeat(user[first], k), user]),
        "time": np.concatenate([times.take(entry).to_numpy(zero_copy_only=False).astype(np.int64), stamp]),
        "order": np.concatenate([np.arange(k.sum()) - n - k.sum(), np.arange(n)]),   # history before targets
        "item": np.concatenate([catalog.index(items.take(entry)), catalog.index(list(rows["item_id"]))]),
    })
    if (events["item"] < 0).any():
        raise ReczeroError("training_sequences: an item is missing from the catalog (build it from the same rows)")
    events = events.sort_values(["user", "time", "order"], kind="stable").drop_duplicates(["user", "item", "time"])
    counts = np.bincount(events["user"].to_numpy(), minlength=user.max() + 1)
    return np.split(events["item"].to_numpy(), np.cumsum(counts)[:-1])


def check_rows(rows, columns: tuple[str, ...], what: str) -> None:
    missing = [c for c in columns if c not in rows.columns]
    if missing:
        raise ReczeroError(f"{what}: missing column(s) {', '.join(missing)} (read the split with "
                           "reczero.rankings.load_ranking_rows(..., timestamps=True))")


class Ranker:
    """Base of every ranking baseline. ``HPARAMS`` lists the hyper-parameters a subclass accepts;
    subclasses implement ``_fit``, ``_score``, ``_save`` and ``_load``."""

    name = ""
    HPARAMS: tuple[str, ...] = ()
    uses_valid = False        # True: fit() stops early on the validation rows

    def __init__(self, *, seed: int = 0, mask_history: bool = True) -> None:
        self.seed = seed
        self.mask_history = mask_history          # how early stopping ranks the validation split
        self.catalog: ItemCatalog | None = None
        self.history_: list[dict[str, Any]] = []  # per-epoch log of iterative methods

    # -- the contract ---------------------------------------------------------------------------

    def fit(self, train_rows, valid_rows=None) -> Ranker:
        check_rows(train_rows, TRAIN_COLUMNS, f"{self.name} training rows")
        if len(train_rows) == 0:
            raise ReczeroError(f"{self.name}: the training rows are empty")
        if valid_rows is not None and len(valid_rows) == 0:
            valid_rows = None
        self.catalog = ItemCatalog.from_rows(train_rows)
        self._fit(training_sequences(train_rows, self.catalog), valid_rows)
        return self

    def score(self, histories) -> np.ndarray:
        """Scores of every catalog item, ``float32 (len(histories), len(catalog))``; higher = better."""
        if self.catalog is None:
            raise ReczeroError(f"{self.name}: call fit() or load() before score()")
        encoded = [idx[idx >= 0] for idx in (self.catalog.index(list(h)) for h in histories)]
        scores = np.asarray(self._score(encoded), dtype=np.float32)
        if scores.shape != (len(histories), len(self.catalog)):
            raise AssertionError(f"{self.name}._score returned {scores.shape}")
        return scores

    def save(self, directory: str | Path) -> Path:
        if self.catalog is None:
            raise ReczeroError(f"{self.name}: nothing to save before fit()")
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        self.catalog.save(out / ITEMS)
        self._save(out)
        state = {"method": self.name, "hparams": self.hparams(), "seed": self.seed,
                 "mask_history": self.mask_history, "n_items": len(self.catalog)}
        (out / STATE).write_text(json.dumps(state, indent=2) + "\n")      # last: its presence = complete
        return out

    @classmethod
    def load(cls, directory: str | Path) -> Ranker:
        path = Path(directory) / STATE
        if not path.is_file():
            raise DataError(f"{directory}: no {STATE} (expected RUN/model of `reczero baseline --method {cls.name}`)")
        state = json.loads(path.read_text())
        if state.get("method") != cls.name:
            raise DataError(f"{path}: holds a {state.get('method')!r} ranker, not {cls.name!r}")
        ranker = cls(seed=state["seed"], mask_history=state["mask_history"], **state["hparams"])
        ranker.catalog = ItemCatalog.load(Path(directory) / ITEMS)
        if len(ranker.catalog) != state["n_items"]:
            raise DataError(f"{directory}: {ITEMS} holds {len(ranker.catalog)} items, {STATE} says {state['n_items']}")
        ranker._load(Path(directory))
        return ranker

    def hparams(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.HPARAMS}

    # -- for subclasses -------------------------------------------------------------------------

    def _fit(self, sequences: list[np.ndarray], valid_rows) -> None:
        raise NotImplementedError

    def _score(self, histories: list[np.ndarray]) -> np.ndarray:
        raise NotImplementedError

    def _save(self, directory: Path) -> None:
        raise NotImplementedError

    def _load(self, directory: Path) -> None:
        raise NotImplementedError

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in self.hparams().items())
        return f"{type(self).__name__}({params})"
