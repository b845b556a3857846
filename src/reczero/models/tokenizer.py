"""A byte-level BPE tokenizer trained on local text, with a ChatML chat template for training.

What this module chose, and why:

* **Byte-level BPE** (the ``tokenizers`` library) with **Qwen2's normaliser (NFC) and
  pre-tokenisation rule**: digits are split one by one and never merged with a leading space, so a
  rating "4" is the same single token in "rated 4" (pretraining text) and in ``<rate>4</rate>``
  (the answer). Any byte string can be encoded; nothing is ever unknown. The result is a
  ``Qwen2Tokenizer``: transformers 5 loads that class for any Qwen2 model folder whatever class
  the tokenizer was saved as, and rebuilds it from ``vocab.json``/``merges.txt`` with Qwen2's own
  pipeline, so we train exactly that pipeline and check the reload.
* **Special tokens** are only the ChatML markers ``<|endoftext|>`` (document separator, padding),
  ``<|im_start|>`` and ``<|im_end|>`` (end of a turn; the EOS for generation).
* **The reasoning tags are ordinary added tokens** (``special_tokens=False``): single tokens for
  the model, yet kept when TRL decodes completions with ``skip_special_tokens=True``.
* **One-decimal averages are single added tokens** ("1.0" … "5.0" on a 1–5 scale), so "Item
  average: 3.7" is one number token the model can attend to. Whole-star ratings need no extra
  token (a digit already is one).
* **The chat template is ChatML with** ``{% generation %}`` **markers** around the assistant's
  content and its ``<|im_end|>``, so ``return_assistant_tokens_mask`` (TRL's
  ``assistant_only_loss``) marks exactly what the model generates after the generation prompt.
* **The saved folder must load back identically**: :func:`save_tokenizer` reloads it with
  ``AutoTokenizer`` and checks the class and the ids of probe texts (a tokenizer can silently be
  rebuilt differently from its files); a mismatch is an error, not a warning.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from reczero.data.schema import RatingScale
from reczero.prompts import TAG_TOKENS

log = logging.getLogger(__name__)

ENDOFTEXT, IM_START, IM_END = "<|endoftext|>", "<|im_start|>", "<|im_end|>"
SPECIAL_TOKENS = (ENDOFTEXT, IM_START, IM_END)

# Qwen2's pre-tokenisation pattern: contractions, letter runs, single digits, punctuation, spaces.
SPLIT_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                 r"|\s*[\r\n]+|\s+(?!\S)|\s+")

CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{%- if message['role'] == 'assistant' %}"
    "{{- '<|im_start|>assistant\\n' }}"
    "{%- generation %}{{- message['content'] + '<|im_end|>' }}{%- endgeneration %}"
    "{{- '\\n' }}"
    "{%- else %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)


def average_tokens(scale: RatingScale | None) -> list[str]:
    """One-decimal numbers across the scale ("1.0", "1.1", … "5.0"): how averages are written."""
    if scale is None:
        return []
    lo, hi = int(scale.lo * 10), int(round(scale.hi * 10))
    return [f"{v / 10:.1f}" for v in range(lo, hi + 1)]


def train_tokenizer(texts: Iterable[str], vocab_size: int = 4096, *, scale: RatingScale | None = None,
                    extra_tokens: Sequence[str] = (), min_frequency: int = 2) -> Any:
    """Train a byte-level BPE tokenizer on ``texts``; returns a transformers fast tokenizer.

    ``vocab_size`` counts the BPE vocabulary (bytes, merges and special tokens); the reasoning
    tags, the one-decimal averages of ``scale`` (none without a scale) and ``extra_tokens`` are added
    on top.
    """
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers
    from tokenizers import trainers as bpe_trainers
    from transformers.models.qwen2 import Qwen2Tokenizer

    backend = Tokenizer(models.BPE())
    backend.normalizer = normalizers.NFC()
    backend.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(SPLIT_PATTERN), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    backend.decoder = decoders.ByteLevel()
    trainer = bpe_trainers.BpeTrainer(
        vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    )
    backend.train_from_iterator(texts, trainer)
    # The same pipeline as Qwen2Tokenizer, which is what AutoTokenizer loads for a Qwen2 model folder
    # whatever class the tokenizer was saved as (transformers 5), so build that class directly.
    bpe = json.loads(backend.to_str())["model"]
    tokenizer = Qwen2Tokenizer(vocab=bpe["vocab"], merges=[tuple(m) for m in bpe["merges"]], eos_token=IM_END,
                               pad_token=ENDOFTEXT, unk_token=None, model_max_length=1_000_000)
    tokenizer.add_tokens([AddedToken(IM_START, special=True, normalized=False)], special_tokens=True)
    added = [t for t in dict.fromkeys([*TAG_TOKENS, *average_tokens(scale), *extra_tokens]) if t not in tokenizer.get_vocab()]
    tokenizer.add_tokens(added, special_tokens=False)
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.padding_side = "left"
    log.info("tokenizer: %d BPE tokens + %d added (tags, averages)", backend.get_vocab_size(with_added_tokens=False), len(added))
    return tokenizer


def save_tokenizer(tokenizer: Any, out_dir: str | Path, probe_texts: Sequence[str] = ()) -> Path:
    """``save_pretrained`` and check that ``AutoTokenizer`` loads back the same class and ids."""
    out = Path(out_dir)
    tokenizer.save_pretrained(out)
    check_round_trip(tokenizer, out, probe_texts)
    return out


def check_round_trip(tokenizer: Any, folder: str | Path, probe_texts: Sequence[str] = ()) -> None:
    from transformers import AutoTokenizer

    loaded = AutoTokenizer.from_pretrained(folder)
    if type(loaded) is not type(tokenizer):
        raise RuntimeError(f"{folder}: AutoTokenizer loads {type(loaded).__name__}, not the saved {type(tokenizer).__name__}")
    probes = [*probe_texts, " ".join(TAG_TOKENS), "<|im_start|>user\nrated 4: great! 3.7 Ça, naïve 日本<|im_end|>"]
    for text in probes:
        a, b = tokenizer(text)["input_ids"], loaded(text)["input_ids"]
        if a != b:
            raise RuntimeError(f"{folder}: the reloaded tokenizer encodes {text[:60]!r} differently ({a[:12]} vs {b[:12]})")
    if loaded.chat_template != tokenizer.chat_template or loaded.eos_token != tokenizer.eos_token:
        raise RuntimeError(f"{folder}: the reloaded tokenizer lost its chat template or EOS token")
