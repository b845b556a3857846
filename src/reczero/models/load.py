"""Load any causal LM the same way: a Hugging Face id, a local folder, or a run directory.

What this module chose, and why:

* ``RUN`` resolves to ``RUN/model`` when ``RUN`` is a run directory (``config.yaml`` and
  ``model/`` inside, no ``config.json``); a folder with ``adapter_config.json`` is a PEFT LoRA
  adapter: its base is loaded and the adapter merged, so callers always get a plain model.
* **Remote code is off by default** (``trust_remote_code=False``): a checkpoint cannot run code
  unless the caller asks for it.
* **Tokenizers are set up for batched generation**: left padding, and a pad token (the EOS when the
  checkpoint has none), mirrored into the model's generation config.
* **dtype**: float32 on CPU (bf16 matmuls are slow there), bfloat16 on a GPU that supports it,
  unless given. A load failure becomes a :class:`ReczeroError` naming the path or id.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from reczero.errors import ReczeroError

log = logging.getLogger(__name__)


def resolve_model_path(name_or_path: str | Path) -> str:
    """A run directory becomes ``RUN/model``; local folders must exist; anything else is a hub id."""
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file() and not (path / "adapter_config.json").is_file():
            if (path / "model").is_dir():
                return str(path / "model")
            raise ReczeroError(f"{path}: neither a model folder (no config.json) nor a run directory (no model/)")
        return str(path)
    text = str(name_or_path)
    if path.exists() or text.startswith((".", "/", "~")) or text.count("/") > 1:
        raise ReczeroError(f"{text}: no such model folder")
    return text


def _prepare_tokenizer(tokenizer: Any) -> Any:
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise ReczeroError(f"{tokenizer.name_or_path}: the tokenizer has neither a pad nor an EOS token")
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_tokenizer(name_or_path: str | Path, *, trust_remote_code: bool = False) -> Any:
    """The tokenizer of a model (hub id, folder or run directory), left-padded with a pad token."""
    from transformers import AutoTokenizer

    path = resolve_model_path(name_or_path)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as err:
        if (Path(path) / "adapter_config.json").is_file():
            return load_tokenizer(_adapter_base(path), trust_remote_code=trust_remote_code)
        raise ReczeroError(f"{path}: cannot load the tokenizer: {err}") from err
    return _prepare_tokenizer(tokenizer)


def _adapter_base(path: str) -> str:
    import json

    return json.loads((Path(path) / "adapter_config.json").read_text())["base_model_name_or_path"]


def _default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _dtype(dtype: Any, device: str) -> Any:
    import torch

    if dtype is None:
        if device.startswith("cuda") and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float32
    if isinstance(dtype, str) and dtype != "auto":
        if not isinstance(getattr(torch, dtype, None), torch.dtype):
            raise ReczeroError(f"dtype {dtype!r} is not a torch dtype (e.g. float32, bfloat16, float16, auto)")
        return getattr(torch, dtype)
    return dtype


def load_model(name_or_path: str | Path, *, dtype: Any = None, device: str | None = None,
               trust_remote_code: bool = False) -> tuple[Any, Any]:
    """``(model, tokenizer)`` for a hub id, a local folder, a LoRA adapter folder or a run directory."""
    from transformers import AutoModelForCausalLM

    path = resolve_model_path(name_or_path)
    device = device or _default_device()
    torch_dtype = _dtype(dtype, device)
    kwargs = {"dtype": torch_dtype, "trust_remote_code": trust_remote_code}
    try:
        if (Path(path) / "adapter_config.json").is_file():
            from peft import AutoPeftModelForCausalLM

            model = AutoPeftModelForCausalLM.from_pretrained(path, **kwargs).merge_and_unload()
        else:
            model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    except (OSError, ValueError) as err:
        raise ReczeroError(f"{path}: cannot load a causal language model: {err}") from err
    tokenizer = load_tokenizer(path, trust_remote_code=trust_remote_code)
    if model.generation_config.pad_token_id is None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.to(device)
    model.eval()
    log.info("loaded %s (%s, %s, %.1fM parameters)", path, device, torch_dtype,
             sum(p.numel() for p in model.parameters()) / 1e6)
    return model, tokenizer


def configure_threads(threads: int, model: Any) -> int:
    """Set torch's CPU threads for a model run; returns the number used.

    ``threads > 0`` is taken as given. ``0`` means: one thread for a model under 50M parameters
    on the CPU (measured here: for hidden sizes of 8-256, intra-op threads only add overhead, and on a
    busy 2-core machine 2 threads were 2-15x slower per step than 1), torch's default otherwise.
    """
    import torch

    if threads <= 0:
        on_cpu = next(model.parameters()).device.type == "cpu"
        small = sum(p.numel() for p in model.parameters()) < 50_000_000
        if not (on_cpu and small):
            return torch.get_num_threads()
        threads = 1
    torch.set_num_threads(threads)
    return threads
