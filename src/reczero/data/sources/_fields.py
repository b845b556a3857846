"""Field helpers shared by the JSON-lines readers: each returns a clean value or raises
:class:`Rejected` with a stable reason key and a detail naming the field.

Free text from scraped pages (Amazon 2018 titles hold whole ``<script>`` blocks) is cleaned only when
it contains ``<`` or ``&``, so the common case costs one scan; every display text is bounded.
"""

from __future__ import annotations

import html
import math
import re
from typing import Any

MAX_TITLE_CHARS = 300
MAX_DESCRIPTION_CHARS = 2_000
RAW_TITLE_CHARS = 2_000          # enough to see a tag; a page of junk is not kept whole
LATEST_SECONDS = 4_102_444_800          # 2100-01-01: later "seconds" are milliseconds or garbage


class Rejected(Exception):
    """Raised by a row function: the record is not kept. ``reason`` is counted, ``detail`` explains."""

    def __init__(self, reason: str, detail: str):
        super().__init__(reason, detail)
        self.reason = reason
        self.detail = detail


def ident(value: Any, name: str) -> str:
    if type(value) is str and value:
        return value
    if value is None or value == "":
        raise Rejected("missing_field", f"{name} is empty")
    if type(value) is int:
        return str(value)
    raise Rejected("bad_id", f"{name} is {type(value).__name__}, expected a string")


def number(value: Any, name: str, reason: str) -> float:
    if type(value) is float or type(value) is int:
        x = float(value)
    elif type(value) is str:
        try:
            x = float(value.replace(",", ""))
        except ValueError:
            raise Rejected(reason, f"{name}={value[:40]!r} is not a number") from None
    elif value is None:
        raise Rejected("missing_field", f"{name} is null")
    else:
        raise Rejected(reason, f"{name} is {type(value).__name__}, expected a number")
    if not math.isfinite(x):
        raise Rejected(reason, f"{name}={value!r} is not finite")
    return x


def seconds(value: Any, name: str, per_second: int = 1) -> int:
    """Unix seconds from a number of ``1/per_second`` seconds (1000 for milliseconds)."""
    x = number(value, name, "bad_timestamp")
    t = int(x // per_second)
    if t < 0 or t > LATEST_SECONDS:
        unit = "seconds" if per_second == 1 else "milliseconds"
        raise Rejected("bad_timestamp", f"{name}={value!r} is not a plausible Unix time in {unit}")
    return t


def text(value: Any) -> str | None:
    """A nullable free-text field: strings kept (empty → null), other scalars as text."""
    if type(value) is str:
        return value or None
    if value is None:
        return None
    if isinstance(value, list):
        return " ".join(str(v) for v in value if v) or None
    return str(value)


_SCRIPT = re.compile(r"<(script|style)\b.*?(</\1\s*>|$)", re.IGNORECASE | re.DOTALL)
_TAG = re.compile(r"<[^>]*>")


def clean_text(value: Any, limit: int) -> str | None:
    """Display text from scraped HTML: scripts and tags removed, entities unescaped, spaces
    collapsed, at most ``limit`` characters (cut at a word)."""
    s = text(value)
    if s is None:
        return None
    s = s[:limit * 16]                      # bounds the work on a page of junk; tags shrink it anyway
    if "<" in s:
        if "<s" in s or "<S" in s:
            s = _SCRIPT.sub(" ", s)
        s = _TAG.sub(" ", s)
    if "&" in s:
        s = html.unescape(s)
    s = " ".join(s.split())                 # collapse all whitespace (also U+00A0 from &nbsp;)
    if len(s) > limit:
        s = s[:limit].rsplit(" ", 1)[0] + "…"
    return s or None


def attributes(*groups: Any) -> list[str]:
    """Flatten strings / lists / lists of lists into a deduplicated list (first occurrence kept)."""
    out: dict[str, None] = {}

    def add(v: Any) -> None:
        if isinstance(v, str):
            v = v.strip()
            if v and len(v) <= MAX_TITLE_CHARS:
                out.setdefault(html.unescape(v) if "&" in v else v)
        elif isinstance(v, list | tuple):
            for x in v:
                add(x)

    for g in groups:
        add(g)
    return list(out)


def describe(*parts: Any) -> str | None:
    """Description paragraphs, feature bullets, ...: one bounded clean text."""
    joined = " ".join(p for p in map(text, parts) if p)
    return clean_text(joined, MAX_DESCRIPTION_CHARS)


def labelled(label: str, value: Any) -> str | None:
    """An attribute like ``brand: Sony`` from a short string field, or None."""
    if isinstance(value, str):
        value = clean_text(value, 80)
        if value:
            return f"{label}: {value}"
    return None


def title_and_checks(raw: Any, price: Any) -> tuple[str | None, str | None, str | None]:
    """``(title, raw_title, price)`` of an Amazon meta record: the clean title, then the optional
    check columns that only ``--item-filter`` reads (:data:`reczero.data.filters.ITEM_CHECK_FIELDS`):
    the title as the dump holds it where cleaning changed it (so that HTML in it is still seen; at
    most ``RAW_TITLE_CHARS``), and the price as text (null when absent or empty)."""
    title = clean_text(raw, MAX_TITLE_CHARS)
    return (title, raw[:RAW_TITLE_CHARS] if type(raw) is str and raw != title else None,
            None if price is None or price == "" else str(price))
