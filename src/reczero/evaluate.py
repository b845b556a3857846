"""`reczero eval`: batched greedy prediction, honest parsing, resumable, scored like every baseline.

What this module chose, and why:

* **One core, two callers.** :func:`predict_ratings` (render prompts -> :func:`reczero.generation.generate`
  -> :func:`score_completions`) is what the trainers' periodic validation calls too, so the MAE
  logged during training and the one written here are computed the same way.
* **Honest parsing** (DESIGN.md, "Honesty rules"): the rating is read with the rewards' own
  ``parse_rating``; a completion it cannot read is a parse failure, ``parsed=False``, and gets the
  stated fallback (user average, else item average, else training mean), named in ``fallback``.
  It is scored with that fallback, never as correct.
* **Resumable.** Remaining samples are ordered by prompt length (longest first) and generated in
  chunks of :data:`CHUNK_BATCHES` batches; each finished chunk is written atomically to
  ``OUT/partial/chunk-NNNNN.parquet`` (``reczero.io.atomic_write``: temp file + rename, so a kill
  never leaves half a chunk).
  A rerun of the same command skips the sample ids already there; ``OUT/partial/fingerprint.json``
  refuses to mix chunks of a different model (or of the same folder retrained since: its files'
  sizes and times are stamped), split, prompt or generation length. The final
  ``predictions.parquet`` (split order, one row per sample) and ``metrics.json`` are written by
  :func:`reczero.predictions.write_results`, so they agree exactly. ``partial/`` is kept: a rerun
  with a larger ``--limit`` only generates the new samples. :class:`ChunkStore` takes the chunks'
  Arrow schema, so the R2ec eval resumes through the same store (its chunks hold reasoning ids and
  user vectors).
* **Backends.** ``transformers`` (default; CPU or GPU) or ``vllm`` (GPU): vLLM is imported only in
  that branch, with an error naming the ``gpu`` extra when it is missing.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from reczero.config import ConfigError, EvalConfig, PromptOptions, save_config, warn_prompt_mismatch
from reczero.data import schema
from reczero.errors import DataError, ReczeroError
from reczero.io import atomic_write, atomic_write_text

log = logging.getLogger(__name__)

CHUNK_BATCHES = 4                # batches per resumable chunk (a kill loses at most one chunk)
PARTIAL = "partial"
FINGERPRINT = "fingerprint.json"
COLUMNS = ["sample_id", "user_id", "item_id", "rating", "prediction", "parsed", "fallback", "completion", "user_n"]


# ----------------------------------------------------------------------------------------------
# The core: prompts -> completions -> predictions
# ----------------------------------------------------------------------------------------------


def prompt_options(opts: PromptOptions) -> PromptOptions:
    """The PromptOptions part of any config that inherits them (EvalConfig, a training recipe)."""
    return PromptOptions(**{f.name: getattr(opts, f.name) for f in dataclasses.fields(PromptOptions)})


def render_prompts(df, opts: PromptOptions, tokenizer, scale: schema.RatingScale | None = None) -> list[str]:
    """Chat-rendered prompts, one per sample row (token budget enforced by ``render_prompt``).

    ``scale`` must be the dataset's, as in training, so that the system prompt is the same one."""
    from reczero.prompts import render_prompt

    return [render_prompt(sample, opts, tokenizer, scale) for sample in df.to_dict("records")]


def score_completions(df, completions: list[str], scale: schema.RatingScale, template: str, *,
                      global_mean: float):
    """Predictions (:data:`COLUMNS`) for the samples in ``df`` from their completions.

    An unparsable completion gets ``fallback_prediction`` (user avg, else item avg, else
    ``global_mean``), ``parsed=False`` and the fallback's name; a parsed one ``fallback=None``.
    """
    import pandas as pd

    from reczero.predictions import fallback_prediction
    from reczero.rewards import parse_rating

    if len(completions) != len(df):
        raise ValueError(f"{len(completions)} completions for {len(df)} samples")
    rows = []
    for sample, completion in zip(df.to_dict("records"), completions, strict=True):
        value = parse_rating(completion, scale, template)
        fallback = None
        if value is None:
            value, fallback = fallback_prediction(sample, global_mean)
        rows.append({
            "sample_id": sample["sample_id"], "user_id": sample["user_id"], "item_id": sample["item_id"],
            "rating": float(sample["rating"]), "prediction": float(value), "parsed": fallback is None,
            "fallback": fallback, "completion": completion, "user_n": int(sample["user_n"]),
        })
    return pd.DataFrame(rows, columns=COLUMNS)


