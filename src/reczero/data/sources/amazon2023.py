"""Amazon reviews 2023 (Hou et al., McAuley Lab; ``<Category>.jsonl.gz`` / ``meta_<Category>.jsonl.gz``).

Both files are strict JSON lines. The item is the **parent** ASIN (``parent_asin``): variants of one
product share its reviews, and the meta file is keyed by it; ``asin`` (the variant) is not used.
Mapping: ``user_id`` → user_id, ``parent_asin`` → item_id, ``rating`` → rating (1–5, step 1),
``timestamp`` in **milliseconds** → Unix seconds (floor), ``text`` → review, ``title`` → summary.
``helpful_vote``, ``verified_purchase`` and ``images`` are not carried.

Meta: ``title``; attributes from ``main_category`` and ``categories`` (deduplicated) plus
``store: X``; description from ``description`` (a list of paragraphs) followed by ``features``,
cleaned of HTML and bounded. ``average_rating`` and ``rating_number`` are deliberately left out:
they summarise every review in the dump, including those the model will be asked to predict.

For ``--item-filter`` (the R2ec reference's item rules, :mod:`reczero.data.filters`) each item also
carries the optional check columns: ``raw_title``, the title as the dump holds it where cleaning
changed it (so that HTML in it is still seen), and ``price`` as text (a number, a string such as
``"$5"`` or ``"None"``, null when absent), which the filter alone reads
(:func:`~reczero.data.sources._fields.title_and_checks`, shared with the 2014 and 2018 readers).
"""

from __future__ import annotations

from reczero.data.filters import ITEM_CHECK_FIELDS
from reczero.data.schema import RatingScale
from reczero.data.sources._fields import Rejected, attributes, describe, ident, labelled, title_and_checks
from reczero.data.sources._jsonl import ReviewColumns, make_readers

NAME = "amazon2023"
DEFAULT_SCALE = RatingScale(1.0, 5.0, 1.0)
COLUMNS = ReviewColumns("user_id", "parent_asin", "rating", "timestamp", "text", "title", per_second=1000)
META_FIELDS = ("parent_asin",)


def meta_row(obj: dict) -> tuple:
    if "parent_asin" not in obj:
        raise Rejected("missing_field", "no 'parent_asin'")
    title, raw_title, price = title_and_checks(obj.get("title"), obj.get("price"))
    return (ident(obj["parent_asin"], "parent_asin"), title,
            attributes(obj.get("main_category"), obj.get("categories"), labelled("store", obj.get("store"))),
            describe(obj.get("description"), obj.get("features")), raw_title, price)


read_interactions, read_items = make_readers(
    NAME, meta_row, columns=COLUMNS, meta_fields=META_FIELDS, default_scale=DEFAULT_SCALE,
    item_fields=ITEM_CHECK_FIELDS)
