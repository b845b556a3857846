"""The tiny base's text: pretraining documents and format warm-up examples, from a prepared dataset.

What this module chose, and why:

* **Pretraining documents look like the prompt.** A model that has only read plain text in the
  prompt's own layout learns to read its prompt (a trial here: pretraining on the dataset's text is
  what made a tiny model's rating depend on the prompt at all). Two kinds of documents, in the
  prompt's line formats (``prompts.history_line`` and friends):

  - *user pages*: one user's train-split interactions, oldest first, as "- Title [attributes]
    rated 4: review" lines, in chunks of ``prompt_history`` lines, each chunk closing with "User
    average: 3.7 (12 ratings)" over all of the user's interactions so far;
  - *item pages*: the item block of the prompt (title, attributes, description) with its
    train-split reviews, in chunks of ``prompt_item_reviews`` (at least 5), each closing with
    "Item average: …";
  - *ratings lists* (``rating_lists``): the same pages without the review text, twice as long.

  What a tiny model learns from them (``bench/base_levers.py``): to expect a rating near the
  ratings above it in the page (the expected next rating of an item page moves by ~0.7 between
  four earlier 1s and four earlier 5s), but not to use a shown average (it moves by 0.00 between
  2.0 and 4.5). Putting the running average at the *top* of each chunk, tried here, did not
  teach the average and lost the first (0.67 -> -0.04).

* **Only training targets are text.** The interactions are exactly the ``train.parquet`` targets
  (their review text joined from ``interactions.parquet``); validation and test targets are removed
  by key even if a split were to overlap, and never appear in any document.
* **Warm-up examples teach the format and reading, not the task**: the real prompt of a training
  sample and an answer whose steps quote that prompt (``quoting_parts``: the average lines, the
  item's attributes and quality word, the averages again next to ``<rate>``); then ``<rate>`` and
  the sample's rating, which the trainer keeps out of the loss. No step holds a sum, a stance or
  anything not in the prompt, so the rating prior learned in pretraining is left alone. (Steps that
  describe another, randomly drawn sample, the first warm-up, and quoting in the analyses only were
  measured against this and lost: bench/RESULTS.md, full demo session 5.)
"""

from __future__ import annotations

import logging
import random
from pathlib import Path
from typing import Any

from reczero.data import schema
from reczero.lexicon import quality_word
from reczero.prompts import (
    average_line,
    format_answer,
    format_average,
    format_rating,
    history_line,
    item_label,
    item_review_line,
)

log = logging.getLogger(__name__)

_KEY = ["user_id", "item_id", "timestamp"]


def training_interactions(data_dir: str | Path):
    """The train split's targets with their review text, items joined: a pandas DataFrame.

    Columns: user_id, item_id, rating, timestamp, review, title, attributes, description.
    """
    import pandas as pd
    import pyarrow.parquet as pq

    data_dir = Path(data_dir)
    schema.read_manifest(data_dir)
    train = pq.read_table(schema.split_path(data_dir, "train"), columns=[*_KEY, "rating"]).to_pandas()
    held_out = [pq.read_table(schema.split_path(data_dir, s), columns=_KEY).to_pandas()
                for s in ("valid", "test") if schema.split_path(data_dir, s).is_file()]
    if held_out:
        held = pd.concat(held_out).drop_duplicates()
        before = len(train)
        train = train.merge(held, on=_KEY, how="left", indicator=True)
        train = train[train["_merge"] == "left_only"].drop(columns="_merge")
        if len(train) != before:
            log.warning("%s: %d train targets are also valid/test targets; left out of the base's text",
                        data_dir, before - len(train))
    inter_path = data_dir / schema.INTERACTIONS
    if inter_path.is_file():
        reviews = pq.read_table(inter_path, columns=[*_KEY, "review"]).to_pandas().drop_duplicates(_KEY)
        train = train.merge(reviews, on=_KEY, how="left")
    else:
        log.warning("%s: no %s; pretraining documents carry ratings without review text", data_dir, schema.INTERACTIONS)
        train["review"] = None
    items = pq.read_table(data_dir / schema.ITEMS).to_pandas()
    train = train.merge(items, on="item_id", how="left")
    return train.sort_values(["timestamp", "user_id", "item_id"], kind="stable").reset_index(drop=True)


