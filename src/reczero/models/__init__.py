"""Models: load any causal LM (``load_model``), train a local tokenizer, build the tiny base.

``load_model`` / ``load_tokenizer`` (load.py) treat a hub id, a local folder and a run directory
alike; tokenizer.py trains a byte-level BPE tokenizer with a training-ready ChatML template;
tiny.py holds the Qwen2 size configs and builds a random-init model; base.py is
``reczero base`` (pretraining on the dataset's own text, then a format warm-up). Nothing heavy is
imported until a function runs.
"""

from reczero.models.base import build_base
from reczero.models.load import configure_threads, load_model, load_tokenizer, resolve_model_path
from reczero.models.tiny import SIZES, count_parameters, qwen2_config
from reczero.models.tokenizer import save_tokenizer, train_tokenizer

__all__ = [
    "SIZES", "build_base", "configure_threads", "count_parameters", "load_model", "load_tokenizer", "qwen2_config",
    "resolve_model_path", "save_tokenizer", "train_tokenizer",
]
