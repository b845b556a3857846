"""The dump filters of ``data prepare``: the item filter (``--item-filter``) and the time window
(``--since``, ``--until``, ``--window-min-items``), as the R2ec reference prepares Amazon 2023.

Both run inside :func:`reczero.data.samples.write_prepared`, on its DuckDB tables, so they apply to
every source (and to ``data synth``) in one place. What was chosen, and why:

* **One option for the item rules**, ``--item-filter r2ec`` (or ``r2ec-price``), not a flag per rule:
  the rules and their thresholds are the reference's bundle (``preprocess.py``'s ``load_items`` at
  commit 449a544), and separate ``--min-title-chars`` / ``--max-title-words`` flags would be options
  nobody asked for. The rules, checked in this order after the usual item checks (``missing_field``,
  ``duplicate``), each a reject reason of the ``items`` stream:

  - ``no_title``: no title, or only spaces;
  - ``html_in_title``: a markup tag (``<span id=...>``, ``</b>``...) in the title as the dump holds
    it. Readers clean titles (tags stripped, entities unescaped), so a reader that can hands the
    raw text over in the optional ``raw_title`` column (:data:`ITEM_CHECK_FIELDS`; Amazon 2023
    does); elsewhere the title itself is checked. The reference looks for ``<span id`` only;
  - ``title_too_long``: more than 20 words in the clean title;
  - ``title_too_short``: at most 1 character once spaces and double quotes are trimmed (the
    reference counts these under "no title");
  - ``bad_price`` (``r2ec-price`` only): the price (the optional ``price`` column, the dump's text)
    is missing or not a number. The reference drops these, which also drops every review of an
    item whose price the dump does not list; it is off in ``r2ec`` for that reason. A source whose
    items carry no price at all is refused rather than emptied.

  An interaction whose item was dropped is rejected as ``unknown_item``, as one without metadata.
* **The window is applied last**, after the dedupe and the k-core filter: ``--min-user`` /
  ``--min-item`` then count every interaction of the dump, as the reference's input (the Amazon
  2023 5-core file) was 5-core over all years before it was cut to the window. The interactions
  outside it are rejected as ``out_of_window``. Dates are UTC days, both ends inclusive: the window
  is ``[since 00:00, until + 1 day 00:00)``. (The reference's end test ``time <= '2023-10-01'``
  keeps only the first instant of its last day.)
* **Widening** (``--window-min-items N``): while fewer than N distinct items remain in the window,
  its start moves back 3 months, as the reference does. Because the window comes after every
  other filter, the items left in a window starting at ``s`` are exactly the items whose latest
  kept interaction before the end is at or after ``s``; one DuckDB query counts them for every
  candidate start ``since - 3k months`` at once (no loop over records, no re-run of the filters),
  and the latest start with at least N items is taken. Widening stops once the window holds every
  kept interaction before its end (the reference stops once the start reaches the earliest
  review's calendar year). The final window is recorded in the manifest's ``window``. The option
  is ``--window-min-items``, not ``--min-items``: beside the k-core's ``--min-item`` the two would
  differ by one letter and mean different things.
"""

from __future__ import annotations

import logging
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pyarrow as pa

from reczero.config import SampleOptions
from reczero.errors import DataError

log = logging.getLogger(__name__)

# optional columns of item batches that only the item filter reads (never written to items.parquet)
ITEM_CHECK_FIELDS = pa.schema([
    ("raw_title", pa.string()),     # the title as the dump holds it, where the reader's cleaning changed it
    ("price", pa.string()),         # the dump's price as text (null: none listed)
])

MAX_TITLE_WORDS = 20
MIN_TITLE_CHARS = 2
WIDEN_MONTHS = 3
TAG = r"</?[A-Za-z][^<>]*>"         # what a browser would read as a tag: '<' then a name ('<3' is no tag)

ITEM_RULES = {  # reason -> (SQL condition over the item table ``it``, detail); checked in this order
    "no_title": ("trim(coalesce(raw_title, title, '')) = ''", "the item has no title (--item-filter)"),
    "html_in_title": (f"regexp_matches(coalesce(raw_title, title), '{TAG}')",
                      "HTML markup in the title (--item-filter)"),
    "title_too_long": (f"len(regexp_split_to_array(trim(title), '\\s+')) > {MAX_TITLE_WORDS}",
                       f"title of more than {MAX_TITLE_WORDS} words (--item-filter)"),
    "title_too_short": (f"length(trim(coalesce(title, ''), ' \"')) < {MIN_TITLE_CHARS}",
                        f"title of fewer than {MIN_TITLE_CHARS} characters (--item-filter)"),
    "bad_price": ("TRY_CAST(price AS DOUBLE) IS NULL", "price missing or not a number (--item-filter r2ec-price)"),
}
FILTERS = {"r2ec": ("no_title", "html_in_title", "title_too_long", "title_too_short"),
           "r2ec-price": ("no_title", "html_in_title", "title_too_long", "title_too_short", "bad_price")}
