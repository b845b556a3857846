"""MovieLens (GroupLens): ``--input`` is the dataset folder; the layout is detected from its files.

* **100k** (``u.data``: ``user item rating timestamp`` tab-separated; ``u.item``: pipe-separated,
  latin-1, ``id|title|release|video release|url|`` + 19 genre flags named by ``u.genre``), scale 1-5.
* **1m** (``ratings.dat``: ``UserID::MovieID::Rating::Timestamp``; ``movies.dat``:
  ``MovieID::Title::Genres``, latin-1, genres ``|``-joined), scale 1-5.
* **latest** (ml-latest, ml-latest-small, ml-25m, ml-32m: ``ratings.csv`` ``userId,movieId,rating,
  timestamp``; ``movies.csv`` ``movieId,title,genres`` with ``|``-joined genres), scale 0.5-5 step 0.5.
  ``tags.csv`` is folded into item attributes: each movie's tags, lower-cased, most frequent first,
  at most ``MAX_TAGS``. Tags carry no time filter: they describe the item as the dump's users saw it
  over its whole span, as genres do (state this when comparing with papers that drop tags).

Items come from the same folder (``default_meta``), so ``--meta`` is not needed. Files are parsed in
blocks of whole lines by ``pyarrow.csv`` with every column read as text, then checked with Arrow
kernels; a block with a bad value is checked row by row so each bad line is rejected with its
number (``malformed_row`` for a wrong column count, ``bad_rating``/``bad_time``/``missing_field``).
"""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from reczero.data.schema import INTERACTIONS_SCHEMA, ITEMS_SCHEMA, RatingScale
from reczero.data.sources import RejectLog, line_blocks
from reczero.errors import DataError

log = logging.getLogger(__name__)

NAME = "movielens"
DEFAULT_SCALE = None                    # detected from the layout
EXPECTED = "a MovieLens folder with u.data (ml-100k), ratings.dat (ml-1m) or ratings.csv (ml-latest, ml-25m)"
MAX_TAGS = 20
LAYOUTS = {          # name: (ratings, items, delimiter of ratings, of items, header, encoding, scale)
    "100k": ("u.data", "u.item", "\t", "|", False, "latin-1", RatingScale(1.0, 5.0, 1.0)),
    "1m": ("ratings.dat", "movies.dat", "::", "::", False, "latin-1", RatingScale(1.0, 5.0, 1.0)),
    "latest": ("ratings.csv", "movies.csv", ",", ",", True, "utf-8", RatingScale(0.5, 5.0, 0.5)),
}


def layout(folder: Path) -> str:
    folder = Path(folder)
    if folder.is_file():
        raise DataError(f"{folder}: is a file; --input for movielens is the dataset folder ({EXPECTED})")
    for name, (ratings, *_) in LAYOUTS.items():
        if (folder / ratings).is_file():
            return name
    found = ", ".join(sorted(p.name for p in folder.iterdir())[:10]) or "nothing"
    raise DataError(f"{folder}: not {EXPECTED}; found {found}")


def detect_scale(folder: Path) -> RatingScale:
    scale = LAYOUTS[layout(folder)][6]
    log.info("%s: MovieLens %s layout, rating scale %g-%g step %g", folder, layout(folder), scale.lo, scale.hi, scale.step)
    return scale


def default_meta(folder: Path, **_: object) -> Path:
    return Path(folder)


def input_files(folder: Path) -> list[Path]:
    name = layout(folder)
    names = [LAYOUTS[name][0], LAYOUTS[name][1]] + {"100k": ["u.genre"], "latest": ["tags.csv"]}.get(name, [])
    return [Path(folder) / n for n in names if (Path(folder) / n).is_file()]


def read_interactions(path: Path, rejects: RejectLog, scale: RatingScale | None = None, **_: object) -> Iterator[pa.RecordBatch]:
    name = layout(path)
    file, _, delimiter, _, header, encoding, _ = LAYOUTS[name]
    file_path = Path(path) / file
    read = kept = 0
    for table, lines in _blocks(file_path, rejects, "interactions", ["user", "item", "rating", "time"], delimiter, header, encoding):
        read += table.num_rows
        batch = _interactions(table, lines, file_path, rejects, scale)
        kept += batch.num_rows
        yield batch
    if read and not kept:
        raise DataError(f"{file_path}: all {read:,} rating lines were rejected; expected user, item, rating, "
                        f"timestamp separated by {delimiter!r} (see rejects.jsonl)")


