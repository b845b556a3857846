"""Constant and prompt-only baselines: the bars every model has to clear.

* ``global`` predicts the training mean and ``median`` the training median. They are constants:
  under MAE the median beats the mean, and a model that has collapsed to one answer looks
  deceptively good next to neither, so both always belong in a comparison.
* ``user``, ``item`` and ``avg-blend`` use only what the prompt shows: the sample's ``user_avg`` and
  ``item_avg`` (computed from interactions strictly before the target, so there is no leakage). A
  reasoning model that does not beat them has not shown that it reads its prompt.
  ``avg-blend`` is ``user_avg + item_avg - global_mean``: the user's offset from the mean added to
  the item's average. When an average is missing (a user or item without history) each baseline
  falls back as DESIGN.md's honesty rule does (user average, else item average, else the training
  mean) and names the fallback.
"""

from __future__ import annotations

import numpy as np

from reczero.baselines.rating import Baseline, check_frame

PROMPT_COLUMNS = ("user_avg", "item_avg")


class GlobalMean(Baseline):
    name = "global"

    def _fit(self, train, valid) -> None:
        self.value_ = self.global_mean_

    def _predict(self, df):
        return np.full(len(df), self.value_), np.full(len(df), None, dtype=object)


class GlobalMedian(GlobalMean):
    name = "median"

    def _fit(self, train, valid) -> None:
        self.value_ = float(np.median(train["rating"].to_numpy(dtype=np.float64)))


class _PromptAverages(Baseline):
    """Reads ``user_avg`` / ``item_avg`` of each sample; nothing to learn but the global mean."""

    def _fit(self, train, valid) -> None:
        pass

    def _averages(self, df) -> tuple[np.ndarray, np.ndarray]:
        check_frame(df, PROMPT_COLUMNS, f"{self.name} input (the prepared samples)")
        return (df["user_avg"].to_numpy(dtype=np.float64, na_value=np.nan),
                df["item_avg"].to_numpy(dtype=np.float64, na_value=np.nan))

    def _chain(self, first: np.ndarray, first_name: str, second: np.ndarray, second_name: str):
        """``first`` where known, else ``second`` (named), else the global mean (named)."""
        values = np.where(np.isnan(first), second, first)
        fallback = np.full(len(first), None, dtype=object)
        fallback[np.isnan(first)] = second_name
        missing = np.isnan(values)
        fallback[missing] = "global_mean"
        values[missing] = self.global_mean_
        return values, fallback


class UserAverage(_PromptAverages):
    name = "user"

    def _predict(self, df):
        user_avg, item_avg = self._averages(df)
        return self._chain(user_avg, "user_avg", item_avg, "item_avg")


class ItemAverage(_PromptAverages):
    name = "item"

    def _predict(self, df):
        user_avg, item_avg = self._averages(df)
        return self._chain(item_avg, "item_avg", user_avg, "user_avg")


class AverageBlend(_PromptAverages):
    name = "avg-blend"

    def _predict(self, df):
        user_avg, item_avg = self._averages(df)
        blend = user_avg + item_avg - self.global_mean_            # NaN where either is missing
        values, fallback = self._chain(blend, "avg-blend", user_avg, "user_avg")
        # _chain named the first choice's absence "user_avg"; where the user average is missing
        # too, the item average comes before the global mean (the honesty rule's order).
        no_user = np.isnan(blend) & np.isnan(user_avg) & ~np.isnan(item_avg)
        values[no_user] = item_avg[no_user]
        fallback[no_user] = "item_avg"
        return values, fallback
