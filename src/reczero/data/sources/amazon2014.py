"""Amazon reviews 2014 (McAuley et al., SNAP ``reviews_<Category>.json.gz`` / ``meta_<Category>.json.gz``).

Reviews are one JSON object per line — though some of the published files are written as Python
dict literals, so a review line that is not JSON is read with ``ast.literal_eval`` too. Meta lines
are always Python literals with single quotes (``{'asin': '0001048791', 'title': ...}``); they are
read with ``ast.literal_eval`` only, which evaluates literals and nothing else (never ``eval``).

Mapping: ``reviewerID`` → user_id, ``asin`` → item_id, ``overall`` → rating (1–5, step 1),
``unixReviewTime`` (seconds; else ``reviewTime`` "MM DD, YYYY" as UTC midnight) → timestamp,
``reviewText`` → review, ``summary`` → summary. Meta: ``categories`` (a list of category paths)
flattened and deduplicated into attributes, plus ``brand: X``; ``title`` and ``description`` cleaned
of HTML. ``helpful``, ``related`` and ``salesRank`` are not carried: the prompt shows what a
shopper reads, and sales rank is measured after the reviews it would have to predict. For
``--item-filter`` each item also carries the optional check columns, as Amazon 2023's: the raw
title where cleaning changed it, and ``price`` (a number in this dump) as text.
"""

from __future__ import annotations

import ast
from datetime import UTC, datetime

from reczero.data.filters import ITEM_CHECK_FIELDS
from reczero.data.schema import RatingScale
from reczero.data.sources._fields import (
    Rejected,
    attributes,
    describe,
    ident,
    labelled,
    number,
    seconds,
    text,
    title_and_checks,
)
from reczero.data.sources._jsonl import ReviewColumns, make_readers

NAME = "amazon2014"
DEFAULT_SCALE = RatingScale(1.0, 5.0, 1.0)
COLUMNS = ReviewColumns("reviewerID", "asin", "overall", "unixReviewTime", "reviewText", "summary")
META_FIELDS = ("asin",)


def _review_time(obj: dict) -> int:
    if "unixReviewTime" in obj:
        return seconds(obj["unixReviewTime"], "unixReviewTime")
    day = obj.get("reviewTime")
    if not isinstance(day, str):
        raise Rejected("missing_field", "no 'unixReviewTime' (nor 'reviewTime')")
    try:
        return int(datetime.strptime(day, "%m %d, %Y").replace(tzinfo=UTC).timestamp())
    except ValueError:
        raise Rejected("bad_timestamp", f"reviewTime={day[:40]!r}, expected 'MM DD, YYYY'") from None


def review_row(obj: dict) -> tuple:
    try:
        user, item, rating = obj["reviewerID"], obj["asin"], obj["overall"]
    except KeyError as err:
        raise Rejected("missing_field", f"no {err.args[0]!r}") from None
    return (ident(user, "reviewerID"), ident(item, "asin"), number(rating, "overall", "bad_rating"),
            _review_time(obj), text(obj.get("reviewText")), text(obj.get("summary")))


def meta_row(obj: dict) -> tuple:
    if "asin" not in obj:
        raise Rejected("missing_field", "no 'asin'")
    title, raw_title, price = title_and_checks(obj.get("title"), obj.get("price"))
    return (ident(obj["asin"], "asin"), title,
            attributes(obj.get("categories"), labelled("brand", obj.get("brand"))),
            describe(obj.get("description")), raw_title, price)


read_interactions, read_items = make_readers(
    NAME, meta_row, columns=COLUMNS, meta_fields=META_FIELDS, default_scale=DEFAULT_SCALE, review_row=review_row,
    loose=ast.literal_eval, item_fields=ITEM_CHECK_FIELDS)