def _chunks(rows: list, size: int):
    size = max(size, 1)
    return (rows[i:i + size] for i in range(0, len(rows), size))


def user_pages(train, opts: Any, scale: schema.RatingScale) -> list[str]:
    """One document per chunk of ``opts.prompt_history`` consecutive interactions of a user: the
    chunk's lines, then the user's average after them."""
    docs = []
    for _, group in train.groupby("user_id", sort=True):
        rows = group.to_dict("records")
        total, n = 0.0, 0
        for chunk in _chunks(rows, opts.prompt_history):
            lines = ["User history (oldest first):"]
            for row in chunk:
                lines.append(history_line(row, opts.prompt_snippet_chars, scale))
                total, n = total + row["rating"], n + 1
            lines.append(average_line("User", total / n, n))
            docs.append("\n".join(lines))
    return docs


def _item_head(title: Any, attributes: Any, description: Any) -> list[str]:
    head = [f"Target item: {item_label(title, attributes)}"]
    if description:
        head.append(f"Description: {description}")
    return head


def item_pages(train, items, opts: Any, scale: schema.RatingScale) -> list[str]:
    """One document per chunk of an item's train reviews (an item without any gets one page): the
    item, the chunk's reviews, the item's average after them."""
    by_item = {item_id: g.to_dict("records") for item_id, g in train.groupby("item_id", sort=True)}
    docs = []
    for item in items.to_dict("records"):
        head = _item_head(item["title"], item["attributes"], item.get("description"))
        rows = by_item.get(item["item_id"], [])
        if not rows:
            docs.append("\n".join([*head, average_line("Item", None, 0)]))
        total, n = 0.0, 0
        for chunk in _chunks(rows, max(opts.prompt_item_reviews, 5)):
            lines = [*head, "Earlier reviews of the item (oldest first):"]
            for row in chunk:
                lines.append(item_review_line(row, opts.prompt_snippet_chars, scale))
                total, n = total + row["rating"], n + 1
            lines.append(average_line("Item", total / n, n))
            docs.append("\n".join(lines))
    return docs


def rating_lists(train, items, opts: Any, scale: schema.RatingScale) -> list[str]:
    """User and item pages without the review text (a public ratings list): dense in ratings and
    averages, so a tiny model sees many more (average, next rating) pairs per token."""
    bare = train.assign(review=None)
    wide = type(opts)(**{**vars(opts), "prompt_history": 2 * opts.prompt_history,
                         "prompt_item_reviews": 2 * max(opts.prompt_item_reviews, 5)})
    return user_pages(bare, wide, scale) + item_pages(bare, items[items["item_id"].isin(bare["item_id"])], wide, scale)


def pretraining_documents(data_dir: str | Path, opts: Any, seed: int = 0) -> list[str]:
    """User pages and item pages of the training split (``opts.rating_lists``: also without review
    text), shuffled (``seed``)."""
    import pyarrow.parquet as pq

    scale = schema.rating_scale(data_dir)
    train = training_interactions(data_dir)
    items = pq.read_table(Path(data_dir) / schema.ITEMS).to_pandas()
    docs = user_pages(train, opts, scale) + item_pages(train, items, opts, scale)
    if getattr(opts, "rating_lists", False):
        docs += rating_lists(train, items, opts, scale)
    random.Random(seed).shuffle(docs)
    log.info("pretraining text: %d documents from %d training interactions and %d items",
             len(docs), len(train), len(items))
    return docs


