"""Shared fixtures: a tiny synthetic world (``world``) and a random-init hidden-size-8 Qwen2 with a
locally trained tokenizer (``tiny_model``), both built once per test session, and their R2ec-sized
twins (``r2ec_world``: 20-entry histories; ``r2ec_model``: hidden size 16); :func:`make_test_model`
builds other sizes (``from conftest import make_test_model``).

The model is the TRL-tests recipe (hidden size 8, 2 layers): real generation, training and saving
in about a second, no downloads. Its tokenizer is trained on a few built-in domain sentences, the
system prompts and a formatted answer, so prompts and the reasoning tags tokenise sensibly.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import pytest

from reczero.data.schema import RatingScale

log = logging.getLogger(__name__)

DOMAIN_TEXTS: tuple[str, ...] = (
    "User history (oldest first):",
    "- The Silent Harbor [drama, slow, coastal] rated 4: quiet and moving, the ending stayed with me.",
    "- Neon Circuit [sci-fi, action] rated 2: loud and empty, too long for what it says.",
    "- Garden of Small Things [documentary, nature] rated 5: beautiful photography, calm narration.",
    "User average: 3.7 (12 ratings)",
    "Target item: Orbit Nine [sci-fi, space, thoughtful]",
    "Description: A crew of six drifts toward a dying star and has to decide who goes home.",
    "Earlier reviews of the item (oldest first):",
    "- rated 3: good ideas, weak characters.",
    "- rated 5: the best space story in years.",
    "Item average: 4.0 (2 ratings)",
    "How will this user rate the target item?",
    "The user likes quiet, character-driven stories and dislikes loud action.",
    "A thoughtful science-fiction story with slow pacing and strong ideas.",
    "A good match: the item is slow and thoughtful like the ones the user rated highly.",
)


def make_test_model(out_dir: str | Path, texts: Sequence[str] | None = None, hidden_size: int = 8,
                    num_layers: int = 2, vocab_size: int = 512, seed: int = 0,
                    scale: RatingScale | None = RatingScale(1, 5)) -> Path:
    """Save a random-init Qwen2 causal LM and its tokenizer to ``out_dir``; returns the path.

    ``texts`` train the tokenizer (default: :data:`DOMAIN_TEXTS`, the system prompts and a formatted
    answer). ``load_model(out_dir)`` loads it; ``vocab_size`` is the BPE vocabulary before the added
    tags and averages.
    """
    from reczero.models.tiny import count_parameters, new_model, qwen2_config
    from reczero.models.tokenizer import save_tokenizer, train_tokenizer
    from reczero.prompts import TAG_TOKENS, format_answer, system_prompt

    if texts is None:
        answer = format_answer("structured", {"analyze user": DOMAIN_TEXTS[12], "analyze item": DOMAIN_TEXTS[13],
                                              "match": DOMAIN_TEXTS[14]}, 4)
        texts = [*DOMAIN_TEXTS, *(system_prompt(t, scale) for t in ("structured", "think-answer", "rate-only")), answer]
    texts = [*texts, " ".join(TAG_TOKENS)]
    tokenizer = train_tokenizer(texts, vocab_size, scale=scale, min_frequency=1)
    config = qwen2_config(vocab_size=len(tokenizer), hidden_size=hidden_size, num_layers=num_layers,
                          num_heads=2, num_kv_heads=1, intermediate_size=4 * hidden_size,
                          max_position_embeddings=2048, tokenizer=tokenizer)
    model = new_model(config, tokenizer, seed)
    out = Path(out_dir)
    model.save_pretrained(out)
    save_tokenizer(tokenizer, out, texts[:3])
    log.info("test model: %d parameters, vocab %d -> %s", count_parameters(model), len(tokenizer), out)
    return out


@pytest.fixture(scope="session")
def world(tmp_path_factory) -> Path:
    """A prepared RecWorld of 40 users and 24 items (``reczero data synth``); read-only."""
    from reczero import cli

    out = tmp_path_factory.mktemp("world") / "data"
    assert cli.main(["data", "synth", "--out", str(out), "--users", "40", "--items", "24"]) == 0
    return out


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """:func:`make_test_model` at hidden size 8, 2 layers; read-only."""
    return make_test_model(tmp_path_factory.mktemp("model") / "m", hidden_size=8, num_layers=2)


@pytest.fixture(scope="session")
def r2ec_world(tmp_path_factory) -> Path:
    """The R2ec tests' RecWorld: 40 users, 24 items, 20-entry user histories; read-only."""
    from reczero import cli

    out = tmp_path_factory.mktemp("r2ec-world") / "data"
    assert cli.main(["data", "synth", "--out", str(out), "--users", "40", "--items", "24", "--history", "20"]) == 0
    return out


@pytest.fixture(scope="session")
def r2ec_model(tmp_path_factory) -> Path:
    """:func:`make_test_model` at hidden size 16, 2 layers (the R2ec tests' model); read-only."""
    return make_test_model(tmp_path_factory.mktemp("r2ec-model") / "m", hidden_size=16, num_layers=2)
