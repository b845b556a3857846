"""Qwen2-architecture configs for tiny local models, and a random-init model for everyone's tests.

What this module chose, and why:

* **Qwen2** (``Qwen2ForCausalLM``): the architecture of the papers' Qwen2.5 models, so the tiny base
  runs through exactly the code path of a real checkpoint (generation, TRL, PEFT, vLLM on GPU).
* **Sizes** ``tiny`` / ``small`` / ``base`` of about 0.3M / 5M / 30M parameters at a 4k vocabulary
  with tied input/output embeddings (at this scale the embedding table would otherwise dominate).
  Grouped-query attention with half as many key/value heads, as Qwen2.5 does.
* :func:`make_test_model` builds a hidden-size-8 model with a tokenizer trained on a few built-in
  domain sentences, saved with ``save_pretrained``, in about a second: the fixture for tests of
  training, evaluation and serving.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from reczero.data.schema import RatingScale
from reczero.prompts import TAG_TOKENS, format_answer, system_prompt

log = logging.getLogger(__name__)

#: (hidden_size, num_layers, num_heads, num_kv_heads, intermediate_size) per size.
SIZES: dict[str, tuple[int, int, int, int, int]] = {
    "tiny": (64, 4, 4, 2, 192),      # ~0.3M parameters at vocab 2048
    "small": (256, 6, 4, 2, 640),    # ~5M
    "base": (512, 8, 8, 4, 1536),    # ~30M
}

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


def qwen2_config(size: str | None = None, *, vocab_size: int, hidden_size: int | None = None,
                 num_layers: int | None = None, num_heads: int | None = None, num_kv_heads: int | None = None,
                 intermediate_size: int | None = None, max_position_embeddings: int = 4096,
                 tokenizer: Any = None) -> Any:
    """A ``Qwen2Config`` for a named size, any field overridable; token ids from ``tokenizer``."""
    from transformers import Qwen2Config

    h, n_layer, n_head, n_kv, inter = SIZES[size] if size else (64, 2, 4, 2, 128)
    h, n_layer = hidden_size or h, num_layers or n_layer
    n_head = num_heads or (n_head if h % n_head == 0 and (h // n_head) % 2 == 0 else 2)
    n_kv = num_kv_heads or (n_kv if n_head % n_kv == 0 else 1)
    ids = {}
    if tokenizer is not None:
        ids = {"eos_token_id": tokenizer.eos_token_id, "pad_token_id": tokenizer.pad_token_id, "bos_token_id": None}
    return Qwen2Config(
        vocab_size=vocab_size, hidden_size=h, num_hidden_layers=n_layer, num_attention_heads=n_head,
        num_key_value_heads=n_kv, intermediate_size=intermediate_size or inter or 4 * h,
        max_position_embeddings=max_position_embeddings, tie_word_embeddings=True, rope_theta=10_000.0,
        rms_norm_eps=1e-6, use_cache=True, **ids,
    )


def new_model(config: Any, tokenizer: Any, seed: int = 0) -> Any:
    """A randomly initialised ``Qwen2ForCausalLM`` whose generation stops at ``<|im_end|>``."""
    import torch
    from transformers import Qwen2ForCausalLM

    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(config)
    gen = model.generation_config
    gen.eos_token_id = [tokenizer.convert_tokens_to_ids(t) for t in ("<|im_end|>", "<|endoftext|>")]
    gen.pad_token_id = tokenizer.pad_token_id
    gen.bos_token_id = None
    return model


def count_parameters(model: Any) -> int:
    """Unique parameters (tied embeddings counted once)."""
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())


def make_test_model(out_dir: str | Path, texts: Sequence[str] | None = None, hidden_size: int = 8,
                    num_layers: int = 2, vocab_size: int = 512, seed: int = 0,
                    scale: RatingScale | None = RatingScale(1, 5)) -> Path:
    """Save a random-init Qwen2 causal LM and its tokenizer to ``out_dir``; returns the path.

    ``texts`` train the tokenizer (default: built-in domain sentences, the system prompts and a
    formatted answer). ``load_model(out_dir)`` loads it; ``vocab_size`` is the BPE vocabulary before
    the added tags and averages.
    """
    from reczero.models.tokenizer import save_tokenizer, train_tokenizer

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
