"""Qwen2-architecture configs for tiny local models, and a random-init model of any of them.

What this module chose, and why:

* **Qwen2** (``Qwen2ForCausalLM``): the architecture of the papers' Qwen2.5 models, so the tiny base
  runs through exactly the code path of a real checkpoint (generation, TRL, PEFT, vLLM on GPU).
* **Sizes** ``tiny`` / ``small`` / ``base`` of about 0.3M / 5M / 30M parameters at a 4k vocabulary
  with tied input/output embeddings (at this scale the embedding table would otherwise dominate).
  Grouped-query attention with half as many key/value heads, as Qwen2.5 does.
* The tests' hidden-size-8 model (``make_test_model``) is built from these pieces in
  ``tests/conftest.py``: a fixture, not part of the library.
"""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger(__name__)

#: (hidden_size, num_layers, num_heads, num_kv_heads, intermediate_size) per size.
SIZES: dict[str, tuple[int, int, int, int, int]] = {
    "tiny": (64, 4, 4, 2, 192),      # ~0.3M parameters at vocab 2048
    "small": (256, 6, 4, 2, 640),    # ~5M
    "base": (512, 8, 8, 4, 1536),    # ~30M
}

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