def predict_ratings(model, tokenizer, df, opts: PromptOptions, scale: schema.RatingScale, *, global_mean: float,
                    batch_size: int = 32, max_new_tokens: int = 256, progress: bool = True):
    """Greedy predictions for every sample of ``df`` (a split DataFrame), in ``df``'s order."""
    from reczero.generation import generate

    prompts = render_prompts(df, opts, tokenizer, scale)
    completions = generate(model, tokenizer, prompts, batch_size=batch_size, max_new_tokens=max_new_tokens,
                           greedy=True, progress=progress)
    return score_completions(df, completions, scale, opts.template, global_mean=global_mean)


# ----------------------------------------------------------------------------------------------
# Resumable chunks
# ----------------------------------------------------------------------------------------------


class ChunkStore:
    """``OUT/partial/chunk-NNNNN.parquet`` files, each written atomically, read back as one frame.

    The rating eval stores predictions in them, the R2ec eval (:mod:`reczero.r2ec.evaluate`) its
    reasoning ids and user vectors: ``schema`` (an Arrow schema with a ``sample_id`` column) says
    which. ``fingerprint.json`` beside the chunks says what evaluation wrote them; another one is
    refused, naming every difference."""

    def __init__(self, directory: Path, fingerprint: dict[str, Any], schema: Any):
        self.dir = directory
        self.schema = schema
        self.dir.mkdir(parents=True, exist_ok=True)
        for stale in self.dir.glob("*.tmp*"):       # a kill mid-write leaves only atomic_write's temp file
            stale.unlink()
        fp_path = self.dir / FINGERPRINT
        if fp_path.is_file():
            old = json.loads(fp_path.read_text())
            diff = {k: (old.get(k), v) for k, v in fingerprint.items() if old.get(k) != v}
            if diff:
                what = "; ".join(f"{k}: {a!r} then, {b!r} now" for k, (a, b) in diff.items())
                raise ReczeroError(f"{self.dir} holds chunks of a different evaluation ({what}); "
                                   f"delete {self.dir} or choose another --out")
        else:
            atomic_write_text(fp_path, json.dumps(fingerprint, indent=2) + "\n")

    def files(self) -> list[Path]:
        return sorted(self.dir.glob("chunk-*.parquet"))

    def read(self):
        import pandas as pd

        frames = [pd.read_parquet(f) for f in self.files()]
        if not frames:
            return self.schema.empty_table().to_pandas()
        return pd.concat(frames, ignore_index=True)[self.schema.names]

    def write(self, frame) -> Path:
        import pyarrow as pa
        import pyarrow.parquet as pq

        files = self.files()
        index = int(files[-1].stem.split("-")[1]) + 1 if files else 1
        table = pa.Table.from_pandas(frame[self.schema.names], schema=self.schema, preserve_index=False)
        return atomic_write(self.dir / f"chunk-{index:05d}.parquet", lambda tmp: pq.write_table(table, str(tmp)))

    def remaining(self, df, where: str | Path):
        """The samples of ``df`` (a split frame, from ``where``) that no chunk holds yet."""
        if df["sample_id"].duplicated().any():
            dup = df.loc[df["sample_id"].duplicated(), "sample_id"].iloc[0]
            raise DataError(f"{where}: sample_id {dup!r} occurs more than once")
        done = set(self.read()["sample_id"])
        return df[~df["sample_id"].isin(done)].reset_index(drop=True)

    def collect(self, df):
        """The chunk rows of ``df``'s samples, one each, in ``df``'s order (rows of other samples,
        from a run with a larger ``--limit``, are left out)."""
        rows = self.read()
        rows = rows[rows["sample_id"].isin(set(df["sample_id"]))]
        if rows["sample_id"].duplicated().any():       # cannot happen through this code; never hide it
            raise ReczeroError(f"{self.dir}: a sample occurs in two chunks; delete {self.dir} and rerun")
        missing = len(df) - len(rows)
        if missing:
            raise ReczeroError(f"{self.dir}: {missing} samples have no chunk row after generation")
        position = {sid: i for i, sid in enumerate(df["sample_id"])}
        return rows.sort_values("sample_id", key=lambda s: s.map(position)).reset_index(drop=True)