# ----------------------------------------------------------------------------------------------
# Format warm-up
# ----------------------------------------------------------------------------------------------


def quoting_parts(sample: dict[str, Any], template: str) -> dict[str, str]:
    """Step texts that quote the sample's own prompt and compute nothing: its average lines, the
    item's attributes and the description's quality word, and the two averages again in the step
    next to ``<rate>``.

    A pretrained instruct model can copy a number out of its prompt; the tiny base cannot (a
    student distilled from it quoted the user's average exactly 8% of the time, bench/RESULTS.md),
    so this teaches reading, never the task: no stance, no sum, and the rating stays out of the loss.
    """
    history = sample.get("user_history")
    has_user = format_average(sample.get("user_avg")) is not None or (history is not None and len(history) > 0)
    user = f"{average_line('User', sample.get('user_avg'), sample.get('user_n'))}." if has_user else "no history yet."
    attrs = [str(a) for a in (sample.get("item_attributes") if sample.get("item_attributes") is not None else [])]
    quality = quality_word(sample.get("item_description")) or "no quality word"
    item = (f"{average_line('Item', sample.get('item_avg'), sample.get('item_n'))}. "
            f"{', '.join(attrs[:3]) or 'nothing listed'}; {quality}.")
    step = (f"user {format_average(sample.get('user_avg')) or 'none'}, "
            f"item {format_average(sample.get('item_avg')) or 'none'}.")
    if template == "structured":
        return {"analyze user": user, "analyze item": item, "match": step}
    if template == "think-answer":
        return {"think": f"{user} {item} {step}"}
    return {}


def prior_text(sample: dict[str, Any], opts: Any, scale: schema.RatingScale) -> str:
    """A user page of the sample's visible history ending in "- Target [attributes] rated ": the
    pretraining layout, so the next token is the model's rating prior (no answer format needed)."""
    history = list(sample.get("user_history") if sample.get("user_history") is not None else [])
    keep = opts.prompt_history - 1   # a user page's chunk holds prompt_history lines; the target is the last
    history = history[-keep:] if keep > 0 else []
    lines = ["User history (oldest first):", *(history_line(h, opts.prompt_snippet_chars, scale) for h in history)]
    lines.append(f"- {item_label(sample.get('item_title'), sample.get('item_attributes'))} rated ")
    return "\n".join(lines)


def item_prior_text(sample: dict[str, Any], opts: Any, scale: schema.RatingScale) -> str:
    """An item page of the sample's target item with its visible earlier reviews, ending in
    "- rated ": the item's half of the rating prior, in the pretraining layout."""
    reviews = list(sample.get("item_history") if sample.get("item_history") is not None else [])
    keep = max(opts.prompt_item_reviews, 5) - 1   # an item page's chunk size, less the target's line
    reviews = reviews[-keep:] if opts.prompt_item_reviews > 0 else []
    lines = [*_item_head(sample.get("item_title"), sample.get("item_attributes"), sample.get("item_description")),
             "Earlier reviews of the item (oldest first):",
             *(item_review_line(r, opts.prompt_snippet_chars, scale) for r in reviews), "- rated "]
    return "\n".join(lines)


def warmup_answers(samples: list[dict[str, Any]], template: str, scale: schema.RatingScale) -> list[tuple[str, str, str]]:
    """For each sample, its warm-up answer in ``template`` with steps that quote its prompt
    (``quoting_parts``): (text before the rating, the rating as written, text after it)."""
    out = []
    for sample in samples:
        answer = format_answer(template, quoting_parts(sample, template), "\x00", scale)
        before, after = answer.split("\x00")
        out.append((before, format_rating(sample["rating"], scale), after))
    return out


# ----------------------------------------------------------------------------------------------
# The R2ec format warm-up (``reczero base --format-warmup r2ec``)
# ----------------------------------------------------------------------------------------------

#: How many of the newest history items the R2ec warm-up's reasoning quotes.
R2EC_QUOTED_ITEMS = 3


