"""``popularity``: every user gets the items most often interacted with in training.

What this module chose, and why:

* The count of each catalog item among the training interactions (each user's training sequence,
  see :func:`reczero.baselines.ranker.training_sequences`: every interaction once), the classic
  non-personalised floor of next-item evaluation (RecBole's ``Pop``).
* Equal counts tie; the evaluator ranks a target pessimistically among its ties anyway, and
  ``top_items`` lists tied items in catalog order, so the lists are deterministic.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from reczero.baselines.ranker import Ranker

COUNTS = "counts.npy"


class Popularity(Ranker):
    name = "popularity"
    HPARAMS = ()

    def _fit(self, sequences, valid_rows) -> None:
        flat = np.concatenate(sequences) if sequences else np.empty(0, np.int64)
        self.counts_ = np.bincount(flat, minlength=len(self.catalog)).astype(np.float32)

    def _score(self, histories) -> np.ndarray:
        return np.repeat(self.counts_[None, :], len(histories), axis=0)

    def _save(self, directory: Path) -> None:
        np.save(directory / COUNTS, self.counts_)

    def _load(self, directory: Path) -> None:
        self.counts_ = np.load(directory / COUNTS)
