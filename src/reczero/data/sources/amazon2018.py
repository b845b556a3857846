"""Amazon reviews 2018 (Ni, Li, McAuley; ``<Category>.json.gz`` / ``meta_<Category>.json.gz``).

Both files are strict JSON lines. Mapping: ``reviewerID`` → user_id, ``asin`` → item_id,
``overall`` → rating (1–5, step 1), ``unixReviewTime`` (seconds) → timestamp, ``reviewText`` (absent
on many rating-only lines) → review, ``summary`` → summary. ``vote`` ("1,234"), ``style`` and
``verified`` are not part of the prepared contract and are not read, so their quirks cannot reject a
record.

Meta: ``title`` and ``description`` (a list of paragraphs, joined) are scraped pages — some hold
whole ``<script>`` blocks or entity soup — so they are stripped of tags and scripts, unescaped and
bounded; ``feature`` bullets follow the description. Attributes are ``category`` (whose first entry
repeats the top category) and ``main_cat``, deduplicated, plus ``brand: X``. ``also_buy``,
``also_view``, ``rank`` and ``similar_item`` are not carried (rank and co-purchases are measured
after the reviews they would be asked to predict).

For ``--item-filter`` each item also carries the optional check columns, as Amazon 2023's: the raw
title where cleaning changed it (this dump's titles are where HTML is most common), and ``price``.
The dump writes prices as page text, ``"$12.99"`` or ``"$1,299.00"``: a dollar amount is handed
over as its number (``"1299.00"``), anything else (a range ``"$10.99 - $20.99"``, leftover markup)
as it stands, which ``r2ec-price`` then drops as not a number; ``""`` is no price.
"""

from __future__ import annotations

import re

from reczero.data.filters import ITEM_CHECK_FIELDS
from reczero.data.schema import RatingScale
from reczero.data.sources._fields import (
    MAX_TITLE_CHARS,
    Rejected,
    attributes,
    clean_text,
    describe,
    ident,
    labelled,
    title_and_checks,
)
from reczero.data.sources._jsonl import ReviewColumns, make_readers

NAME = "amazon2018"
DEFAULT_SCALE = RatingScale(1.0, 5.0, 1.0)
COLUMNS = ReviewColumns("reviewerID", "asin", "overall", "unixReviewTime", "reviewText", "summary")
META_FIELDS = ("asin",)


def meta_row(obj: dict) -> tuple:
    if "asin" not in obj:
        raise Rejected("missing_field", "no 'asin'")
    title, raw_title, price = title_and_checks(obj.get("title"), _price(obj.get("price")))
    return (ident(obj["asin"], "asin"), title,
            attributes(obj.get("category"), _main_cat(obj.get("main_cat")), labelled("brand", obj.get("brand"))),
            describe(obj.get("description"), obj.get("feature")), raw_title, price)


_DOLLARS = re.compile(r"\$\s*(\d{1,3}(?:,\d{3})+|\d+)(\.\d+)?")


def _price(value: object) -> object:
    """A ``"$1,299.00"`` price as ``"1299.00"``; any other value as it stands."""
    if isinstance(value, str) and (match := _DOLLARS.fullmatch(value.strip())):
        return match.group(1).replace(",", "") + (match.group(2) or "")
    return value


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
    NAME, meta_row, columns=COLUMNS, meta_fields=META_FIELDS, default_scale=DEFAULT_SCALE,
    item_fields=ITEM_CHECK_FIELDS)
