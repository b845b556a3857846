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

**Ranking (next-item) baselines** (:data:`RANKERS`: ``popularity``, ``sasrec``, ``itemknn``, on the
:class:`~reczero.baselines.ranker.Ranker` contract) go through :func:`run_ranking_baseline`
instead: fit on the train split's rows (never its ratings, so implicit datasets work), stop early
on ``valid`` where the method does, save the fitted state under ``RUN/model/`` and write
``RUN/eval/<split>/{rankings.parquet, metrics.json}`` through :func:`reczero.rankings.write_rankings`
(full ranking, history masked unless ``--no-mask-history``). :func:`load_ranker` loads a fitted
ranker back from a run (what ``reczero eval`` and ``reczero serve`` use).
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

from reczero.baselines.bias import BiasBaseline
from reczero.baselines.itemknn import ItemKNN
from reczero.baselines.mf import BiasedMF
from reczero.baselines.popularity import Popularity
from reczero.baselines.ranker import Ranker
from reczero.baselines.rating import Baseline
from reczero.baselines.sasrec import SASRec
from reczero.baselines.simple import AverageBlend, GlobalMean, GlobalMedian, ItemAverage, UserAverage
from reczero.baselines.svdpp import SVDpp
from reczero.config import BaselineConfig, ConfigError, EvalConfig, save_config
from reczero.errors import DataError

log = logging.getLogger(__name__)

BASELINES: dict[str, type[Baseline]] = {
    cls.name: cls for cls in (GlobalMean, GlobalMedian, UserAverage, ItemAverage, AverageBlend,
                              BiasBaseline, BiasedMF, SVDpp)
}
RANKERS: dict[str, type[Ranker]] = {cls.name: cls for cls in (Popularity, SASRec, ItemKNN)}
SAMPLE_COLUMNS = ["sample_id", "user_id", "item_id", "rating", "user_n", "user_avg", "item_avg"]
CLI_HPARAMS = ("factors", "epochs", "lr", "reg", "patience", "batch_size", "hidden", "blocks", "heads", "dropout",
               "max_len", "neighbors", "shrink")

__all__ = ["BASELINES", "RANKERS", "Baseline", "Ranker", "load_ranker", "make_baseline", "make_ranker", "run_baseline",
           "rank_ranker_rows", "run_ranking_baseline"]


def make_baseline(method: str, **hparams) -> Baseline:
    """A baseline by its CLI name, e.g. ``make_baseline("mf", factors=64, scale=RatingScale(1, 5))``.

    ``scale`` (a :class:`~reczero.data.schema.RatingScale`) and ``seed`` are accepted by every
    method; other keys must be in the class's ``HPARAMS``.
    """
    return _build(BASELINES, "baseline", method, {"scale", "seed"}, hparams)


def make_ranker(method: str, **hparams) -> Ranker:
    """A ranking baseline by its CLI name, e.g. ``make_ranker("sasrec", hidden=32, seed=1)``.

    ``seed`` and ``mask_history`` are accepted by every ranker; other keys must be in its ``HPARAMS``.
    """
    return _build(RANKERS, "ranking baseline", method, {"seed", "mask_history"}, hparams)


def _build(registry: dict[str, type], kind: str, method: str, common: set[str], hparams: dict):
    """``registry[method](**hparams)``, refusing an unknown method or a key the class does not take."""
    if method not in registry:
        raise ConfigError(f"unknown {kind} {method!r}; expected one of {', '.join(registry)}")
    cls = registry[method]
    unknown = sorted(set(hparams) - set(cls.HPARAMS) - common)
    if unknown:
        raise ConfigError(f"{kind} {method!r} takes no {', '.join(unknown)} (it takes: {', '.join(cls.HPARAMS) or 'none'})")
    return cls(**hparams)


def load_ranker(run_dir: str | Path) -> Ranker:
    """The fitted ranker of a run made by ``reczero baseline --method popularity|sasrec|itemknn``
    (the method is read from ``RUN/config.yaml``, the state from ``RUN/model/``)."""
    method = ranking_method(run_dir)
    if method is None:
        raise DataError(f"{run_dir}: not a ranking baseline run (its config.yaml names none of "
                        f"{', '.join(RANKERS)})")
    return RANKERS[method].load(Path(run_dir) / "model")


def ranking_method(run_dir: str | Path) -> str | None:
    """The ranking method named by ``RUN/config.yaml``, or None (not a run, or not a ranking run)."""
    import yaml

    path = Path(run_dir) / "config.yaml"
    if not path.is_file():
        return None
    try:
        cfg = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise DataError(f"{path}: not valid YAML ({err})") from err
    method = cfg.get("method") if isinstance(cfg, dict) else None
    return method if method in RANKERS else None


def parse_splits(text: str) -> list[str]:
    from reczero.data import schema

    splits = [s.strip() for s in text.split(",") if s.strip()]
    bad = [s for s in splits if s not in schema.SPLITS]
    if not splits or bad:
        raise ConfigError(f"splits: expected a comma-separated subset of {', '.join(schema.SPLITS)}, got {text!r}")
    return splits


