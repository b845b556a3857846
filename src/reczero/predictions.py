"""The one writer of results: ``predictions.parquet`` and the ``metrics.json`` computed from it.

Every method (model evaluation, every baseline) hands its predictions to :func:`write_results`, so
the report can treat them all alike and ``metrics.json`` always agrees exactly with the file
beside it: the metrics are computed from the very Arrow table that is written (float64 values
round-trip through Parquet unchanged), never from a second copy.

What this module chose, and why:

* **Honesty rule** (DESIGN.md): a prediction the method could not make (an unparsable completion)
  has ``parsed=False`` and must name its ``fallback``; :func:`fallback_prediction` is that fallback
  (user average, else item average, else the training global mean). It is scored like any other
  prediction and counted in ``parse_failure_rate``; it is never scored as correct. A method may
  also use a fallback for a prediction it *did* make (a baseline meeting an unseen user): then
  ``parsed=True`` and ``fallback`` says which one.
* Bad frames are refused, not repaired: missing columns, NaN or infinite values, duplicate
  ``sample_id``s and failures without a fallback raise :class:`~reczero.errors.ReczeroError`.
* Writes are atomic (``reczero.io.atomic_write``: temp file + rename); ``metrics.json`` is written last, so its presence means
  the pair is complete.
* ``mae_by_history`` buckets the user's history length ``user_n`` as 0, 1-2, 3-5, 6-10, >10, since
  cold users are where prompt-only and collaborative methods differ most.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from reczero import metrics as M
from reczero.errors import DataError, ReczeroError
from reczero.io import atomic_write, atomic_write_text

PREDICTIONS = "predictions.parquet"
METRICS = "metrics.json"
REQUIRED = ("sample_id", "user_id", "item_id", "rating", "prediction", "parsed", "user_n")
OPTIONAL = ("fallback", "completion")
HISTORY_BUCKETS = (("0", 0, 0), ("1-2", 1, 2), ("3-5", 3, 5), ("6-10", 6, 10), (">10", 11, None))


def predictions_schema():
    import pyarrow as pa

    return pa.schema([
        ("sample_id", pa.string()), ("user_id", pa.string()), ("item_id", pa.string()),
        ("rating", pa.float64()), ("prediction", pa.float64()), ("parsed", pa.bool_()),
        ("fallback", pa.string()), ("completion", pa.string()), ("user_n", pa.int64()),
    ])


def _is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def fallback_prediction(row: Any, global_mean: float) -> tuple[float, str]:
    """The stated fallback for a prediction that could not be made: ``(value, name)``.

    The user's average rating when the user has history, else the item's average, else the
    training global mean (``schema.train_global_mean``). ``row`` is any mapping with ``user_avg``
    and ``item_avg`` (None or NaN when unknown).

    >>> fallback_prediction({"user_avg": None, "item_avg": 3.5}, 3.6)
    (3.5, 'item_avg')
    """
    for name in ("user_avg", "item_avg"):
        value = row.get(name) if hasattr(row, "get") else row[name]
        if not _is_missing(value):
            return float(value), name
    return float(global_mean), "global_mean"


def _table(predictions) -> Any:
    """Validate ``predictions`` (a DataFrame) and convert it to an Arrow table of the schema."""
    import pandas as pd
    import pyarrow as pa

    missing = [c for c in REQUIRED if c not in predictions.columns]
    if missing:
        raise ReczeroError(f"predictions lack column(s) {', '.join(missing)}; expected {', '.join(REQUIRED + OPTIONAL)}")
    if len(predictions) == 0:
        raise ReczeroError("predictions are empty: nothing to score")
    df = predictions.reset_index(drop=True).copy()
    for col in OPTIONAL:
        if col not in df.columns:
            df[col] = None
    for col in ("rating", "prediction"):
        values = pd.to_numeric(df[col], errors="coerce").to_numpy(dtype=np.float64)
        bad = np.flatnonzero(~np.isfinite(values))
        if bad.size:
            row = df.iloc[bad[0]]
            raise ReczeroError(f"predictions: {bad.size} row(s) have no finite {col!r}, first sample_id "
                               f"{row['sample_id']!r} ({col}={row[col]!r})")
    dup = df["sample_id"].duplicated()
    if dup.any():
        raise ReczeroError(f"predictions: sample_id {df.loc[dup, 'sample_id'].iloc[0]!r} occurs more than once")
    if df["parsed"].isna().any():
        raise ReczeroError("predictions: 'parsed' must be True or False on every row")
    df["parsed"] = df["parsed"].astype(bool)
    unstated = ~df["parsed"] & df["fallback"].isna()
    if unstated.any():
        raise ReczeroError(f"predictions: {int(unstated.sum())} unparsed row(s) name no fallback, first sample_id "
                           f"{df.loc[unstated, 'sample_id'].iloc[0]!r} (the honesty rule: a failure gets a stated fallback)")
    df["fallback"] = df["fallback"].astype(object).where(df["fallback"].notna(), None)
    df["completion"] = df["completion"].astype(object).where(df["completion"].notna(), None)
    schema = predictions_schema()
    try:
        return pa.Table.from_pandas(df[schema.names], schema=schema, preserve_index=False)
    except (pa.ArrowInvalid, pa.ArrowTypeError) as err:
        raise ReczeroError(f"predictions do not fit the schema {schema}: {err}") from err


def _none_if_nan(x: float) -> float | None:
    return None if math.isnan(x) else x


def compute_metrics(table, *, method: str, split: str, bayes: dict | None = None) -> dict[str, Any]:
    """The ``metrics.json`` content of a predictions table (Arrow table or DataFrame)."""
    if not hasattr(table, "column_names"):
        table = _table(table)
    y = table.column("rating").to_numpy()
    p = table.column("prediction").to_numpy()
    parsed = table.column("parsed").to_numpy(zero_copy_only=False).astype(bool)
    user_n = table.column("user_n").to_numpy()
    fallbacks = [f for f in table.column("fallback").to_pylist() if f is not None]
    by_history = []
    for label, lo, hi in HISTORY_BUCKETS:
        mask = (user_n >= lo) & (user_n <= hi if hi is not None else True)
        by_history.append({"bucket": label, "n": int(mask.sum()),
                           "mae": M.mae(y[mask], p[mask]) if mask.any() else None})
    out: dict[str, Any] = {
        "method": method,
        "split": split,
        "n": int(len(y)),
        "mae": M.mae(y, p),
        "rmse": M.rmse(y, p),
        "parse_failure_rate": float(np.mean(~parsed)),
        "mae_parsed_only": M.mae(y[parsed], p[parsed]) if parsed.any() else None,
        "pearson": _none_if_nan(M.pearson(y, p)),
        "pred_std": float(np.std(p)),
        "n_distinct_predictions": int(np.unique(p).size),
        "fallback_counts": {name: fallbacks.count(name) for name in sorted(set(fallbacks))},
        "mae_by_history": by_history,
        "bayes_mae": None,
        "bayes_rmse": None,
    }
    if bayes:
        out["bayes_mae"] = bayes.get("mae")
        out["bayes_rmse"] = bayes.get("rmse")
    return out


def write_results(out_dir: str | Path, predictions, *, method: str, split: str, data_dir: str | Path | None = None,
                  extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Write ``OUT/predictions.parquet`` and ``OUT/metrics.json`` (computed from it); return the metrics.

    ``predictions`` is a DataFrame with columns ``sample_id, user_id, item_id, rating, prediction,
    parsed, user_n`` and optionally ``fallback, completion``. With ``data_dir`` the dataset's
    rating scale and Bayes floor (``manifest["bayes"][split]``, when the world is known) are added.
    ``extra`` keys (the model path, hyper-parameters) are added but may not replace a metric.
    """
    from reczero.data import schema

    table = _table(predictions)
    manifest = schema.read_manifest(data_dir) if data_dir is not None else {}
    bayes = (manifest.get("bayes") or {}).get(split)
    result = compute_metrics(table, method=method, split=split, bayes=bayes)
    if manifest:
        result["rating_scale"] = manifest["rating_scale"]
        result["data"] = str(data_dir)
    return write_result_files(out_dir, PREDICTIONS, table, result, extra=extra)