def model_fingerprint(model_path: str) -> dict[str, Any]:
    """The model part of a chunk fingerprint: its resolved path (or hub id) and its files' stamp."""
    return {"model": str(Path(model_path).resolve()) if Path(model_path).exists() else model_path,
            "weights": weights_stamp(model_path)}


# ----------------------------------------------------------------------------------------------
# The command
# ----------------------------------------------------------------------------------------------


def resolve_target(cfg: EvalConfig) -> tuple[str, Path, str]:
    """(model to load, output directory, method name) from ``--model``, ``--out``, ``--method``.

    A run directory (one with ``model/``) evaluates ``RUN/model`` into ``RUN/eval/<split>`` by
    default; a plain path or Hugging Face id needs ``--out``. The method defaults to the run's
    (or model's) directory name.
    """
    from reczero.models import resolve_model_path

    given = Path(cfg.model).expanduser()
    model = resolve_model_path(cfg.model)
    is_run = given.is_dir() and Path(model) == given / "model"
    if cfg.out:
        out = Path(cfg.out)
    elif is_run:
        out = given / "eval" / cfg.split
    else:
        raise ConfigError(f"--out is required when --model ({cfg.model}) is a model folder or hub id, not a run directory")
    if cfg.method:
        method = cfg.method
    elif given.exists():            # RUN, or the folder holding a plain model (RUN/model -> RUN)
        folder = given.resolve()
        method = folder.parent.name if folder.name == "model" else folder.name
    else:                           # a hub id: "Qwen/Qwen2.5-7B-Instruct" -> "Qwen2.5-7B-Instruct"
        method = cfg.model.rstrip("/").split("/")[-1]
    return model, out, method


