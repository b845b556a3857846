"""Amazon reviews 2018 (Ni, Li, McAuley; ``<Category>.json.gz`` / ``meta_<Category>.json.gz``).

Both files are strict JSON lines. Mapping: ``reviewerID`` → user_id, ``asin`` → item_id,
``overall`` → rating (1–5, step 1), ``unixReviewTime`` (seconds) → timestamp, ``reviewText`` (absent
on many rating-only lines) → review, ``summary`` → summary. ``vote`` ("1,234"), ``style`` and
``verified`` are not part of the prepared contract and are not read, so their quirks cannot reject a
record.

Meta: ``title`` and ``description`` (a list of paragraphs, joined) are scraped pages — some hold
whole ``<script>`` blocks or entity soup — so they are stripped of tags and scripts, unescaped and
bounded; ``feature`` bullets follow the description. Attributes are ``category`` (whose first entry
repeats the top category) and ``main_cat``, deduplicated, plus ``brand: X``. ``price``, ``also_buy``,
``also_view``, ``rank`` and ``similar_item`` are not carried (rank and co-purchases are measured
after the reviews they would be asked to predict).
"""

from __future__ import annotations

import re

from reczero.data.schema import RatingScale
from reczero.data.sources._fields import (
    MAX_TITLE_CHARS,
    Rejected,
    attributes,
    clean_text,
    describe,
    ident,
    labelled,
)
from reczero.data.sources._jsonl import ReviewColumns, make_readers

NAME = "amazon2018"
DEFAULT_SCALE = RatingScale(1.0, 5.0, 1.0)
COLUMNS = ReviewColumns("reviewerID", "asin", "overall", "unixReviewTime", "reviewText", "summary")
META_FIELDS = ("asin",)


def meta_row(obj: dict) -> tuple:
    if "asin" not in obj:
        raise Rejected("missing_field", "no 'asin'")
    return (ident(obj["asin"], "asin"), clean_text(obj.get("title"), MAX_TITLE_CHARS),
            attributes(obj.get("category"), _main_cat(obj.get("main_cat")), labelled("brand", obj.get("brand"))),
            describe(obj.get("description"), obj.get("feature")))


_ALT = re.compile(r'alt="([^"]*)"')


def _main_cat(value: object) -> str | None:
    """``main_cat``; some are an ``<img>`` logo whose alt text names the store ("Digital Music")."""
    if not isinstance(value, str):
        return None
    if value.startswith("<img"):
        alt = _ALT.search(value)
        value = alt.group(1) if alt else ""
    return clean_text(value, MAX_TITLE_CHARS)


read_interactions, read_items = make_readers(
    NAME, meta_row, columns=COLUMNS, meta_fields=META_FIELDS, default_scale=DEFAULT_SCALE)