def cli_hparams(cfg: BaselineConfig, accepted: tuple[str, ...]) -> dict:
    """The hyper-parameters typed on the command line that the method takes; others are warned about."""
    hparams = {k: getattr(cfg, k) for k in CLI_HPARAMS if getattr(cfg, k) is not None and k in accepted}
    ignored = [k for k in CLI_HPARAMS if getattr(cfg, k) is not None and k not in accepted]
    if ignored:
        log.warning("%s does not use --%s; ignored", cfg.method, ", --".join(k.replace("_", "-") for k in ignored))
    return hparams


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

    if cfg.method in RANKERS:
        return run_ranking_baseline(cfg)
    splits = parse_splits(cfg.splits)
    manifest = schema.require_ratings(cfg.data, f"baseline --method {cfg.method}")
    scale = schema.rating_scale(manifest)
    cls = BASELINES[cfg.method]
    hparams = cli_hparams(cfg, cls.HPARAMS)
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


# ----------------------------------------------------------------------------------------------
# Ranking baselines
# ----------------------------------------------------------------------------------------------


def rank_ranker_rows(ranker: Ranker, rows, *, mask_history: bool = True, top_k: int = 20):
    """:func:`reczero.rankings.rank_rows` of ``rows`` (:func:`~reczero.rankings.load_ranking_rows`)
    by a fitted ranker: each row's history scored against the whole catalogue."""
    from reczero.rankings import rank_rows

    histories = list(rows["history"])
    return rank_rows(lambda idx: ranker.score([histories[i] for i in idx]), rows, ranker.catalog,
                     mask_history=mask_history, top_k=top_k)


def rank_split(ranker: Ranker, data_dir: str | Path, split: str, out_dir: Path, *, method: str,
               mask_history: bool, top_k: int, extra: dict, limit: int | None = None) -> dict | None:
    """Full ranking of one split by a fitted ranker, written by :func:`reczero.rankings.write_rankings`;
    returns the metrics (None when the split is empty)."""
    from reczero.rankings import load_ranking_rows, write_rankings

    rows = load_ranking_rows(data_dir, split)
    if limit is not None:
        rows = rows.iloc[:limit].reset_index(drop=True)
    if len(rows) == 0:
        log.warning("%s: split %s is empty; nothing to rank", data_dir, split)
        return None
    frame = rank_ranker_rows(ranker, rows, mask_history=mask_history, top_k=top_k)
    metrics = write_rankings(out_dir, frame, method=method, split=split, data_dir=data_dir, extra=extra)
    print(f"{method} on {split} (n={metrics['n']}, {metrics['n_items']} items): Hit@10 {metrics['hit@10']:.4f}  "
          f"NDCG@10 {metrics['ndcg@10']:.4f}  MRR {metrics['mrr']:.4f}  -> {out_dir}")
    return metrics


def run_ranking_baseline(cfg: BaselineConfig) -> int:
    """``reczero baseline --method popularity|sasrec|itemknn``: fit on the train split, save the
    ranker under ``RUN/model/``, rank each requested split."""
    from reczero.data import schema
    from reczero.rankings import load_ranking_rows

    splits = parse_splits(cfg.splits)
    schema.read_manifest(cfg.data)
    ranker = make_ranker(cfg.method, seed=cfg.seed, mask_history=cfg.mask_history,
                         **cli_hparams(cfg, RANKERS[cfg.method].HPARAMS))
    out = Path(cfg.out)
    save_config(cfg, out)
    train = load_ranking_rows(cfg.data, "train", timestamps=True)
    valid = None
    if ranker.uses_valid and schema.split_path(cfg.data, "valid").is_file():
        valid = load_ranking_rows(cfg.data, "valid")
    started = time.perf_counter()
    ranker.fit(train, valid)
    fit_seconds = time.perf_counter() - started
    log.info("%r fitted on %d training rows (%d items) in %.2f s", ranker, len(train), len(ranker.catalog), fit_seconds)
    with open(out / "log.jsonl", "w") as fh:
        for entry in ranker.history_ or [{"epoch": 0, "seconds": round(fit_seconds, 3)}]:
            fh.write(json.dumps(entry) + "\n")
    ranker.save(out / "model")
    extra = {"hparams": ranker.hparams(), "seed": cfg.seed, "fit_seconds": round(fit_seconds, 3),
             "n_train": len(train), "early_stopping_split": "valid" if valid is not None and len(valid) else None}
    for split in splits:
        rank_split(ranker, cfg.data, split, out / "eval" / split, method=cfg.method, mask_history=cfg.mask_history,
                   top_k=cfg.top_k, extra=extra)
    return 0


def evaluate_ranking_run(cfg: EvalConfig) -> int:
    """``reczero eval --model RUN`` of a ranking baseline run: load the saved ranker and rank
    ``--split`` again, with the run's ``mask_history`` and ``top_k``."""
    import yaml

    from reczero.data import schema

    run = Path(cfg.model)
    run_cfg = yaml.safe_load((run / "config.yaml").read_text())
    ranker = load_ranker(run)
    out = Path(cfg.out) if cfg.out else run / "eval" / cfg.split
    schema.read_manifest(cfg.data)
    save_config(cfg, out)
    method = cfg.method or run_cfg["method"]
    rank_split(ranker, cfg.data, cfg.split, out, method=method, mask_history=run_cfg.get("mask_history", True),
               top_k=run_cfg.get("top_k", 20), limit=cfg.limit,
               extra={"model": str(run / "model"), "hparams": ranker.hparams(), "seed": ranker.seed, "limit": cfg.limit})
    return 0
