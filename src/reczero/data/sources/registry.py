"""Every raw format ``reczero data prepare --source NAME`` reads, listed here with its contract.

What this module chose, and why:

* **An explicit registry, typed.** One :class:`Source` per format, written out in :data:`SOURCES`:
  the readers and the format's defaults are named where a reader of the code looks for them,
  instead of importing ``reczero.data.sources.<name>`` by name and probing optional module
  attributes. A new format is one module with its readers plus one entry here.
* **Defaults stated once.** A field left out means: one input file, no item file unless ``--meta``
  is given, ratings present, and the rating scale from ``--scale`` (then ``default_scale``, then
  ``detect_scale``). ``prepare`` asks the entry and nothing else.
* **Names in one light place.** ``--source`` choices come from ``reczero.config.SOURCES``: the
  config must import without pyarrow (``reczero --help`` stays instant), and this module imports
  every reader. The two are checked against each other when this module is imported (and by a
  test), so a format cannot be listed in one and missing from the other.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa

from reczero.config import SOURCES as SOURCE_NAMES
from reczero.data.schema import RatingScale
from reczero.data.sources import (
    amazon2014,
    amazon2018,
    amazon2023,
    movielens,
    recbole,
    sequences,
    table,
    yelp,
)
from reczero.errors import DataError

Reader = Callable[..., Iterator[pa.RecordBatch]]   # (path, rejects, **options) -> Arrow batches


def single_file(path: Path) -> list[Path]:
    """The default ``input_files``: ``--input`` itself."""
    return [Path(path)]


def no_item_file(path: Path, **options: object) -> Path | None:
    """The default ``default_meta``: items only from ``--meta``."""
    return None


def rated(path: Path, **options: object) -> bool:
    """The default ``has_ratings``: every record carries a rating."""
    return True


def unrated(path: Path, **options: object) -> bool:
    """``has_ratings`` of a format that never has ratings (an implicit, next-item format)."""
    return False


def movielens_scale(path: Path, **options: object) -> RatingScale:
    """MovieLens's scale follows from the folder's layout alone."""
    return movielens.detect_scale(path)


@dataclass(frozen=True)
class Source:
    """One raw format: its readers and its defaults.

    ``read_interactions(path, rejects, **options)`` and ``read_items(...)`` follow the reader
    contract of :mod:`reczero.data.sources`; ``read_items`` is None for a format without item
    metadata (items are then synthesised from their ids, and ``--meta`` is refused).
    ``expected`` says what ``--input`` should be, for error messages. ``has_ratings(path,
    **options)`` is False for an implicit input (``rating`` null, ``"implicit": true`` in the
    manifest); ``default_scale`` / ``detect_scale(path, **options)`` give the rating scale when
    ``--scale`` is not given (neither: ``--scale`` is required). ``default_meta(path, **options)`` is
    the item file used without ``--meta`` (None: none); ``input_files(path)`` are the files that
    ``--input`` stands for, fingerprinted in the manifest.
    """

    name: str
    expected: str
    read_interactions: Reader
    read_items: Reader | None = None
    default_scale: RatingScale | None = None
    detect_scale: Callable[..., RatingScale] | None = None
    has_ratings: Callable[..., bool] = rated
    default_meta: Callable[..., Path | None] = no_item_file
    input_files: Callable[[Path], list[Path]] = single_file


SOURCES: dict[str, Source] = {s.name: s for s in (
    Source("amazon2014", "an Amazon 2014 reviews file (reviews_<Category>.json.gz; items: --meta meta_<Category>.json.gz)",
           amazon2014.read_interactions, amazon2014.read_items, default_scale=amazon2014.DEFAULT_SCALE),
    Source("amazon2018", "an Amazon 2018 reviews file (<Category>.json.gz; items: --meta meta_<Category>.json.gz)",
           amazon2018.read_interactions, amazon2018.read_items, default_scale=amazon2018.DEFAULT_SCALE),
    Source("amazon2023", "an Amazon 2023 reviews file (<Category>.jsonl.gz; items: --meta meta_<Category>.jsonl.gz)",
           amazon2023.read_interactions, amazon2023.read_items, default_scale=amazon2023.DEFAULT_SCALE),
    Source("yelp", "the Yelp review file (yelp_academic_dataset_review.json; items: --meta ..._business.json)",
           yelp.read_interactions, yelp.read_items, default_scale=yelp.DEFAULT_SCALE),
    Source("movielens", movielens.EXPECTED, movielens.read_interactions, movielens.read_items,
           detect_scale=movielens_scale, default_meta=movielens.default_meta, input_files=movielens.input_files),
    Source("table", table.EXPECTED, table.read_interactions, table.read_items, default_meta=table.default_meta),
    Source("sequences", sequences.EXPECTED, sequences.read_interactions, has_ratings=unrated),
    Source("recbole", recbole.EXPECTED, recbole.read_interactions, recbole.read_items,
           detect_scale=recbole.detect_scale, has_ratings=recbole.has_ratings, default_meta=recbole.default_meta,
           input_files=recbole.input_files),
)}

if tuple(SOURCES) != tuple(SOURCE_NAMES):       # the light list of --source choices must match this one
    raise ImportError(f"reczero.config.SOURCES {SOURCE_NAMES} and the source registry {tuple(SOURCES)} disagree")


def get_source(name: str) -> Source:
    """The registered format ``name``; :class:`DataError` listing the known ones otherwise."""
    try:
        return SOURCES[name]
    except KeyError:
        raise DataError(f"unknown source {name!r}; expected one of {', '.join(SOURCES)}") from None
