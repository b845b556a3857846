"""Classic baselines, written like model runs so that the report treats them as models.

``make_baseline(method, **hparams)`` builds one (the registry :data:`BASELINES` maps the CLI's
names to classes); :func:`run_baseline` is ``reczero baseline``: it fits on the prepared dataset's
``train.parquet`` targets (``user_id, item_id, rating``), stops iterative methods early on the
``valid`` split, and writes ``RUN/config.yaml``, ``RUN/log.jsonl`` (per-epoch ``train_rmse`` /
``val_mae`` of iterative methods) and ``RUN/eval/<split>/{predictions.parquet, metrics.json}``
through :func:`reczero.predictions.write_results`, the writer every model evaluation uses.

Hyper-parameters left unset on the command line take each method's tuned default (see each
module). Every baseline predicts ``parsed=True`` (it always answers); rows where it had to fall
back (an unseen user or item, a missing average) name the fallback in ``fallback``.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

from reczero.baselines.base import Baseline
from reczero.baselines.bias import BiasBaseline
from reczero.baselines.mf import BiasedMF
from reczero.baselines.simple import AverageBlend, GlobalMean, GlobalMedian, ItemAverage, UserAverage
from reczero.baselines.svdpp import SVDpp
from reczero.config import BaselineConfig, ConfigError, save_config
from reczero.errors import DataError

log = logging.getLogger(__name__)

BASELINES: dict[str, type[Baseline]] = {
    cls.name: cls for cls in (GlobalMean, GlobalMedian, UserAverage, ItemAverage, AverageBlend,
                              BiasBaseline, BiasedMF, SVDpp)
}
SAMPLE_COLUMNS = ["sample_id", "user_id", "item_id", "rating", "user_n", "user_avg", "item_avg"]
CLI_HPARAMS = ("factors", "epochs", "lr", "reg")

__all__ = ["BASELINES", "Baseline", "make_baseline", "run_baseline"]


def make_baseline(method: str, **hparams) -> Baseline:
    """A baseline by its CLI name, e.g. ``make_baseline("mf", factors=64, scale=RatingScale(1, 5))``.

    ``scale`` (a :class:`~reczero.data.schema.RatingScale`) and ``seed`` are accepted by every
    method; other keys must be in the class's ``HPARAMS``.
    """
    if method not in BASELINES:
        raise ConfigError(f"unknown baseline {method!r}; expected one of {', '.join(BASELINES)}")
    cls = BASELINES[method]
    unknown = sorted(set(hparams) - set(cls.HPARAMS) - {"scale", "seed"})
    if unknown:
        raise ConfigError(f"baseline {method!r} takes no {', '.join(unknown)} (it takes: {', '.join(cls.HPARAMS) or 'none'})")
    return cls(**hparams)


def read_split_columns(data_dir: str | Path, split: str, columns: list[str]):
    """Only the named columns of a split (the histories are not needed here)."""
    import pyarrow.parquet as pq

    from reczero.data import schema

    path = schema.split_path(data_dir, split)
    if not path.is_file():
        raise DataError(f"{path}: split file missing")
    names = pq.read_schema(path).names
    missing = [c for c in columns if c not in names]
    if missing:
        raise DataError(f"{path}: missing column(s) {', '.join(missing)} of the prepared-sample schema")
    return pq.read_table(path, columns=columns).to_pandas()


def run_baseline(cfg: BaselineConfig) -> int:
    """``reczero baseline``: fit one baseline and score it on each requested split."""
    import pandas as pd

    from reczero.data import schema
    from reczero.predictions import write_results

    splits = [s.strip() for s in cfg.splits.split(",") if s.strip()]
    bad = [s for s in splits if s not in schema.SPLITS]
    if not splits or bad:
        raise ConfigError(f"splits: expected a comma-separated subset of {', '.join(schema.SPLITS)}, got {cfg.splits!r}")
    manifest = schema.require_ratings(cfg.data, f"baseline --method {cfg.method}")
    scale = schema.rating_scale(manifest)
    cls = BASELINES[cfg.method]
    hparams = {k: getattr(cfg, k) for k in CLI_HPARAMS if getattr(cfg, k) is not None and k in cls.HPARAMS}
    ignored = [k for k in CLI_HPARAMS if getattr(cfg, k) is not None and k not in cls.HPARAMS]
    if ignored:
        log.warning("%s does not use --%s; ignored", cfg.method, ", --".join(ignored))
    if "patience" in cls.HPARAMS:
        hparams["patience"] = cfg.patience
    model = make_baseline(cfg.method, scale=scale, seed=cfg.seed, **hparams)

    out = Path(cfg.out)
    save_config(cfg, out)
    train = read_split_columns(cfg.data, "train", ["user_id", "item_id", "rating"])
    valid = None
    if cfg.method in ("mf", "svdpp") and schema.split_path(cfg.data, "valid").is_file():
        valid = read_split_columns(cfg.data, "valid", ["user_id", "item_id", "rating"])
    started = time.perf_counter()
    model.fit(train, valid)
    fit_seconds = time.perf_counter() - started
    log.info("%r fitted on %d training ratings in %.2f s", model, len(train), fit_seconds)
    if model.history_:
        with open(out / "log.jsonl", "w") as fh:
            for entry in model.history_:
                fh.write(json.dumps(entry) + "\n")

    extra = {"hparams": {k: getattr(model, k) for k in model.HPARAMS}, "seed": cfg.seed,
             "fit_seconds": round(fit_seconds, 3), "n_train": len(train),
             "early_stopping_split": "valid" if valid is not None and len(valid) else None}
    for split in splits:
        df = read_split_columns(cfg.data, split, SAMPLE_COLUMNS)
        if len(df) == 0:
            log.warning("%s: split %s is empty; nothing to score", cfg.data, split)
            continue
        values, fallback = model.predict_with_fallback(df)
        predictions = pd.DataFrame({
            "sample_id": df["sample_id"], "user_id": df["user_id"], "item_id": df["item_id"],
            "rating": df["rating"], "prediction": values, "parsed": True, "fallback": fallback,
            "completion": None, "user_n": df["user_n"],
        })
        metrics = write_results(out / "eval" / split, predictions, method=cfg.method, split=split,
                                data_dir=cfg.data, extra=extra)
        print(f"{cfg.method} on {split} (n={metrics['n']}): MAE {metrics['mae']:.4f}  RMSE {metrics['rmse']:.4f}"
              f"  -> {out / 'eval' / split}")
    return 0