def write_result_files(out_dir: str | Path, name: str, table, result: dict[str, Any], *,
                       extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Write ``OUT/<name>`` (the Arrow ``table``) and ``OUT/metrics.json`` (``result``); return the metrics.

    The file pair of every result, rating (:func:`write_results`) or ranking
    (:func:`reczero.rankings.write_rankings`): ``result`` holds the metrics computed from
    ``table``; ``extra`` keys (the model path, hyper-parameters) are added but may not replace a
    metric; ``created`` is stamped. The old ``metrics.json`` goes first and the new one is written
    last, so metrics never describe an older table.
    """
    import pyarrow.parquet as pq

    out = Path(out_dir)
    clash = sorted(set(extra or {}) & set(result))
    if clash:
        raise ReczeroError(f"{out / METRICS}: extra keys {clash} would overwrite computed metrics")
    result.update(extra or {})
    result["created"] = datetime.now(UTC).isoformat(timespec="seconds")

    out.mkdir(parents=True, exist_ok=True)
    (out / METRICS).unlink(missing_ok=True)
    atomic_write(out / name, lambda tmp: pq.write_table(table, tmp))
    text = json.dumps(result, indent=2, allow_nan=False) + "\n"
    atomic_write_text(out / METRICS, text)
    return result


def read_metrics(out_dir: str | Path, name: str, expected: str) -> dict[str, Any]:
    """``OUT/metrics.json`` of a directory written by :func:`write_result_files` with table ``name``.

    A missing file of the pair, or metrics that are not JSON, is a :class:`DataError` naming the
    file (``expected`` says what should have written the directory).
    """
    out = Path(out_dir)
    for file in (METRICS, name):
        if not (out / file).is_file():
            raise DataError(f"{out}: no {file} (expected {expected})")
    try:
        return json.loads((out / METRICS).read_text())
    except json.JSONDecodeError as err:
        raise DataError(f"{out / METRICS}: not valid JSON ({err})") from err


@dataclass
class Results:
    """One method's results on one split, as written by :func:`write_results`."""

    dir: Path
    metrics: dict[str, Any]
    predictions: Any      # pandas DataFrame


def read_results(out_dir: str | Path) -> Results:
    """Read ``metrics.json`` and ``predictions.parquet`` from a directory written by :func:`write_results`."""
    import pandas as pd

    out = Path(out_dir)
    metrics = read_metrics(out, PREDICTIONS, "the output of `reczero eval` or `reczero baseline`")
    return Results(out, metrics, pd.read_parquet(out / PREDICTIONS))
