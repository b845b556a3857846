"""Item sequences: one user per line, ``user item item ...`` in time order, whitespace separated.

The format of the sequential-recommendation benchmark files that SASRec, S3-Rec and ICLRec
publish (``Beauty.txt``, ``Sports_and_Outdoors.txt``, ``ml-1m.txt`` as ``1 1 2 3 ...``). What this
reader chose, and why:

* **The position in the line is the time.** The files hold order, not times, and the prepared
  contract orders everything by ``timestamp``: the k-th item of a line (0-based) gets timestamp
  ``k`` seconds. Leave-last splits (``--split leave-last``, the protocol these files are made
  for) and the leak-free histories then work unchanged: a target's history is exactly the items
  before it in its line. Positions are a per-user clock, not a shared one: a ``temporal`` split
  cuts by position, and an item's "earlier" interactions by other users are those at earlier
  positions in their own lines.
* **A record is one interaction: one item token.** The manifest counts item tokens, so
  ``read = kept + rejected`` is in interactions, like every other source. A line rejected as a
  whole counts as many records as it holds items (at least one: an empty line or a user without
  items is one record), and is listed once in ``rejects.jsonl`` (``"records": k`` when k > 1).
* **Damage, by reason.** ``empty_line`` (a blank line), ``no_items`` (a user with no items),
  ``line_too_long`` (a line over ``MAX_LINE_BYTES``: a bot, or not a sequences file),
  ``bad_user`` (the first token is not an id: not UTF-8, over ``MAX_ID_CHARS``, or holding a
  control character, a quote, a brace, a bracket or a comma — what JSON and CSV lines are made of,
  so that a file of another format is refused rather than read as ids), ``duplicate_user`` (a user seen on an earlier line: the positions would
  restart and clash, so the first line is kept), ``bad_item`` (one item token that is not an id;
  the rest of the line is kept, at its own positions). A repeated item within a line is kept by
  the reader and then rejected as ``duplicate`` by ``write_prepared`` (the earliest is kept), as
  for every source.
* **Implicit, no metadata.** Ratings are null (an implicit dataset; rating commands refuse it),
  and items are synthesised from their ids (empty text): the format has none.

Each line is split in Python (``bytes.split``; a clean ASCII line is checked with one regular
expression, only a suspicious one token by token); the output goes out in Arrow batches of
``BATCH_ROWS`` interactions. ``bench/prepare.py --source sequences`` measures it.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from itertools import repeat
from pathlib import Path

import pyarrow as pa

from reczero.data.schema import INTERACTIONS_SCHEMA
from reczero.data.sources import BATCH_ROWS, RejectLog, iter_line_bytes
from reczero.errors import DataError

log = logging.getLogger(__name__)

EXPECTED = "a sequences file: one user per line, 'user item item ...' in time order, separated by whitespace"
MAX_LINE_BYTES = 1 << 20        # ~150k item ids: longer is a bot or not this format
MAX_ID_CHARS = 256
PROBE_LINES = 1_000             # a file whose first lines are all rejected is not this format
_NOT_ID = re.compile(rb"[\x00-\x08\x0e-\x1f\x7f\"{}\[\],]")   # control characters (not whitespace), JSON/CSV syntax
STREAM = "interactions"
NOT_ID = f"not UTF-8, over {MAX_ID_CHARS} characters, or holding a control character or one of \" {{ }} [ ] ,"


def read_interactions(path: Path, rejects: RejectLog, **_: object) -> Iterator[pa.RecordBatch]:
    """Interactions of a sequences file, ``timestamp`` = position in the line, ``rating`` null."""
    path = Path(path)
    log.info("%s: item sequences; the position in the line is the time (0, 1, 2, ...): "
             "the SASRec protocol is --split leave-last", path)
    users: list[str] = []
    items: list[str] = []
    times: list[int] = []
    seen: set[str] = set()
    lines = kept = 0
    for lineno, line in iter_line_bytes(path, rejects, STREAM, blank=True):
        lines += 1
        n = _read_line(path, lineno, line, seen, rejects, users, items, times)
        kept += n
        if lines == PROBE_LINES and not kept:
            raise DataError(f"{path}: the first {PROBE_LINES:,} lines were all rejected; expected {EXPECTED} "
                            f"(see rejects.jsonl)")
        if len(items) >= BATCH_ROWS:
            yield _batch(users, items, times)
            users, items, times = [], [], []
    if items:
        yield _batch(users, items, times)
    if lines and not kept:
        raise DataError(f"{path}: none of its {lines:,} lines holds an interaction; expected {EXPECTED} "
                        f"(see rejects.jsonl)")


def _read_line(path: Path, lineno: int, line: bytes, seen: set[str], rejects: RejectLog,
               users: list[str], items: list[str], times: list[int]) -> int:
    """Append the line's interactions to ``users``/``items``/``times``; count and reject the rest.
    Returns the number of interactions kept."""
    if not line or line.isspace():
        rejects.count(STREAM)
        rejects.reject(STREAM, path, lineno, "empty_line", "a blank line; expected 'user item item ...'")
        return 0
    if len(line) > MAX_LINE_BYTES:
        n = max(len(line.split()) - 1, 1)      # the items it holds
        rejects.count(STREAM, n)
        rejects.reject(STREAM, path, lineno, "line_too_long",
                       f"{len(line):,} bytes, over {MAX_LINE_BYTES >> 20} MiB", line[:200], n=n)
        return 0
    if line.isascii() and not _NOT_ID.search(line):
        tokens: list[str | None] = line.decode("ascii").split()
        if max(map(len, tokens)) > MAX_ID_CHARS:
            tokens = [_token(t) for t in line.split()]
    else:
        tokens = [_token(t) for t in line.split()]
    user, line_items = tokens[0], tokens[1:]
    n = max(len(line_items), 1)
    rejects.count(STREAM, n)
    if user is None:
        rejects.reject(STREAM, path, lineno, "bad_user", f"the first token is not a user id ({NOT_ID})",
                       line[:200], n=n)
        return 0
    if not line_items:
        rejects.reject(STREAM, path, lineno, "no_items", f"user {user!r} has no items")
        return 0
    if user in seen:
        rejects.reject(STREAM, path, lineno, "duplicate_user",
                       f"user {user!r} already has a line; the first is kept", line[:200], n=n)
        return 0
    seen.add(user)
    if None in line_items:
        raw = line.split()[1:]
        for k in (k for k, item in enumerate(line_items) if item is None):
            rejects.reject(STREAM, path, lineno, "bad_item", f"item #{k + 1} of user {user!r} is not an id ({NOT_ID})",
                           raw[k][:200])
        at = [k for k, item in enumerate(line_items) if item is not None]
        line_items = [line_items[k] for k in at]
        times.extend(at)                    # the kept items keep their own positions
    else:
        times.extend(range(len(line_items)))
    users.extend(repeat(user, len(line_items)))
    items.extend(line_items)                # type: ignore[arg-type]
    return len(line_items)


def _token(raw: bytes) -> str | None:
    """An id from one whitespace-free token, or None when it is not one."""
    if len(raw) > 4 * MAX_ID_CHARS or _NOT_ID.search(raw):
        return None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return None
    return text if len(text) <= MAX_ID_CHARS else None


def _batch(users: list[str], items: list[str], times: list[int]) -> pa.RecordBatch:
    n = len(items)
    return pa.RecordBatch.from_arrays([pa.array(users, pa.string()), pa.array(items, pa.string()),
                                       pa.nulls(n, pa.float64()), pa.array(times, pa.int64()),
                                       pa.nulls(n, pa.string()), pa.nulls(n, pa.string())], schema=INTERACTIONS_SCHEMA)
