"""Small raw dumps in each real format (Amazon 2014/2018/2023, Yelp), written by the tests.

Every writer ``write_<source>(directory, gz=False, truncate=False) -> RawDump`` writes a review file
and a meta file with the same story, encoded the way that dump encodes it, and returns their paths
together with what a correct reader must make of them, declared here line by line (not computed by
the code under test):

* 9 good reviews by 4 users on 4 items, one of them with non-UTF-8 bytes in its text (kept, with
  U+FFFD), one a **duplicate (user, item) pair** (U1, B001 again, later: kept by the reader, dropped
  by ``prepare``'s dedupe), one on item ``B009`` that has **no meta** (dangling);
* bad review lines: a malformed (cut) JSON line, a line missing its user, a rating of 7, a rating
  "five", an unreadable time, a JSON array instead of an object, plus a blank line (not a record);
* meta: 4 good items (``B004`` has no reviews), one with HTML/script junk in its title, one with
  non-UTF-8 bytes, a duplicate item line, a malformed line and a line missing its item id.

``gz=True`` gzips both files; ``truncate=True`` (implies ``gz``) cuts the review gzip in the middle
of its last line, at a zlib sync-flush point, so exactly that line is incomplete: a reader must yield
every other record and reject line ``RawDump.truncated_line`` as ``truncated``.
Everything is deterministic: same bytes on every call.
"""

from __future__ import annotations

import ast
import gzip
import json
import zlib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

BAD_BYTES = b"caf\xe9\xff"                    # latin-1 e-acute then a byte invalid in any UTF-8
PLACEHOLDER = "@@BADBYTES@@"


@dataclass
class RawDump:
    """The two files written and what a reader must make of them (line numbers are 1-based).

    ``reviews_kept`` is what ``read_interactions`` yields; ``prepare`` then also drops the later
    ``duplicate_pair`` review (line ``duplicate_line``, reason duplicate) and the review of
    ``dangling_item`` (line ``dangling_line``, unknown item): ``prepared_kept`` are left.
    """

    reviews: Path
    meta: Path
    reviews_kept: list[tuple[str, str, float, int]]   # (user, item, rating, Unix seconds), file order
    reviews_rejected: dict[int, str]                  # line number -> reason
    items_kept: list[str]                             # item ids, file order
    items_rejected: dict[int, str]
    duplicate_pair: tuple[str, str] = ("U1", "B001")
    dangling_item: str = "B009"
    non_utf8_user_item: tuple[str, str] = ("U2", "B001")
    truncated_line: int | None = None
    duplicate_line: int = 0
    dangling_line: int = 0
    lines: dict[str, list[bytes]] = field(default_factory=dict, repr=False)

    @property
    def prepared_kept(self) -> int:
        return len(self.reviews_kept) - 2


# (user, item, rating, seconds, review text, summary) — the good reviews, in file order
GOOD = [
    ("U1", "B001", 5.0, 1_400_000_000, "Great story, loved the ending.", "Loved it"),
    ("U1", "B002", 3.0, 1_400_086_400, "It was fine, a bit long.", "Fine"),
    ("U2", "B001", 4.0, 1_400_172_800, f"Read it in a {PLACEHOLDER} over two days.", "Nice"),
    ("U2", "B003", 2.0, 1_400_259_200, "Did not hold my attention.", "Meh"),
    ("U3", "B002", 1.0, 1_400_345_600, "Fell apart after a week.", "Broken"),
    ("U3", "B009", 4.0, 1_400_432_000, "Good value, no listing for it though.", "Good"),
    ("U1", "B001", 2.0, 1_400_518_400, "Second copy was worse.", "Worse"),
    ("U4", "B003", 5.0, 1_400_604_800, "Exactly what I wanted.", "Perfect"),
    ("U4", "B002", 4.0, 1_400_691_200, "Solid, would buy again, it is a long review line.", "Solid"),
]
ITEMS = [  # (item, title, categories, description)
    ("B001", "The Long Road", ["Books", "Fiction"], "A novel about a journey."),
    ("B002", '<span class="t">Cozy &amp; Warm</span><script>var a = "x";</script> Blanket', ["Home", "Bedding"],
     "<p>Soft&nbsp;fleece.</p>"),
    ("B003", f"Kettle {PLACEHOLDER}", ["Kitchen"], "Boils water."),
    ("B004", "Unreviewed Lamp", ["Home", "Lighting"], "Nobody reviewed this."),
]
CLEAN_TITLES = {"B001": "The Long Road", "B002": "Cozy & Warm Blanket", "B003": "Kettle caf\ufffd\ufffd",
                "B004": "Unreviewed Lamp"}


def _iso(seconds: int) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%d %H:%M:%S")