def read_items(path: Path, rejects: RejectLog, **_: object) -> Iterator[pa.RecordBatch]:
    name = layout(path)
    file_path = Path(path) / LAYOUTS[name][1]
    if not file_path.is_file():
        log.warning("%s: no %s; items get empty text", path, file_path.name)
        return
    _, _, _, delimiter, header, encoding, _ = LAYOUTS[name]
    if name == "100k":
        genres = _genres_100k(Path(path) / "u.genre")
        columns = ["item", "title", "release", "video", "url", *(f"g{k}" for k in range(len(genres)))]
    else:
        genres, columns = [], ["item", "title", "genres"]
    tags = _tags(Path(path) / "tags.csv") if name == "latest" else {}
    read = kept = 0
    for table, lines in _blocks(file_path, rejects, "items", columns, delimiter, header, encoding):
        ids, titles, attrs = [], [], []
        for k, row in enumerate(table.to_pylist()):
            if not (row["item"] or "").strip():
                rejects.reject("items", file_path, int(lines[k]), "missing_field", "empty movie id", row)
                continue
            if genres:
                values = [g for j, g in enumerate(genres) if row[f"g{j}"] == "1"]
            else:
                values = [g for g in (row["genres"] or "").split("|") if g and g != "(no genres listed)"]
            ids.append(row["item"].strip())
            titles.append(row["title"])
            attrs.append(values + [t for t in tags.get(row["item"].strip(), []) if t not in values])
        read, kept = read + table.num_rows, kept + len(ids)
        yield pa.RecordBatch.from_arrays([pa.array(ids, pa.string()), pa.array(titles, pa.string()),
                                          pa.array(attrs, pa.list_(pa.string())), pa.nulls(len(ids), pa.string())],
                                         schema=ITEMS_SCHEMA)
    if not kept:
        raise DataError(f"{file_path}: no movie could be read ({read:,} lines); expected {', '.join(columns[:3])}, ... "
                        f"separated by {delimiter!r} (see rejects.jsonl)")


def _blocks(path: Path, rejects: RejectLog, stream: str, names: list[str], delimiter: str, header: bool,
            encoding: str) -> Iterator[tuple[pa.Table, list[int]]]:
    """(all-text table, line numbers) per block of whole lines; rows with a wrong column count are
    counted and rejected as ``malformed_row``, blank lines are skipped (they are not records).
    pyarrow numbers an invalid row among the block's non-blank lines, header included."""
    line0 = 0
    for block in line_blocks(path, rejects, stream):
        if delimiter == "::":
            block = block.replace(b"::", b"\x1f")
        bad: list[int] = []

        def invalid(row, bad=bad) -> str:
            bad.append(row.number)
            return "skip"

        skip = 1 if header and line0 == 0 else 0
        table = pacsv.read_csv(io.BytesIO(block), read_options=pacsv.ReadOptions(
            column_names=names, skip_rows=skip, encoding=encoding, use_threads=False, block_size=len(block) + 1),
            parse_options=pacsv.ParseOptions(delimiter="\x1f" if delimiter == "::" else delimiter,
                                             quote_char='"' if delimiter == "," else False,
                                             ignore_empty_lines=True, invalid_row_handler=invalid),
            convert_options=pacsv.ConvertOptions(column_types={n: pa.string() for n in names}))
        text = block.decode(encoding, errors="replace").split("\n")
        if block.endswith(b"\n"):
            text.pop()
        nonblank = [k + 1 for k, raw in enumerate(text) if raw.strip()]   # pyarrow numbers these rows
        bad_lines = {nonblank[number - 1] for number in bad}
        for line in sorted(bad_lines):
            rejects.count(stream)
            rejects.reject(stream, path, line0 + line, "malformed_row",
                           f"expected {len(names)} fields separated by {delimiter!r}", text[line - 1])
        lines = [line0 + k for k in nonblank[skip:] if k not in bad_lines]
        line0 += len(text)
        rejects.count(stream, table.num_rows)
        yield table, lines[: table.num_rows]


