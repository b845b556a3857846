"""Yelp Open Dataset (``yelp_academic_dataset_review.json`` / ``..._business.json``).

Both files are strict JSON lines. Mapping: ``user_id`` → user_id, ``business_id`` → item_id,
``stars`` → rating (1–5, step 1), ``date`` ("YYYY-MM-DD HH:MM:SS", or a bare date in old dumps; read
as UTC, since the dump gives no zone) → Unix seconds, ``text`` → review; Yelp reviews have no summary.

Business: ``name`` → title; ``categories`` (one comma-separated string in current dumps, a list in
old ones, or null) → attributes; the description is built, since Yelp has none: "A business in
Phoenix, AZ. Categories: Mexican, Bars." The business's own ``stars`` and ``review_count`` are left
out (they summarise reviews the model is asked to predict), and so is the ``attributes`` dict, whose
values are Python-literal strings ("u'free'") of little use in a prompt.
"""

from __future__ import annotations

from datetime import datetime

from reczero.data.schema import RatingScale
from reczero.data.sources._fields import (
    LATEST_SECONDS,
    MAX_TITLE_CHARS,
    Rejected,
    attributes,
    clean_text,
    ident,
    number,
    text,
)
from reczero.data.sources._jsonl import ReviewColumns, make_readers

NAME = "yelp"
DEFAULT_SCALE = RatingScale(1.0, 5.0, 1.0)
COLUMNS = ReviewColumns("user_id", "business_id", "stars", "date", "text", None, date_format="%Y-%m-%d %H:%M:%S")
META_FIELDS = ("business_id",)
_EPOCH = datetime(1970, 1, 1)


def unix_seconds(date: object) -> int:
    """``"2016-03-09 21:43:18"`` (UTC) → 1457559798."""
    if type(date) is not str:
        raise Rejected("bad_timestamp" if date is not None else "missing_field", f"date={date!r}, expected 'YYYY-MM-DD HH:MM:SS'")
    try:
        when = datetime.fromisoformat(date)
    except ValueError:
        raise Rejected("bad_timestamp", f"date={date[:40]!r}, expected 'YYYY-MM-DD HH:MM:SS'") from None
    if when.tzinfo is not None:                     # not in Yelp dumps, but honour an explicit zone
        when = when.replace(tzinfo=None) - when.utcoffset()
    t = int((when - _EPOCH).total_seconds())
    if not 0 <= t <= LATEST_SECONDS:
        raise Rejected("bad_timestamp", f"date={date!r} is before 1970 or after 2100")
    return t


def review_row(obj: dict) -> tuple:
    try:
        user, item, rating, date = obj["user_id"], obj["business_id"], obj["stars"], obj["date"]
    except KeyError as err:
        raise Rejected("missing_field", f"no {err.args[0]!r}") from None
    return (ident(user, "user_id"), ident(item, "business_id"), number(rating, "stars", "bad_rating"),
            unix_seconds(date), text(obj.get("text")), None)


def categories(value: object) -> list[str]:
    if isinstance(value, str):
        value = value.split(",")
    return attributes(value)


def place(obj: dict) -> str | None:
    where = ", ".join(v.strip() for v in (obj.get("city"), obj.get("state")) if isinstance(v, str) and v.strip())
    return where or None


def meta_row(obj: dict) -> tuple:
    if "business_id" not in obj:
        raise Rejected("missing_field", "no 'business_id'")
    cats = categories(obj.get("categories"))
    where = place(obj)
    description = " ".join(filter(None, [f"A business in {where}." if where else None,
                                         f"Categories: {', '.join(cats)}." if cats else None]))
    return (ident(obj["business_id"], "business_id"), clean_text(obj.get("name"), MAX_TITLE_CHARS), cats,
            clean_text(description, 1_000))


read_interactions, read_items = make_readers(
    NAME, meta_row, columns=COLUMNS, meta_fields=META_FIELDS, default_scale=DEFAULT_SCALE, review_row=review_row)