def _bytes(obj: dict | str) -> bytes:
    raw = obj if isinstance(obj, str) else json.dumps(obj)
    return raw.encode().replace(PLACEHOLDER.encode(), BAD_BYTES)


def _bad_reviews(user_key: str, item_key: str, rating_key: str, time_key: str, time_value) -> list[tuple[bytes, str]]:
    """The bad review lines shared by all formats, each with the reason a reader must give."""
    def rec(**over) -> dict:
        base = {user_key: "U5", item_key: "B001", rating_key: 4.0, time_key: time_value}
        base.update(over)
        return {k: v for k, v in base.items() if v is not None}
    return [
        (_bytes(rec())[:-9], "malformed_json"),
        (_bytes({k: v for k, v in rec().items() if k != user_key}), "missing_field"),
        (_bytes(rec(**{rating_key: 7.0})), "bad_rating"),
        (_bytes(rec(**{rating_key: "five"})), "bad_rating"),
        (_bytes(rec(**{time_key: "yesterday"})), "bad_timestamp"),
        (b"[1, 2, 3]", "not_a_record"),
    ]


def _assemble(good: list[bytes], bad: list[tuple[bytes, str]]) -> tuple[list[bytes], dict[int, str], list[int]]:
    """Good lines with a blank line after the 3rd and the bad ones after the 4th; the last good line
    stays last (it is the one ``truncate`` cuts). Returns the lines, {line number: reason} and the
    line numbers of the good lines."""
    lines: list[bytes] = []
    rejected: dict[int, str] = {}
    numbers: list[int] = []
    for i, line in enumerate(good):
        lines.append(line)
        numbers.append(len(lines))
        if i == 2:
            lines.append(b"   ")
        if i == 3:
            for b, reason in bad:
                lines.append(b)
                rejected[len(lines)] = reason
    return lines, rejected, numbers


def _write(path: Path, lines: list[bytes], gz: bool, truncate: bool) -> Path:
    data = b"\n".join(lines) + b"\n"
    if truncate:
        cut = len(data) - len(lines[-1]) // 2 - 1      # the middle of the last line
        z = zlib.compressobj(9, zlib.DEFLATED, 31)
        path.write_bytes(z.compress(data[:cut]) + z.flush(zlib.Z_SYNC_FLUSH))   # no end, no trailer
    elif gz:
        path.write_bytes(gzip.compress(data, mtime=0))
    else:
        path.write_bytes(data)
    return path


def _dump(directory: Path, names: tuple[str, str], review_lines: list[bytes], bad_reviews, meta_lines: list[bytes],
          bad_meta, gz: bool, truncate: bool) -> RawDump:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    gz = gz or truncate
    suffix = ".gz" if gz else ""
    lines, rejected, numbers = _assemble(review_lines, bad_reviews)
    kept = [(u, i, r, t) for u, i, r, t, _, _ in GOOD]
    truncated_line = None
    if truncate:
        kept.pop()
        truncated_line = len(lines)
        rejected[truncated_line] = "truncated"
    mlines, mrejected, _ = _assemble(meta_lines, bad_meta)
    return RawDump(
        reviews=_write(directory / (names[0] + suffix), lines, gz, truncate),
        meta=_write(directory / (names[1] + suffix), mlines, gz, False),
        reviews_kept=kept, reviews_rejected=rejected, items_kept=[it[0] for it in ITEMS],
        items_rejected=mrejected, truncated_line=truncated_line, duplicate_line=numbers[6], dangling_line=numbers[5],
        lines={"reviews": lines, "meta": mlines})


def _meta_bad(id_key: str, literal: bool = False) -> list[tuple[bytes, str]]:
    enc = (lambda d: _bytes(repr(d))) if literal else _bytes
    return [
        (enc({id_key: "B002", "title": "Same item again"}), "duplicate_item"),
        (enc({id_key: "B005", "title": "Cut"})[:-6], "malformed_json"),
        (enc({"title": "No id"}), "missing_field"),
    ]


def write_amazon2014(directory: Path, gz: bool = False, truncate: bool = False) -> RawDump:
    """``reviews_Books.json`` (JSON, one line in Python-literal syntax) and ``meta_Books.json``
    (Python dict literals, single quotes)."""
    reviews = []
    for n, (u, i, r, t, text, summary) in enumerate(GOOD):
        rec = {"reviewerID": u, "asin": i, "reviewerName": "A reader", "helpful": [0, 0], "reviewText": text,
               "overall": r, "summary": summary, "unixReviewTime": t,
               "reviewTime": datetime.fromtimestamp(t, UTC).strftime("%m %d, %Y")}
        reviews.append(_bytes(repr(rec)) if n == 1 else _bytes(rec))    # loose line: a literal
    meta = [_bytes(repr({"asin": i, "title": title, "categories": [cats, [cats[0]]], "description": desc,
                         "price": 9.99, "salesRank": {cats[0]: 1000}, "related": {"also_bought": ["B001"]},
                         "brand": "Acme"}))
            for i, title, cats, desc in ITEMS]
    assert ast.literal_eval(meta[0].decode())["asin"] == "B001"
    return _dump(directory, ("reviews_Books.json", "meta_Books.json"), reviews,
                 _bad_reviews("reviewerID", "asin", "overall", "unixReviewTime", 1_400_000_000),
                 meta, _meta_bad("asin", literal=True), gz, truncate)