def _interactions(table: pa.Table, lines: list[int], path: Path, rejects: RejectLog,
                  scale: RatingScale | None) -> pa.RecordBatch:
    user, item = pc.utf8_trim_whitespace(table["user"]), pc.utf8_trim_whitespace(table["item"])
    try:
        rating = pc.cast(pc.utf8_trim_whitespace(table["rating"]), pa.float64())
        time = pc.cast(pc.utf8_trim_whitespace(table["time"]), pa.int64())
        ok = pc.and_(pc.and_(pc.greater(pc.utf8_length(user), 0), pc.greater(pc.utf8_length(item), 0)),
                     pc.and_(pc.is_finite(rating), pc.greater_equal(time, 0)))
        if scale is not None:
            ok = pc.and_(ok, pc.and_(pc.greater_equal(rating, scale.lo), pc.less_equal(rating, scale.hi)))
        clean = pc.all(pc.fill_null(ok, False)).as_py()
    except pa.ArrowInvalid:
        clean = False
    if clean:
        return pa.RecordBatch.from_arrays([user.combine_chunks(), item.combine_chunks(), rating.combine_chunks(),
                                           time.combine_chunks(), pa.nulls(table.num_rows, pa.string()),
                                           pa.nulls(table.num_rows, pa.string())], schema=INTERACTIONS_SCHEMA)
    rows = []
    for k, row in enumerate(table.to_pylist()):
        reason, detail = _check(row, scale)
        if reason:
            rejects.reject("interactions", path, int(lines[k]), reason, detail, row)
        else:
            rows.append((row["user"].strip(), row["item"].strip(), float(row["rating"]), int(row["time"]), None, None))
    cols = list(zip(*rows, strict=True)) if rows else [[]] * 6
    return pa.RecordBatch.from_arrays([pa.array(c, f.type) for c, f in zip(cols, INTERACTIONS_SCHEMA, strict=True)],
                                      schema=INTERACTIONS_SCHEMA)


def _check(row: dict, scale: RatingScale | None) -> tuple[str | None, str]:
    if not (row["user"] or "").strip() or not (row["item"] or "").strip():
        return "missing_field", "empty user or movie id"
    try:
        rating = float(row["rating"])
    except (TypeError, ValueError):
        return "bad_rating", f"rating {row['rating']!r} is not a number"
    if rating != rating or (scale is not None and not scale.contains(rating)):
        return "bad_rating", f"rating {rating:g} is outside the scale" + (f" {scale.lo:g}-{scale.hi:g}" if scale else "")
    try:
        if int((row["time"] or "").strip()) < 0:
            return "bad_time", f"negative timestamp {row['time']!r}"
    except ValueError:
        return "bad_time", f"timestamp {row['time']!r} is not integer seconds"
    return None, ""


def _genres_100k(path: Path) -> list[str]:
    if not path.is_file():
        raise DataError(f"{path}: missing; the ml-100k folder needs u.genre to name u.item's 19 genre flags")
    pairs = [line.rsplit("|", 1) for line in path.read_text(encoding="latin-1").splitlines() if line.strip()]
    return [name for name, _ in sorted(pairs, key=lambda p: int(p[1]))]


def _tags(path: Path) -> dict[str, list[str]]:
    """movieId -> its tags (lower-cased, most frequent first, at most MAX_TAGS), via DuckDB."""
    if not path.is_file():
        return {}
    import duckdb

    con = duckdb.connect()
    rows = con.execute(f"""
        SELECT movie, list(tag ORDER BY n DESC, tag)[1:{MAX_TAGS}] FROM (
          SELECT CAST(movieId AS VARCHAR) AS movie, lower(trim(CAST(tag AS VARCHAR))) AS tag, count(*) AS n
          FROM read_csv(?, header = true, all_varchar = true, ignore_errors = true)
          WHERE tag IS NOT NULL AND trim(tag) <> '' GROUP BY ALL) GROUP BY movie""", [str(path)]).fetchall()
    con.close()
    log.info("%s: tags of %d movies folded into item attributes", path, len(rows))
    return dict(rows)
