"""The prepared-dataset contract (DESIGN.md): file names, Arrow schemas and the manifest.

Everything downstream (prompts, baselines, training, evaluation) reads a prepared dataset only
through this module, so `data prepare` (real dumps) and `data synth` (RecWorld) are
interchangeable. Times are Unix **seconds** (int64) whatever the source used.

Split files carry one row per target interaction and are self-contained for prompting: the
target item's text is denormalised into them, and the user/item histories and averages are
computed only from interactions strictly before the target's timestamp (no leakage).

**Implicit datasets** (sources without ratings: ``sequences``, ``recbole`` without a rating column)
use the same files with ``rating``, ``user_avg`` and ``item_avg`` null; their manifest says
``"implicit": true`` and ``"rating_scale": null``. Ranking reads them like any other; a command that
predicts ratings calls :func:`require_ratings` first, so that it refuses them with one clear error
instead of failing on a null deep inside (one check, in one place, named after the command).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa

from reczero.errors import DataError
from reczero.io import atomic_write_text

SCHEMA_VERSION = 1
SPLITS = ("train", "valid", "test")

MANIFEST = "manifest.json"
ITEMS = "items.parquet"
INTERACTIONS = "interactions.parquet"
REJECTS = "rejects.jsonl"

ITEMS_SCHEMA = pa.schema([
    ("item_id", pa.string()),
    ("title", pa.string()),
    ("attributes", pa.list_(pa.string())),      # categories / genres / tags, flattened, deduplicated
    ("description", pa.string()),
])

INTERACTIONS_SCHEMA = pa.schema([
    ("user_id", pa.string()),
    ("item_id", pa.string()),
    ("rating", pa.float64()),
    ("timestamp", pa.int64()),                  # Unix seconds
    ("review", pa.string()),                    # nullable
    ("summary", pa.string()),                   # nullable
])

USER_HISTORY_ENTRY = pa.struct([
    ("item_id", pa.string()),
    ("title", pa.string()),
    ("attributes", pa.list_(pa.string())),
    ("rating", pa.float64()),
    ("review", pa.string()),                    # snippet, <= snippet_chars, nullable
    ("timestamp", pa.int64()),
])

ITEM_HISTORY_ENTRY = pa.struct([
    ("user_id", pa.string()),
    ("rating", pa.float64()),
    ("review", pa.string()),                    # snippet, nullable
    ("timestamp", pa.int64()),
])

SAMPLE_SCHEMA = pa.schema([
    ("sample_id", pa.string()),                 # stable id "<split>-<user_id>-<item_id>-<timestamp>"
    ("user_id", pa.string()),
    ("item_id", pa.string()),
    ("rating", pa.float64()),                   # the target
    ("timestamp", pa.int64()),
    ("item_title", pa.string()),
    ("item_attributes", pa.list_(pa.string())),
    ("item_description", pa.string()),
    ("user_history", pa.list_(USER_HISTORY_ENTRY)),   # most recent last, at most `history`
    ("item_history", pa.list_(ITEM_HISTORY_ENTRY)),   # most recent last, at most `item_history`
    ("user_n", pa.int64()),                     # number of the user's earlier interactions (all, not windowed)
    ("item_n", pa.int64()),                     # number of the item's earlier interactions
    ("user_avg", pa.float64()),                 # mean of those, null when none
    ("item_avg", pa.float64()),
])


def sample_id(split: str, user_id: str, item_id: str, timestamp: int) -> str:
    return f"{split}-{user_id}-{item_id}-{timestamp}"


@dataclass(frozen=True)
class RatingScale:
    lo: float
    hi: float
    step: float = 1.0

    @property
    def span(self) -> float:
        return self.hi - self.lo

    def contains(self, value: float) -> bool:
        return self.lo <= value <= self.hi

    def clip(self, value: float) -> float:
        return min(max(value, self.lo), self.hi)

    def to_dict(self) -> dict[str, float]:
        return {"min": self.lo, "max": self.hi, "step": self.step}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RatingScale:
        return cls(float(d["min"]), float(d["max"]), float(d.get("step", 1.0)))


def read_manifest(data_dir: str | Path) -> dict[str, Any]:
    path = Path(data_dir) / MANIFEST
    if not path.is_file():
        raise DataError(f"{data_dir}: not a prepared dataset (no {MANIFEST}); run `reczero data prepare` or `reczero data synth`")
    manifest = json.loads(path.read_text())
    if manifest.get("schema_version") != SCHEMA_VERSION:
        raise DataError(f"{path}: schema_version {manifest.get('schema_version')} is not {SCHEMA_VERSION}; prepare the data again")
    return manifest


def write_manifest(data_dir: str | Path, manifest: dict[str, Any]) -> Path:
    counts = manifest["counts"]
    if counts["read"] != counts["kept"] + sum(counts["rejected"].values()):
        raise AssertionError(f"manifest counts do not add up: {counts}")
    manifest = {"schema_version": SCHEMA_VERSION, **manifest}
    path = Path(data_dir) / MANIFEST
    return atomic_write_text(path, json.dumps(manifest, indent=2, sort_keys=False, default=str) + "\n")


def is_implicit(manifest: dict[str, Any]) -> bool:
    """Whether a prepared dataset has no ratings (a next-item dataset); manifests without the key
    (written before implicit sources existed) are explicit."""
    return bool(manifest.get("implicit", False))


def require_ratings(data_dir: str | Path, command: str) -> dict[str, Any]:
    """The manifest of ``data_dir``, or :class:`DataError` if it is an implicit dataset.

    Called by every command that predicts ratings (``command`` is how the user typed it, e.g.
    ``"eval"`` or ``"baseline --method mf"``) before it reads any data.
    """
    manifest = read_manifest(data_dir)
    if is_implicit(manifest):
        raise DataError(f"{data_dir} is an implicit (next-item) dataset without ratings (source "
                        f"{manifest.get('source', '?')}); `reczero {command}` predicts ratings — use a ranking "
                        "method instead (e.g. `reczero baseline --method popularity` or `--method sasrec`)")
    return manifest


def rating_scale(data_dir_or_manifest: str | Path | dict[str, Any]) -> RatingScale:
    manifest = data_dir_or_manifest if isinstance(data_dir_or_manifest, dict) else read_manifest(data_dir_or_manifest)
    if manifest.get("rating_scale") is None:
        where = "" if isinstance(data_dir_or_manifest, dict) else f"{data_dir_or_manifest}: "
        raise DataError(f"{where}an implicit dataset without ratings has no rating scale")
    return RatingScale.from_dict(manifest["rating_scale"])


def split_path(data_dir: str | Path, split: str) -> Path:
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
    return Path(data_dir) / f"{split}.parquet"


def load_split(data_dir: str | Path, split: str, limit: int | None = None):
    """The split as a pandas DataFrame (histories as lists of dicts)."""
    import pyarrow.parquet as pq

    read_manifest(data_dir)
    path = split_path(data_dir, split)
    if not path.is_file():
        raise DataError(f"{path}: split file missing")
    table = pq.read_table(path)
    if limit is not None:
        table = table.slice(0, limit)
    return table.to_pandas()


def content_hash(data_dir: str | Path, files: tuple[str, ...] = ("train.parquet", "items.parquet")) -> str:
    """``sha256:<hex>`` of the *content* of a dataset's files (default: what a base model reads —
    the train split and the items), independent of how the parquet files were written (row groups,
    writer version, pandas metadata): each table is combined into one chunk, stripped of schema
    metadata and hashed in Arrow's IPC format, with its name."""
    import hashlib

    import pyarrow.parquet as pq

    digest = hashlib.sha256()
    for name in files:
        path = Path(data_dir) / name
        if not path.is_file():
            raise DataError(f"{path}: missing; a content hash needs {', '.join(files)}")
        table = pq.read_table(path).replace_schema_metadata(None).combine_chunks()
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table)
        digest.update(name.encode() + b"\0")
        digest.update(sink.getvalue().to_pybytes())
    return f"sha256:{digest.hexdigest()}"


def train_global_mean(data_dir: str | Path) -> float:
    """Mean rating of the training targets: the last-resort fallback prediction."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    table = pq.read_table(split_path(data_dir, "train"), columns=["rating"])
    if table.num_rows == 0:
        return rating_scale(data_dir).lo + rating_scale(data_dir).span / 2
    return float(pc.mean(table["rating"]).as_py())