def write_amazon2018(directory: Path, gz: bool = False, truncate: bool = False) -> RawDump:
    """``Books.json`` (``vote`` "1,234", a rating-only line without ``reviewText``) and
    ``meta_Books.json`` (description lists, HTML junk, ``price`` strings)."""
    reviews = []
    for n, (u, i, r, t, text, summary) in enumerate(GOOD):
        rec = {"overall": r, "vote": "1,234", "verified": True, "reviewTime": "05 13, 2014", "reviewerID": u,
               "asin": i, "style": {"Format:": " Paperback"}, "reviewerName": "A reader", "reviewText": text,
               "summary": summary, "unixReviewTime": t}
        if n == 4:
            del rec["reviewText"], rec["vote"]
        reviews.append(_bytes(rec))
    meta = [_bytes({"category": cats, "tech1": "", "description": [desc, "More."], "fit": "", "title": title,
                    "also_buy": ["B001"], "feature": ["Feature one"], "brand": "Acme", "rank": "1,000 in Books",
                    "main_cat": cats[0], "price": "$9.99" if n % 2 else "", "asin": i})
            for n, (i, title, cats, desc) in enumerate(ITEMS)]
    return _dump(directory, ("Books.json", "meta_Books.json"), reviews,
                 _bad_reviews("reviewerID", "asin", "overall", "unixReviewTime", 1_400_000_000),
                 meta, _meta_bad("asin"), gz, truncate)


def write_amazon2023(directory: Path, gz: bool = False, truncate: bool = False) -> RawDump:
    """``Books.jsonl`` (``timestamp`` in milliseconds, item = ``parent_asin``) and ``meta_Books.jsonl``."""
    reviews = [_bytes({"rating": r, "title": summary, "text": text, "images": [], "asin": "X" + i,
                       "parent_asin": i, "user_id": u, "timestamp": t * 1000 + 789, "helpful_vote": 2,
                       "verified_purchase": True})
               for u, i, r, t, text, summary in GOOD]
    meta = [_bytes({"main_category": cats[0], "title": title, "average_rating": 4.5, "rating_number": 10,
                    "features": ["Feature one"], "description": [desc], "price": None, "images": [],
                    "videos": [], "store": "Acme", "categories": cats, "details": {"Pages": "300"},
                    "parent_asin": i, "bought_together": None})
            for i, title, cats, desc in ITEMS]
    return _dump(directory, ("Books.jsonl", "meta_Books.jsonl"), reviews,
                 _bad_reviews("user_id", "parent_asin", "rating", "timestamp", 1_400_000_000_000),
                 meta, _meta_bad("parent_asin"), gz, truncate)


def write_yelp(directory: Path, gz: bool = False, truncate: bool = False) -> RawDump:
    """``yelp_academic_dataset_review.json`` (``date`` strings) and ``..._business.json``
    (``categories`` as one comma-separated string, and null for one business)."""
    reviews = [_bytes({"review_id": f"R{n}", "user_id": u, "business_id": i, "stars": int(r), "useful": 0,
                       "funny": 0, "cool": 0, "text": text, "date": _iso(t)})
               for n, (u, i, r, t, text, _) in enumerate(GOOD)]
    meta = [_bytes({"business_id": i, "name": title, "address": "1 Main St", "city": "Phoenix", "state": "AZ",
                    "postal_code": "85001", "latitude": 33.4, "longitude": -112.0, "stars": 4.0,
                    "review_count": 10, "is_open": 1, "attributes": None if n == 0 else {"WiFi": "u'free'"},
                    "categories": None if n == 3 else ", ".join(cats), "hours": None})
            for n, (i, title, cats, _) in enumerate(ITEMS)]
    return _dump(directory, ("yelp_academic_dataset_review.json", "yelp_academic_dataset_business.json"), reviews,
                 _bad_reviews("user_id", "business_id", "stars", "date", "2014-05-13 10:00:00"),
                 meta, _meta_bad("business_id"), gz, truncate)


WRITERS = {"amazon2014": write_amazon2014, "amazon2018": write_amazon2018, "amazon2023": write_amazon2023,
           "yelp": write_yelp}