REJECT_DETAIL = {reason: detail for reason, (_, detail) in ITEM_RULES.items()} | {
    "out_of_window": "timestamp outside --since/--until (UTC days, inclusive)"}


def item_rule_cases(con, item_filter: str | None, file: str) -> str:
    """The ``WHEN ... THEN 'reason'`` branches of ``item_filter`` over the registered ``raw_items``
    (empty when no filter). Refuses a price rule on items of which none carries a price."""
    if item_filter is None:
        return ""
    rules = FILTERS[item_filter]
    if "bad_price" in rules and not con.execute("SELECT count(price) FROM raw_items").fetchone()[0]:
        raise DataError(f"{file}: --item-filter {item_filter}: no item carries a price (this source lists none), "
                        "so every item would be dropped; use --item-filter r2ec")
    return " ".join(f"WHEN {ITEM_RULES[r][0]} THEN '{r}'" for r in rules)


def epoch(day: date) -> int:
    """Unix seconds of ``day`` at 00:00 UTC."""
    return int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp())


def apply_window(con, opts: SampleOptions) -> dict[str, Any] | None:
    """Reject the kept rows of ``st`` outside the window as ``out_of_window``, after widening its
    start by ``opts.window_min_items``; returns the manifest's ``window`` (None without one)."""
    if opts.since is None and opts.until is None:
        return None
    until = opts.parsed_day("until")
    end = epoch(until + timedelta(days=1)) if until else None
    before_end = f"AND timestamp < {end}" if end is not None else ""
    start, moved, items = None, 0, None
    if opts.since is not None:
        start, moved, items = _widened_start(con, opts.parsed_day("since"), before_end, opts.window_min_items)
    outside = " OR ".join([*([f"timestamp < {epoch(start)}"] if start else []),
                           *([f"timestamp >= {end}"] if end is not None else [])])
    n_out = con.execute(f"UPDATE st SET reason = 'out_of_window' WHERE reason IS NULL AND ({outside})").fetchone()[0]
    if items is None:
        items = con.execute("SELECT count(DISTINCT item_id) FROM st WHERE reason IS NULL").fetchone()[0]
    window = {"since": start.isoformat() if start else None, "until": opts.until, "requested_since": opts.since,
              "moved_back_months": moved, "window_min_items": opts.window_min_items, "items": items,
              "out_of_window": n_out}
    log.info("window %s .. %s (start moved back %d months): %d items, %d interactions outside",
             window["since"], opts.until, moved, items, n_out)
    return window


def _widened_start(con, since: date, before_end: str, min_items: int) -> tuple[date, int, int]:
    """``(start, months moved back, items in the window)``: the latest start ``since - 3k months``
    (k = 0, 1, ...) whose window holds at least ``min_items`` distinct items of the kept rows, or
    the first that holds every kept row before the end."""
    first = con.execute(f"SELECT min(timestamp) FROM st WHERE reason IS NULL {before_end}").fetchone()[0]
    if first is None:
        return since, 0, 0
    earliest = datetime.fromtimestamp(first, UTC).date()
    steps = max(0, ((since.year - earliest.year) * 12 + since.month - earliest.month) // WIDEN_MONTHS + 1)
    # per item, its latest kept interaction before the end; a window from s holds the items whose latest is >= s
    rows = con.execute(f"""
        WITH latest AS (SELECT item_id, max(timestamp) AS t FROM st WHERE reason IS NULL {before_end} GROUP BY item_id),
             starts AS (SELECT k, CAST(DATE '{since.isoformat()}' - to_months({WIDEN_MONTHS} * k) AS DATE) AS day
                        FROM range(0, {steps if min_items else 0} + 1) r(k))
        SELECT k, day, (SELECT count(*) FROM latest WHERE t >= epoch(day)) AS n FROM starts ORDER BY k""").fetchall()
    for k, day, n in rows:          # at most a few dozen candidate starts, never records
        if n >= min_items or epoch(day) <= first:
            return day, WIDEN_MONTHS * k, n
    k, day, n = rows[-1]
    return day, WIDEN_MONTHS * k, n