def weights_stamp(model_path: str) -> str | None:
    """A fingerprint of a local model's files (names, sizes, mtimes), so that chunks predicted by a
    model that was since retrained in place are not reused; None for a hub id."""
    import hashlib

    folder = Path(model_path)
    if not folder.is_dir():
        return None
    stat = [(f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in sorted(folder.iterdir())
            if f.suffix in (".safetensors", ".bin", ".json") and f.is_file()]
    return hashlib.sha1(repr(stat).encode()).hexdigest()[:16]


def make_completer(cfg: EvalConfig, model_path: str) -> tuple[Any, Callable[[list[str]], list[str]]]:
    """(tokenizer, prompts -> completions) for the chosen backend."""
    from reczero.generation import generate

    if cfg.backend == "vllm":
        from reczero.generation import generate_vllm, load_vllm
        from reczero.models import load_tokenizer

        llm = load_vllm(model_path, seed=cfg.seed, gpu_memory_utilization=cfg.vllm_gpu_memory_utilization or 0.9)
        tokenizer = load_tokenizer(model_path)
        return tokenizer, lambda prompts: generate_vllm(llm, prompts, max_new_tokens=cfg.max_new_tokens,
                                                        seed=cfg.seed, progress=True)

    from reczero.models import configure_threads, load_model

    model, tokenizer = load_model(model_path)
    configure_threads(cfg.threads, model)
    log.info("loaded %s (%.1fM parameters) on %s", model_path,
             sum(p.numel() for p in model.parameters()) / 1e6, next(model.parameters()).device)
    return tokenizer, lambda prompts: generate(model, tokenizer, prompts, batch_size=cfg.batch_size,
                                               max_new_tokens=cfg.max_new_tokens, greedy=True, progress=True)


def evaluate(cfg: EvalConfig) -> int:
    """Evaluate a model on a split; writes config.yaml, predictions.parquet and metrics.json.

    A ranking baseline run (its config.yaml names popularity, sasrec or itemknn) is ranked again
    from its saved model instead, into rankings.parquet and metrics.json; so is an R2ec run
    (:func:`reczero.r2ec.evaluate.evaluate_r2ec_run`)."""
    from reczero.baselines import evaluate_ranking_run, ranking_method

    if ranking_method(cfg.model) is not None:
        return evaluate_ranking_run(cfg)
    from reczero.r2ec.evaluate import evaluate_r2ec_run, run_recipe

    if run_recipe(cfg.model) is not None:      # an R2ec run: greedy reasoning, full ranking
        return evaluate_r2ec_run(cfg)
    import torch
    from tqdm.auto import tqdm

    from reczero.generation import length_order
    from reczero.predictions import predictions_schema, write_results
    from reczero.rewards import check_format

    torch.manual_seed(cfg.seed)
    model_path, out, method = resolve_target(cfg)
    warn_prompt_mismatch(cfg, cfg.model)
    schema.require_ratings(cfg.data, "eval")
    scale = schema.rating_scale(cfg.data)
    df = schema.load_split(cfg.data, cfg.split, cfg.limit)
    if len(df) == 0:
        raise DataError(f"{schema.split_path(cfg.data, cfg.split)}: no samples to evaluate")
    global_mean = schema.train_global_mean(cfg.data)

    opts = prompt_options(cfg)
    fingerprint = {**model_fingerprint(model_path), "data": str(Path(cfg.data).resolve()),
                   "split": cfg.split, "backend": cfg.backend, "max_new_tokens": cfg.max_new_tokens,
                   "prompt": dataclasses.asdict(opts)}
    store = ChunkStore(out / PARTIAL, fingerprint, predictions_schema())
    save_config(cfg, out)
    todo = store.remaining(df, schema.split_path(cfg.data, cfg.split))
    log.info("%s %s: %d samples, %d already predicted in %s, %d to go", method, cfg.split, len(df),
             len(df) - len(todo), store.dir, len(todo))

    if len(todo):
        tokenizer, complete = make_completer(cfg, model_path)
        prompts = render_prompts(todo, opts, tokenizer, scale)
        lengths = [len(ids) for ids in tokenizer(prompts, add_special_tokens=False)["input_ids"]]
        order = length_order(lengths)
        chunk = cfg.batch_size * CHUNK_BATCHES
        with tqdm(total=len(todo), desc=f"eval {method}", unit="sample") as bar:
            for start in range(0, len(order), chunk):
                idx = order[start:start + chunk]
                completions = complete([prompts[i] for i in idx])
                part = score_completions(todo.iloc[idx], completions, scale, cfg.template, global_mean=global_mean)
                path = store.write(part)
                bar.update(len(idx))
                log.debug("wrote %s (%d samples)", path, len(part))

    predictions = store.collect(df)
    # format compliance of the answers as written (all tags once, in order, rating inside the scale)
    format_rate = float(predictions["completion"].map(lambda t: check_format(t, cfg.template, scale)).mean())
    metrics = write_results(out, predictions, method=method, split=cfg.split, data_dir=cfg.data,
                            extra={"model": model_path, "backend": cfg.backend, "template": cfg.template,
                                   "max_new_tokens": cfg.max_new_tokens, "limit": cfg.limit,
                                   "format_rate": format_rate})
    print(f"{method} on {cfg.split} (n={metrics['n']}): MAE {metrics['mae']:.4f}  RMSE {metrics['rmse']:.4f}  "
          f"parse failures {metrics['parse_failure_rate']:.1%}  format {format_rate:.1%}  -> {out}")
    return 0