def r2ec_reasoning(sample: dict[str, Any], opts: Any) -> str:
    """A short reasoning for R2ec's user prompt that quotes it and computes nothing: the newest
    :data:`R2EC_QUOTED_ITEMS` history items, newest first, each by its attributes when the prompt
    shows them (``opts.history_attributes``) and by its title otherwise.

    >>> r2ec_reasoning({"user_history": [{"title": "A", "attributes": ["war"]},
    ...                                   {"title": "B", "attributes": ["comedy", "sad"]}]},
    ...                type("O", (), {"history_window": 20, "history_attributes": True})())
    'Latest: comedy, sad; war.'

    The newest lines are the ones a prompt over its token budget keeps, so the quote is always in
    the prompt. Which items the user will want next is left to RecPO to learn."""
    history = list(sample.get("user_history") if sample.get("user_history") is not None else [])
    history = history[-opts.history_window:] if opts.history_window > 0 else []
    if not history:
        return "No history yet."
    quoted = []
    for entry in reversed(history[-R2EC_QUOTED_ITEMS:]):
        attrs = [str(a) for a in (entry.get("attributes") if entry.get("attributes") is not None else [])]
        quoted.append(", ".join(attrs) if opts.history_attributes and attrs else item_label(entry.get("title"), None))
    return "Latest: " + "; ".join(quoted) + "."


def _label_words(entry: dict[str, Any], attributes: bool = True) -> str:
    attrs = [str(a) for a in (entry.get("attributes") if entry.get("attributes") is not None else [])]
    return ", ".join(attrs) if attributes and attrs else item_label(entry.get("title"), None)


def r2ec_user_vector_quote(sample: dict[str, Any], opts: Any) -> str:
    """What the R2ec warm-up writes *after* the user's ``<answer>``: the newest history item as the
    reasoning quoted it first (its attributes, or its title), "none" without history.

    The user vector is the hidden state at ``<answer>``; the one thing a causal LM's state there is
    trained to hold is the next token. A warm-up that stopped at ``<answer>`` and closed the turn
    taught that state to predict ``<|im_end|>`` whatever the prompt: in a trial here every item
    vector then had a cosine of 0.998 with every other one and RecPO's item loss stayed at chance
    (ln B). A quote after it makes the state carry what was read (generation stops at ``<answer>``,
    so the quote is never generated)."""
    history = list(sample.get("user_history") if sample.get("user_history") is not None else [])
    history = history[-opts.history_window:] if opts.history_window > 0 else []
    return _label_words(history[-1], opts.history_attributes) if history else "none"


def r2ec_item_examples(data_dir: str | Path, opts: Any) -> list[tuple[dict[str, Any], str]]:
    """(item record, quote) for every item known at training time: R2ec's item record (train-split
    statistics, ``reczero.r2ec.item_table.item_records``) and what its warm-up writes after the item
    prompt's ``<answer>``: the attributes its description names (the title when it has none)."""
    import pyarrow.parquet as pq

    from reczero.r2ec.item_table import item_records
    from reczero.rankings import ItemCatalog

    items = pq.read_table(Path(data_dir) / schema.ITEMS, columns=["item_id", "attributes"]).to_pandas()
    attrs = dict(zip(items["item_id"], items["attributes"], strict=True))
    records = item_records(data_dir, ItemCatalog.from_data(data_dir))
    return [(r, _label_words({"title": r["title"], "attributes": attrs.get(r["item_id"])})) for r in records]


def r2ec_item_documents(data_dir: str | Path, opts: Any) -> list[str]:
    """R2ec's item message (``reczero.r2ec.prompts.item_text``) of every item known at training time,
    with the train split's statistics: the layout the model reads to make an item vector."""
    from reczero.r2ec.prompts import item_text

    return [item_text(r, opts) for r, _ in r2ec_item_examples(data_dir, opts)]
