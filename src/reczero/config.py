"""Configs: dataclasses with help on every field, YAML recipes, and one precedence rule.

What this module chose, and why:

* Every command's options are one flat dataclass (as TRL's ``GRPOConfig``). A field's
  ``metadata["help"]`` is the single source of the ``--help`` text, the CLI flag and the YAML key,
  so the three can never drift apart.
* Precedence is **defaults < YAML recipe (``--config``) < CLI flags (incl. ``--set key=value``)**.
  CLI flags are parsed with ``argparse.SUPPRESS`` defaults, so a flag only overrides the recipe when
  the user actually typed it. ``tests/test_config.py`` pins this order.
* Unknown keys (in YAML or ``--set``) are errors naming the key and the nearest valid one; values
  are coerced to the field's type and rejected with the field's name when they do not fit.
* Derived values and consistency checks live in ``__post_init__`` and raise :class:`ConfigError`.
* No Hydra, no ``eval``, no reading ``sys.argv`` here; this module imports nothing heavy so that
  ``reczero --help`` stays instant.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml

from reczero.errors import ReczeroError

T = TypeVar("T")


class ConfigError(ReczeroError, ValueError):
    """A config value or key is invalid; the message names the field and what was expected."""


def opt(default: Any, help: str, **kw: Any) -> Any:  # noqa: A002 - mirrors argparse's name
    """A dataclass field with help text (the only way fields are declared here)."""
    if isinstance(default, list | dict):
        return field(default_factory=lambda d=default: type(d)(d), metadata={"help": help, **kw})
    return field(default=default, metadata={"help": help, **kw})


# ----------------------------------------------------------------------------------------------
# Shared option groups (inherited by the command configs below)
# ----------------------------------------------------------------------------------------------


@dataclass
class SampleOptions:
    """How prepared samples are built from interactions (shared by `data prepare` and `data synth`)."""

    history: int = opt(10, "User history window: the most recent N earlier interactions of the user.")
    item_history: int = opt(10, "Item review window: the most recent N earlier reviews of the target item by other users.")
    snippet_chars: int = opt(200, "Review snippets in histories are cut to at most this many characters.")
    min_history: int = opt(0, "Drop target interactions whose user has fewer earlier interactions than this.")
    min_user: int = opt(0, "k-core filter: keep users with at least this many interactions (0 = off).")
    min_item: int = opt(0, "k-core filter: keep items with at least this many interactions (0 = off).")
    item_filter: str | None = opt(None, "Drop items by the R2ec reference's rules (needs item metadata; each dropped item is "
                                  "listed in rejects.jsonl with its reason, its interactions are rejected as unknown_item): "
                                  "'r2ec' = no title (no_title), a title of at most 1 character (title_too_short) or of "
                                  "more than 20 words (title_too_long), HTML in the raw title (html_in_title); "
                                  "'r2ec-price' = those and a price that is missing or not a number (bad_price), as the "
                                  "reference did, which also drops every review of such an item.",
                                  choices=["r2ec", "r2ec-price"])
    since: str | None = opt(None, "Time window: keep interactions from this UTC day on (YYYY-MM-DD, inclusive); the "
                            "others are rejected as out_of_window. The window is applied after the k-core filter, "
                            "which counts the whole dump.")
    until: str | None = opt(None, "Time window: keep interactions up to the end of this UTC day (YYYY-MM-DD, inclusive); "
                            "later ones are rejected as out_of_window.")
    window_min_items: int = opt(0, "With --since: while fewer than this many distinct items remain in the window, move "
                                "its start back 3 months (the R2ec reference's rule; it stops once the window holds "
                                "every interaction before its end). The final window is in the manifest (0 = off).")
    split: str = opt("temporal", "Split: 'temporal' (one global time cut, ratios from --split-ratios) or 'leave-last' (per user: last -> test, second last -> valid).", choices=["temporal", "leave-last"])
    split_ratios: str = opt("0.8,0.1,0.1", "Train,valid,test fractions of the temporal split (by interaction time).")
    max_samples: str | None = opt(None, "Cap samples per split, e.g. 'train=5000,valid=500,test=1000' (deterministic under --seed).")
    seed: int = opt(0, "Random seed (sampling caps, synthetic world).")

    def __post_init__(self) -> None:
        for name in ("history", "item_history", "snippet_chars", "min_history", "min_user", "min_item", "window_min_items"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0, got {getattr(self, name)}")
        self.parsed_split_ratios()
        self.parsed_max_samples()
        since, until = self.parsed_day("since"), self.parsed_day("until")
        if since and until and since > until:
            raise ConfigError(f"--since {self.since} is after --until {self.until}")
        if self.window_min_items and not since:
            raise ConfigError("--window-min-items moves the window's start back: it needs --since")

    def parsed_day(self, name: str):
        """The ``datetime.date`` of the YYYY-MM-DD field ``name`` (None when unset)."""
        import datetime
        import re

        value = getattr(self, name)
        if value is None:
            return None
        try:
            if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
                raise ValueError
            return datetime.date.fromisoformat(value)
        except ValueError:
            raise ConfigError(f"--{name} {value!r}: expected a date YYYY-MM-DD, e.g. 2022-10-01") from None

    def parsed_split_ratios(self) -> tuple[float, float, float]:
        try:
            parts = tuple(float(x) for x in self.split_ratios.split(","))
        except ValueError:
            parts = ()
        if len(parts) != 3 or any(p < 0 for p in parts) or abs(sum(parts) - 1.0) > 1e-6:
            raise ConfigError(f"split_ratios must be three non-negative fractions summing to 1 like '0.8,0.1,0.1', got {self.split_ratios!r}")
        return parts  # type: ignore[return-value]

    def parsed_max_samples(self) -> dict[str, int]:
        return parse_kv(self.max_samples, "max_samples", valid_keys=("train", "valid", "test"), value_type=int)


@dataclass
class PromptOptions:
    """How a sample becomes a prompt (shared by everything that talks to a model)."""

    template: str = opt("structured", "Answer template: 'structured' (four tagged steps, the paper's), 'think-answer' (one free <think> step then <rate>), 'rate-only' (no thinking).", choices=["structured", "think-answer", "rate-only"])
    max_prompt_tokens: int = opt(1024, "Prompt token budget; the oldest user-history entries are trimmed first, never the target item.")
    prompt_history: int = opt(10, "Show at most this many of the user's most recent history entries in the prompt.")
    prompt_item_reviews: int = opt(5, "Show at most this many earlier reviews of the target item in the prompt.")
    prompt_snippet_chars: int = opt(160, "Review snippets in the prompt are cut to this many characters.")
    prompt_averages: str = opt("inline", "Where the prompt shows the user's and the item's averages: 'inline' (the user's after their history, the item's after its reviews) or 'end' (both together right before the question, within a small model's reach). Train and evaluate a model with the same choice.", choices=["inline", "end"])


# ----------------------------------------------------------------------------------------------
# Data
# ----------------------------------------------------------------------------------------------

# The --source names; each is one typed entry of reczero.data.sources.registry.SOURCES (checked there
# on import). Only the names live here, so that this module imports without pyarrow.
SOURCES = ("amazon2014", "amazon2018", "amazon2023", "yelp", "movielens", "table", "sequences", "recbole")


@dataclass
class PrepareConfig(SampleOptions):
    """`reczero data prepare`: a raw dump -> the prepared-dataset layout of DESIGN.md."""

    source: str = opt("", "Dump format: " + ", ".join(SOURCES) + ".", choices=list(SOURCES))
    input: str = opt("", "Reviews/ratings file (plain or .gz); for movielens the dataset folder; for sequences a 'user item item ...' file; for recbole NAME.inter or its folder.")
    meta: str | None = opt(None, "Item metadata file (Amazon meta, Yelp business.json, the item table for 'table'; for recbole NAME.item beside the .inter is the default).")
    out: str = opt("", "Output directory of the prepared dataset.")
    columns: str | None = opt(None, "For 'table': column mapping 'user=COL,item=COL,rating=COL,time=COL[,review=COL,title=COL,summary=COL]'; for 'recbole': fields other than RecBole's defaults user_id, item_id, rating, timestamp (e.g. 'item=business_id,rating=stars,time=date').")
    item_columns: str | None = opt(None, "For 'table' with --meta, or 'recbole' item files: 'item=COL[,title=COL,attributes=COL,description=COL]'.")
    scale: str | None = opt(None, "Rating scale 'lo,hi[,step]' (required for 'table'; overrides the source's default or detected scale; refused for data without ratings).")
    overwrite: bool = opt(False, "Replace an existing prepared dataset in --out.")

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self, "source", "input", "out")
        if self.source == "table" and not self.columns:
            raise ConfigError("source 'table' needs --columns user=COL,item=COL,rating=COL,time=COL")


@dataclass
class SynthConfig(SampleOptions):
    """`reczero data synth`: the RecWorld synthetic world, written as a prepared dataset."""

    out: str = opt("", "Output directory of the prepared dataset.")
    users: int = opt(2000, "Number of users.")
    items: int = opt(600, "Number of items.")
    interactions_per_user: float = opt(25.0, "Mean interactions per user (activity is long-tailed around it).")
    noise: float = opt(0.6, "Standard deviation of the rating noise (on the latent, pre-rounding scale).")
    half_stars: bool = opt(False, "Ratings in half stars (0.5 steps) instead of whole stars.")
    choice_temperature: float = opt(1.0, "How strongly choices follow taste: each user picks items with probability "
                                    "∝ popularity · exp(choice_temperature · taste) (recorded in the manifest's world; "
                                    "the ranking demo uses 2.5, where taste moves the next pick more than popularity).")
    raw_format: str | None = opt(None, "Also write the world as a raw dump in this real format.", choices=["amazon2018", "amazon2023", "yelp"])
    raw_out: str | None = opt(None, "Path of the raw reviews file (meta is written beside it); needs --raw-format.")
    raw_only: bool = opt(False, "Write only the raw dump (skip the prepared dataset); for loader benchmarks.")
    overwrite: bool = opt(False, "Replace an existing prepared dataset in --out.")

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.raw_only:
            require(self, "out")
        if (self.raw_format is None) != (self.raw_out is None):
            raise ConfigError("--raw-format and --raw-out go together")
        if self.users < 2 or self.items < 2:
            raise ConfigError("users and items must be >= 2")


# ----------------------------------------------------------------------------------------------
# Models and training
# ----------------------------------------------------------------------------------------------


@dataclass
class R2ecPromptOptions:
    """How a split row becomes R2ec's user prompt and an item its item prompt (reczero.r2ec.prompts)."""

    history_window: int = opt(20, "User prompt: the user's most recent N history items, oldest first (the reference: 20; prepare the data with --history >= N).")
    history_attributes: bool = opt(False, "User prompt: show each history item's attributes in brackets after its title (RecWorld's titles carry none).")
    history_reviews: bool = opt(False, "User prompt: show each history item's review snippet (RecWorld's tastes live in its reviews).")
    review_chars: int = opt(160, "User prompt: review snippets are cut to this many characters.")
    description_words: int = opt(100, "Item prompt: the description is cut to its first N words, in source order.")
    max_prompt_tokens: int = opt(1024, "User prompt token budget; the oldest history lines are dropped first.")

    def __post_init__(self) -> None:
        for name in ("history_window", "review_chars", "description_words", "max_prompt_tokens"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0, got {getattr(self, name)}")


@dataclass
class BaseConfig(PromptOptions, R2ecPromptOptions):
    """`reczero base`: the tiny base model (tokenizer + pretraining + format warm-up)."""

    data: str = opt("", "Prepared dataset directory (its train split and items are the pretraining text).")
    out: str = opt("", "Output directory of the base model.")
    size: str = opt("tiny", "Model size: tiny (~0.3M params), small (~5M), base (~30M).", choices=["tiny", "small", "base"])
    vocab_size: int = opt(4096, "Tokenizer vocabulary size (byte-level BPE trained on the dataset's text).")
    pretrain_epochs: float = opt(1.0, "Passes over the pretraining documents (loss on every token).")
    pretrain_lr: float = opt(3e-3, "Pretraining peak learning rate.")
    format_warmup_steps: int = opt(100, "Format warm-up steps: real prompts answered in four tagged steps that quote the "
                                   "prompt (its average lines, the item's attributes and quality word, the two averages "
                                   "again in <match>); at the rating's position the target is the model's own rating "
                                   "prior, never the true rating (0: no warm-up).")
    format_warmup_lr: float = opt(3e-3, "Format warm-up peak learning rate.")
    format_warmup: str = opt("rating", "What the format warm-up teaches: 'rating' = the rating prompt (--template) and "
                             "its tagged answer; 'r2ec' = R2ec's user prompt (the --history-* options) answered by a "
                             "short reasoning that quotes the newest history items, closed by <answer> (added as one "
                             "token), and R2ec's item prompts in the pretraining text. Build one base per choice.",
                             choices=["rating", "r2ec"])
    rating_weight: float = opt(10.0, "Pretraining loss weight of a rating token (after \"rated \") relative to other "
                               "tokens (ratings are ~3%% of the text; 1 = plain language modelling).")
    rating_lists: bool = opt(True, "Also pretrain on the user and item pages without their review text (ratings lists): "
                             "many more (average, rating) pairs per token for a tiny model.")
    batch_size: int = opt(16, "Sequences per optimisation step.")
    seq_len: int = opt(512, "Pretraining sequence length (documents are packed).")
    eval_samples: int = opt(64, "Validation samples on which the base is measured (read-off and greedy MAE, format rate; 0: skip).")
    threads: int = opt(0, "CPU threads for torch (0: one thread for --size tiny, where more only add overhead; torch's default otherwise).")
    seed: int = opt(0, "Random seed.")

    def __post_init__(self) -> None:
        R2ecPromptOptions.__post_init__(self)
        require(self, "data", "out")
        if self.vocab_size < 256 or self.batch_size < 1 or self.seq_len < 16:
            raise ConfigError(f"need vocab_size >= 256 (the byte alphabet), batch_size >= 1 and seq_len >= 16; got "
                              f"vocab_size={self.vocab_size}, batch_size={self.batch_size}, seq_len={self.seq_len}")
        for name in ("pretrain_epochs", "format_warmup_steps", "eval_samples", "threads"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0, got {getattr(self, name)}")
        for name in ("pretrain_lr", "format_warmup_lr", "rating_weight"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"{name} must be > 0, got {getattr(self, name)}")


@dataclass
class LoraOptions:
    use_lora: bool = opt(False, "Train LoRA adapters (PEFT) instead of all weights.")
    lora_r: int = opt(16, "LoRA rank.")
    lora_alpha: int = opt(32, "LoRA alpha.")
    lora_dropout: float = opt(0.05, "LoRA dropout.")
    lora_target_modules: str = opt("all-linear", "LoRA target modules (comma-separated names or 'all-linear').")


@dataclass
class TrainOptions(LoraOptions):
    """What every trainer shares (the rating trainers add :class:`PromptOptions`, R2ec its own prompt)."""

    data: str = opt("", "Prepared dataset directory.")
    model: str = opt("", "Model to start from: a Hugging Face id (e.g. Qwen/Qwen2.5-7B-Instruct-1M), a local path, or a run directory.")
    out: str = opt("", "Run directory (model/, checkpoints/, log.jsonl, config.yaml).")
    learning_rate: float = opt(2e-6, "Peak learning rate.")
    num_train_epochs: float = opt(1.0, "Epochs over the training samples.")
    max_steps: int = opt(-1, "Stop after this many optimiser steps (-1: from epochs).")
    per_device_train_batch_size: int = opt(8, "Per-device batch size (for GRPO: completions, must divide by num_generations).")
    gradient_accumulation_steps: int = opt(1, "Gradient accumulation steps.")
    max_train_samples: int | None = opt(None, "Use at most this many training samples (deterministic under --seed).")
    lr_scheduler_type: str = opt("constant_with_warmup", "Learning-rate schedule (transformers names).")
    warmup_ratio: float = opt(0.0, "Fraction of steps for learning-rate warm-up.")
    logging_steps: int = opt(1, "Log every N steps to log.jsonl.")
    save_steps: int = opt(50, "Checkpoint every N steps (for --resume).")
    save_total_limit: int = opt(2, "Keep at most this many checkpoints.")
    eval_steps: int = opt(50, "Validation every N steps (0: off): MAE for the rating trainers, NDCG@10 for R2ec.")
    eval_samples: int = opt(64, "Validation samples used for the periodic validation.")
    max_completion_length: int = opt(256, "Maximum tokens per completion (GRPO rollouts; validation generation).")
    bf16: bool = opt(False, "Train in bfloat16 (GPU).")
    gradient_checkpointing: bool = opt(False, "Gradient checkpointing (saves GPU memory).")
    use_cpu: bool = opt(False, "Force CPU even when a GPU is present.")
    report_to: str = opt("none", "Experiment tracker the trainer also logs to (transformers' report_to): 'tensorboard' "
                         "(event files in RUN/checkpoints/runs/), 'wandb' or 'mlflow' (their package and login needed). "
                         "RUN/log.jsonl is written either way.", choices=["none", "tensorboard", "wandb", "mlflow"])
    resume: bool = opt(False, "Continue from the last checkpoint in RUN/checkpoints after an interruption.")
    dry_run: bool = opt(False, "Validate the recipe and print the resolved plan without loading weights or data.")
    world_size: int | None = opt(None, "Processes the recipe is planned for (accelerate num_processes); --dry-run uses it, default $WORLD_SIZE or 1.")
    seed: int = opt(0, "Random seed.")
    threads: int = opt(0, "CPU threads for torch (0: one for models under 50M parameters on CPU, where more only add overhead; torch's default otherwise).")

    def __post_init__(self) -> None:
        if not self.dry_run:
            require(self, "data", "model", "out")
        if self.learning_rate <= 0:
            raise ConfigError(f"learning_rate must be > 0, got {self.learning_rate}")


@dataclass
class TrainCommon(PromptOptions, TrainOptions):
    """Training options of the rating trainers (GRPO, SFT): the shared ones and the rating prompt."""


@dataclass
class GRPORecipe(TrainCommon):
    """`reczero train grpo`: RecZero, pure RL with rule-based rewards on TRL's GRPOTrainer."""

    num_generations: int = opt(8, "Completions sampled per prompt (the GRPO group size).")
    temperature: float = opt(1.0, "Sampling temperature of the rollouts.")
    top_p: float = opt(1.0, "Nucleus sampling of the rollouts.")
    beta: float = opt(0.0, "KL coefficient against the reference model (the paper: 0).")
    loss_type: str = opt("grpo", "TRL loss aggregation: grpo, dapo, dr_grpo, bnpo.", choices=["grpo", "dapo", "dr_grpo", "bnpo"])
    scale_rewards: str = opt("group", "Advantage normalisation: 'group' (z-score in the group, the paper), 'batch' or 'none'.", choices=["group", "batch", "none"])
    format_bonus: float = opt(0.5, "Format reward when the answer follows the template.")
    format_penalty: float = opt(-0.5, "Format reward when it does not (an unparsable answer also gets no answer reward).")
    max_error: float | None = opt(None, "Answer reward 1 - |y - y_hat| / max_error; default: the rating scale's span.")
    entropy_coef: float = opt(0.0, "Entropy bonus coefficient (TRL); a lever against collapse to one constant answer.")
    mask_truncated_completions: bool = opt(False, "Exclude truncated completions from the loss (DAPO).")
    use_vllm: bool = opt(False, "Generate rollouts with vLLM (GPU only; install the 'gpu' extra).")
    vllm_mode: str = opt("colocate", "vLLM mode: 'colocate' or 'server'.", choices=["colocate", "server"])
    vllm_gpu_memory_utilization: float = opt(0.3, "GPU memory share for vLLM in colocate mode.")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.num_generations < 2:
            raise ConfigError("num_generations must be >= 2 (GRPO compares samples within a group)")
        total = self.per_device_train_batch_size * self.gradient_accumulation_steps
        if total % self.num_generations:
            raise ConfigError(
                f"per_device_train_batch_size * gradient_accumulation_steps = {total} must be divisible by "
                f"num_generations = {self.num_generations} (the batch counts completions)"
            )


@dataclass
class SFTRecipe(TrainCommon):
    """`reczero train sft`: supervised fine-tuning on teacher reasoning (assistant-only loss)."""

    teacher_data: str = opt("", "Teacher JSONL from `reczero teacher` (accepted records are used).")
    max_length: int = opt(1536, "Maximum tokens per training sequence (prompt + completion).")
    assistant_only_loss: bool = opt(True, "Loss on the assistant's answer only (prompt tokens carry no loss).")

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.dry_run:
            require(self, "teacher_data")


@dataclass
class R2ecRecipe(R2ecPromptOptions, TrainOptions):
    """`reczero train r2ec`: R2ec trained by RecPO (TRL GRPOTrainer subclass; reczero.train.r2ec)."""

    learning_rate: float = opt(1e-5, "Peak learning rate (the reference: 1e-5, constant).")
    lr_scheduler_type: str = opt("constant", "Learning-rate schedule (transformers names; the reference: constant).")
    lora_dropout: float = opt(0.0, "LoRA dropout (0: the user vector read in the loss equals the one the reward read).")
    per_device_train_batch_size: int = opt(16, "Rollouts per device and step (users x num_generations; the reference: 4 users x 4).")
    max_completion_length: int = opt(640, "Maximum reasoning tokens per rollout and at validation; a rollout cut here gets <answer> appended.")
    eval_steps: int = opt(50, "Validation NDCG@10 (greedy reasoning, full ranking) every N steps and at the end (0: off); the best model is kept.")
    num_generations: int = opt(4, "G: reasoning rollouts sampled per user (the group of the advantages).")
    temperature: float = opt(2.0, "Sampling temperature of the rollouts (the reference: 2.0).")
    top_k: int = opt(50, "Top-k sampling of the rollouts (0: off; the reference: 50).")
    top_p: float = opt(1.0, "Nucleus sampling of the rollouts.")
    tau: float = opt(0.02, "τ: scores are cosine(user vector, item vector) / τ.")
    reward_weight: float = opt(0.05, "w: reward = (1 - w) NDCG@k(rank of the target) + w softmax(scores)[target].")
    reward_k: int = opt(1000, "k of the reward's NDCG@k.")
    mask_history: bool = opt(True, "Rewards and validation mask the items of the user's history window, as `reczero eval` does.")
    epsilon_low: float = opt(0.2, "Token loss: lower clip of the probability ratio (1 - epsilon_low).")
    epsilon_high: float = opt(0.28, "Token loss: upper clip of the probability ratio (1 + epsilon_high).")
    token_loss: bool = opt(True, "Train the reasoning tokens by the clipped policy gradient (--no-token-loss: the item loss alone, what the reference effectively trained).")
    item_loss_top: int = opt(2, "Item loss: the top N rollouts of each group by advantage take part.")
    item_loss_logq: bool = opt(False, "Item loss: subtract log q_j, item j's share of the training interactions (its chance of being an in-batch target), from each in-batch logit: the logQ correction of Yi et al., RecSys 2019. Without it the in-batch softmax, whose items are the batch's own popularity-drawn targets, cancels popularity out and cannot learn it.")
    item_loss_uniform_negatives: int = opt(0, "Item loss: add N catalogue items drawn uniformly (not among the batch's targets) as extra negatives, read with gradient: the mixed negative sampling of Yang et al., WWW 2020 (rare items are otherwise never in a batch). With --item-loss-logq their q is the mixture's.")
    reasoning: bool = opt(True, "Reason before recommending (--no-reasoning, the ablation: the user vector is read right after the prompt, <answer> pre-filled, and only the item loss trains).")
    item_refresh_steps: int = opt(1, "Recompute the item-vector table for the rewards every N optimiser steps (1: always fresh weights).")
    item_batch_size: int = opt(64, "Item prompts per forward pass when computing the item-vector table.")
    early_stopping_patience: int = opt(8, "Stop after this many validations without a better NDCG@10 (0: never).")
    use_vllm: bool = opt(False, "Generate rollouts with vLLM through TRL (GPU only; install the 'gpu' extra).")
    vllm_mode: str = opt("colocate", "vLLM mode: 'colocate' or 'server'.", choices=["colocate", "server"])
    vllm_gpu_memory_utilization: float = opt(0.3, "GPU memory share for vLLM in colocate mode.")

    def __post_init__(self) -> None:
        R2ecPromptOptions.__post_init__(self)
        TrainOptions.__post_init__(self)
        if self.num_generations < 2:
            raise ConfigError("num_generations must be >= 2 (advantages compare the rollouts of one user)")
        total = self.per_device_train_batch_size * self.gradient_accumulation_steps
        if total % self.num_generations:
            raise ConfigError(f"per_device_train_batch_size * gradient_accumulation_steps = {total} must be divisible "
                              f"by num_generations = {self.num_generations} (the batch counts rollouts)")
        if self.tau <= 0 or not 0 <= self.reward_weight <= 1 or self.reward_k < 1:
            raise ConfigError(f"need tau > 0, 0 <= reward_weight <= 1 and reward_k >= 1; got tau={self.tau}, "
                              f"reward_weight={self.reward_weight}, reward_k={self.reward_k}")
        if self.item_loss_top < 1 or self.item_refresh_steps < 1 or self.item_batch_size < 1:
            raise ConfigError("item_loss_top, item_refresh_steps and item_batch_size must be >= 1")
        if self.item_loss_uniform_negatives < 0:
            raise ConfigError(f"item_loss_uniform_negatives must be >= 0; got {self.item_loss_uniform_negatives}")
        if not self.reasoning and self.use_vllm:
            raise ConfigError("--no-reasoning generates nothing: drop --use-vllm")


# ----------------------------------------------------------------------------------------------
# Teacher, baselines, evaluation, report, demo
# ----------------------------------------------------------------------------------------------


@dataclass
class TeacherConfig(PromptOptions):
    """`reczero teacher`: cold-start reasoning samples from an LLM endpoint or the heuristic teacher."""

    data: str = opt("", "Prepared dataset directory.")
    split: str = opt("train", "Split to draw samples from.", choices=["train", "valid", "test"])
    n: int = opt(1000, "Number of samples to request (each gets exactly one record in --out).")
    out: str = opt("", "Output JSONL (append-only; a rerun resumes).")
    base_url: str | None = opt(None, "OpenAI-compatible endpoint, e.g. http://localhost:8000/v1 (vLLM), https://api.deepseek.com.")
    model: str | None = opt(None, "Teacher model name at the endpoint.")
    api_key_env: str = opt("OPENAI_API_KEY", "Environment variable holding the API key.")
    heuristic: bool = opt(False, "Use the embedded heuristic teacher instead of an endpoint.")
    concurrency: int = opt(8, "Requests in flight at once.")
    tolerance: float = opt(0.5, "A prediction off by more than this is rationalised (asked again with the true rating).")
    max_tries: int = opt(3, "Attempts per sample (first answer + rationalisations/format retries).")
    request_timeout: float = opt(120.0, "Seconds before one request times out.")
    max_retries: int = opt(6, "Retries of one request on timeouts, 429 and 5xx (backoff with jitter).")
    retry_delay: float = opt(1.0, "Base delay of the retry backoff in seconds (doubled per retry, jittered, capped at 60 s; 429 waits at least Retry-After).")
    temperature: float = opt(0.6, "Teacher sampling temperature.")
    max_tokens: int = opt(2048, "Maximum tokens of one teacher answer.")
    seed: int = opt(0, "Random seed (sample choice, heuristic noise).")

    def __post_init__(self) -> None:
        require(self, "data", "out")
        if self.heuristic == bool(self.base_url):
            raise ConfigError("give exactly one of --heuristic or --base-url URL --model NAME")
        if self.base_url and not self.model:
            raise ConfigError("--base-url needs --model NAME")
        for name in ("n", "concurrency", "max_tries"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.max_retries < 0 or self.retry_delay < 0 or self.tolerance < 0 or self.request_timeout <= 0:
            raise ConfigError("max_retries, retry_delay and tolerance must be >= 0 and request_timeout > 0")


BASELINES = ("global", "median", "user", "item", "avg-blend", "bias", "mf", "svdpp")
RANKING_BASELINES = ("popularity", "sasrec", "itemknn")


@dataclass
class BaselineConfig:
    """`reczero baseline`: a classic predictor, written like a model run."""

    method: str = opt("", "Baseline: rating methods " + ", ".join(BASELINES) + "; ranking (next-item) methods "
                      + ", ".join(RANKING_BASELINES) + ".", choices=list(BASELINES + RANKING_BASELINES))
    data: str = opt("", "Prepared dataset directory.")
    out: str = opt("", "Run directory (eval/<split>/predictions.parquet or, for ranking methods, rankings.parquet; and metrics.json).")
    splits: str = opt("valid,test", "Splits to predict and score.")
    factors: int | None = opt(None, "Latent factors (mf, svdpp); default: the method's tuned value.")
    epochs: int | None = opt(None, "Maximum epochs (mf, svdpp, sasrec) or sweeps (bias); mf/svdpp/sasrec stop early on the validation split. Default: the method's tuned value.")
    lr: float | None = opt(None, "Initial learning rate (mf, svdpp, sasrec); default: the method's tuned value.")
    reg: float | None = opt(None, "L2 regularisation (mf, svdpp: per factor; bias: shrinkage count); default: the method's tuned value.")
    patience: int | None = opt(None, "Early stopping patience in epochs (mf, svdpp: 3; sasrec: 10, on valid NDCG@10); default: the method's value.")
    mask_history: bool = opt(True, "Ranking: the user's history items are not recommended (--no-mask-history for repeat-consumption data).")
    top_k: int = opt(20, "Ranking: items kept per sample in rankings.parquet's top_items (metrics use the full ranking).")
    hidden: int | None = opt(None, "sasrec: hidden size of item and position embeddings (default 64).")
    blocks: int | None = opt(None, "sasrec: self-attention blocks (default 2).")
    heads: int | None = opt(None, "sasrec: attention heads per block (default 2).")
    dropout: float | None = opt(None, "sasrec: dropout rate (default 0.5).")
    max_len: int | None = opt(None, "sasrec: longest item sequence the model reads (default 50); scoring reads the row's history window (prepare with --history >= this to use all of it).")
    batch_size: int | None = opt(None, "sasrec: training sequences per batch (default 32); mf/svdpp: ratings per batch.")
    neighbors: int | None = opt(None, "itemknn: most similar items kept per item (default 100).")
    shrink: float | None = opt(None, "itemknn: shrinkage added to the cosine's denominator (default 10).")
    seed: int = opt(0, "Random seed.")

    def __post_init__(self) -> None:
        require(self, "method", "data", "out")
        if self.top_k < 1:
            raise ConfigError(f"top_k must be >= 1, got {self.top_k}")


@dataclass
class EvalConfig(PromptOptions):
    """`reczero eval`: batched generation, honest parsing and metrics."""

    model: str = opt("", "Run directory, local model path or Hugging Face id.")
    data: str = opt("", "Prepared dataset directory.")
    split: str = opt("test", "Split to evaluate.", choices=["train", "valid", "test"])
    out: str | None = opt(None, "Output directory (default: RUN/eval/<split> for a run directory).")
    batch_size: int = opt(32, "Prompts per generation batch (sorted by length, left padding).")
    max_new_tokens: int = opt(256, "Maximum generated tokens per completion.")
    limit: int | None = opt(None, "Evaluate only the first N samples of the split.")
    backend: str = opt("transformers", "Generation backend ('vllm' needs a GPU and the 'gpu' extra).", choices=["transformers", "vllm"])
    vllm_gpu_memory_utilization: float | None = opt(None, "With --backend vllm: vLLM's share of the GPU memory (default: 0.9 for a rating model; 0.5 for an R2ec run, whose transformers copy reads the user vectors on the same GPU).")
    method: str | None = opt(None, "Name of the method in metrics.json and reports (default: the run's name).")
    seed: int = opt(0, "Random seed.")
    threads: int = opt(0, "CPU threads for torch (0: one for models under 50M parameters on CPU; torch's default otherwise).")

    def __post_init__(self) -> None:
        require(self, "model", "data")
        for name in ("batch_size", "max_new_tokens", "limit"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        share = self.vllm_gpu_memory_utilization
        if share is not None and not 0 < share <= 1:
            raise ConfigError(f"vllm_gpu_memory_utilization must be in (0, 1], got {share}")


@dataclass
class ServeConfig:
    """`reczero serve`: rating and ranking runs behind one HTTP API (predict, recommend, OpenAI chat)."""

    runs: list[str] = opt([], "Run directories to serve; NAME=RUN names the model (default: the run directory's name).", positional=True)
    host: str = opt("127.0.0.1", "Interface to listen on (0.0.0.0 exposes the server to the network: set --api-key-env).")
    port: int = opt(8000, "TCP port to listen on.")
    api_key_env: str | None = opt(None, "Environment variable holding the bearer key every /v1 route then requires (401 without it); /healthz, /readyz and /metrics stay open.")
    max_batch_size: int = opt(32, "Most requests one generate (or ranker) call serves at once.")
    max_wait_ms: float = opt(1000.0, "Longest a batch waits for the requests recent concurrency says are coming, in milliseconds; it also waits at most a quarter of the last model call, and a lone client not at all (see reczero.serve.batcher).")
    batching: bool = opt(True, "Micro-batch concurrent requests into one model call; --no-batching serves one request per call (for comparison in bench/serve.py).")
    max_new_tokens: int = opt(256, "Generated tokens per answer (/v1/predict), and the cap on a chat request's max_tokens.")
    max_body_bytes: int = opt(1_000_000, "Largest request body accepted (413 above it).")
    max_history: int = opt(200, "Most history entries a request may send (422 above it).")
    max_k: int = opt(100, "Largest k a /v1/recommend request may ask for (422 above it).")
    index: str = opt("exact", "Top-k search over item vectors: 'exact' (a matrix product) or 'faiss' (an HNSW index, approximate; needs the 'faiss' extra) for large catalogues.", choices=["exact", "faiss"])
    threads: int = opt(0, "CPU threads for torch (0: one for models under 50M parameters on CPU; torch's default otherwise).")
    seed: int = opt(0, "Random seed of sampled chat completions (temperature > 0).")

    def __post_init__(self) -> None:
        if isinstance(self.runs, str):      # `runs: one/run` in a YAML recipe
            self.runs = [self.runs]
        if not self.runs:
            raise ConfigError("give at least one run directory to serve: reczero serve RUN [RUN ...]")
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"port must be in 0..65535, got {self.port}")
        for name in ("max_batch_size", "max_new_tokens", "max_body_bytes", "max_history", "max_k"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.max_wait_ms < 0:
            raise ConfigError(f"max_wait_ms must be >= 0, got {self.max_wait_ms}")


@dataclass
class DemoConfig:
    """`reczero demo`: the whole pipeline on the embedded default."""

    out: str = opt("demo", "Output directory of the demo (every stage writes below it).")
    quick: bool = opt(False, "Small sizes: minutes on a laptop CPU.")
    task: str | None = opt(None, "Which part to run: 'rating' (RecZero, RecOne and the rating baselines), 'ranking' "
                           "(R2ec and its ablations against popularity, SASRec and the ranking ceiling) or 'all'. "
                           "Default: the recipe's 'parts' (--quick: both; full: rating; the full ranking part is "
                           "'reczero demo --task ranking').", choices=["all", "rating", "ranking"])
    force: bool = opt(False, "Redo stages that already finished.")
    jobs: int = opt(0, "Independent lanes of stages run side by side, each in its own process on one torch thread "
                    "(RecZero's; the teacher, SFT-only and RecOne; the ranking part), their output in OUT/logs/. "
                    "0: the recipe's 'jobs' (2 in both: one lane per core of a 2-core laptop); 1: one after another.")
    seed: int = opt(0, "Random seed of training and sampling (and of the world, unless the recipe's data section "
                    "pins it: the quick demo's world is the default one, seed 0, that its shipped base was built on).")


# ----------------------------------------------------------------------------------------------
# Machinery
# ----------------------------------------------------------------------------------------------


def require(cfg: Any, *names: str) -> None:
    for name in names:
        if getattr(cfg, name) in ("", None):
            raise ConfigError(f"--{name.replace('_', '-')} is required")


def parse_kv(text: str | None, what: str, valid_keys: tuple[str, ...] | None = None, value_type: type = str) -> dict[str, Any]:
    """Parse 'a=1,b=2' into a dict, naming ``what`` in errors."""
    if not text:
        return {}
    out: dict[str, Any] = {}
    for part in text.split(","):
        key, sep, value = part.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or not key or not value:
            raise ConfigError(f"{what}: expected 'key=value' pairs separated by commas, got {part!r}")
        if valid_keys is not None and key not in valid_keys:
            raise ConfigError(f"{what}: unknown key {key!r}{_nearest(key, valid_keys)}; expected one of {', '.join(valid_keys)}")
        try:
            out[key] = value_type(value)
        except ValueError as err:
            raise ConfigError(f"{what}: {key}={value!r} is not a valid {value_type.__name__}") from err
    return out


def fields_of(cls: type) -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(cls)}


def _nearest(key: str, valid: typing.Iterable[str]) -> str:
    close = difflib.get_close_matches(key, list(valid), n=1, cutoff=0.5)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _base_type(tp: Any) -> tuple[type, bool]:
    """(underlying type, optional?) of a resolved annotation like ``int | None``."""
    if isinstance(tp, types.UnionType) or typing.get_origin(tp) is typing.Union:
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return args[0], True
    return tp, False


def _coerce(cls: type, name: str, value: Any) -> Any:
    hints = typing.get_type_hints(cls)
    tp, optional = _base_type(hints[name])
    if value is None:
        if optional:
            return None
        raise ConfigError(f"{cls.__name__}.{name}: null is not allowed (expected {tp.__name__})")
    if isinstance(value, str) and tp is not str:
        value = yaml.safe_load(value) if value.strip() else value
        if value is None and optional:
            return None
    try:
        if tp is bool:
            if not isinstance(value, bool):
                raise TypeError
        elif tp is int:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise TypeError
            value = int(value)
        elif tp is float:
            if isinstance(value, bool):
                raise TypeError
            value = float(value)
        elif tp is str:
            value = str(value)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{cls.__name__}.{name}: {value!r} is not a valid {tp.__name__}") from err
    choices = fields_of(cls)[name].metadata.get("choices")
    if choices and value not in choices:
        raise ConfigError(f"{name}: {value!r} is not one of {', '.join(map(str, choices))}{_nearest(str(value), choices)}")
    return value


def check_keys(cls: type, keys: typing.Iterable[str], where: str) -> None:
    valid = fields_of(cls)
    for key in keys:
        if key not in valid:
            raise ConfigError(f"{where}: unknown key {key!r}{_nearest(key, valid)} for {cls.__name__}")


def load_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from err
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of key: value at the top level")
    return data


def resolve(cls: type[T], yaml_path: str | Path | None = None, cli: dict[str, Any] | None = None,
            sets: typing.Sequence[str] = ()) -> T:
    """Build ``cls`` with precedence defaults < YAML < CLI flags < ``--set key=value``.

    ``cli`` holds only the flags the user typed (argparse.SUPPRESS defaults); ``sets`` are
    ``key=value`` strings. Every key is checked against ``cls``'s fields.
    """
    values: dict[str, Any] = {}
    if yaml_path:
        data = load_yaml(yaml_path)
        data = {k.replace("-", "_"): v for k, v in data.items()}
        check_keys(cls, data, str(yaml_path))
        values.update({k: _coerce(cls, k, v) for k, v in data.items()})
    for key, value in (cli or {}).items():
        check_keys(cls, [key], "command line")
        values[key] = _coerce(cls, key, value)
    for item in sets:
        key, sep, value = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep:
            raise ConfigError(f"--set expects key=value, got {item!r}")
        check_keys(cls, [key], "--set")
        values[key] = _coerce(cls, key, value)
    return cls(**values)


def to_dict(cfg: Any) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def save_config(cfg: Any, out_dir: str | Path, name: str = "config.yaml") -> Path:
    """Write the fully resolved config into an output directory (every command does this)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / name
    header = f"# {type(cfg).__name__}: fully resolved (defaults < YAML recipe < CLI flags)\n"
    path.write_text(header + yaml.safe_dump(to_dict(cfg), sort_keys=False))
    return path


def prompt_mismatch(cfg: Any, model: str | Path) -> list[str]:
    """How ``cfg``'s prompt options differ from those ``model`` was trained with, read from its
    run's ``config.yaml`` (``RUN`` or ``RUN/model``); empty when they agree or nothing is recorded."""
    given = Path(str(model)).expanduser()
    for path in [given / "config.yaml"] + ([given.parent / "config.yaml"] if given.name == "model" else []):
        if path.is_file():
            try:
                trained = yaml.safe_load(path.read_text()) or {}
            except yaml.YAMLError:
                return []
            if not isinstance(trained, dict) or "template" not in trained:   # not a prompting command's config
                return []
            used = {f.name: trained.get(f.name, f.default) for f in dataclasses.fields(PromptOptions)
                    if f.name != "max_prompt_tokens"}      # an option added later has its default in older runs
            return [f"{name}: trained with {value!r}, now {getattr(cfg, name)!r}"
                    for name, value in used.items() if value != getattr(cfg, name)]
    return []


def warn_prompt_mismatch(cfg: Any, model: str | Path) -> None:
    """Log a warning for each prompt option that differs from the one ``model`` was trained with:
    a model prompted unlike its training is scored on a layout it never saw."""
    import logging

    for diff in prompt_mismatch(cfg, model):
        logging.getLogger("reczero").warning("%s: prompt option %s", model, diff)


def add_arguments(parser: argparse.ArgumentParser, cls: type, skip: typing.Iterable[str] = ()) -> None:
    """Add one ``--flag`` per dataclass field, with the field's help; defaults are SUPPRESSed so
    that only typed flags override a recipe. Defaults are shown in the help text."""
    hints = typing.get_type_hints(cls)
    skip = set(skip)
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        tp, _ = _base_type(hints[f.name])
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        help_text = f.metadata.get("help", "")
        if default not in ("", None):
            help_text += f" (default: {default})"
        if f.metadata.get("positional"):      # a list of operands, e.g. `reczero serve RUN [RUN ...]`
            parser.add_argument(f.name, nargs="*", default=argparse.SUPPRESS, metavar=f.name.rstrip("s").upper(),
                                help=f.metadata.get("help", ""))
            continue
        flag = "--" + f.name.replace("_", "-")
        kw: dict[str, Any] = {"dest": f.name, "default": argparse.SUPPRESS, "help": help_text}
        if tp is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, **kw)
            continue
        if "choices" in f.metadata:
            kw["choices"] = f.metadata["choices"]
        kw["metavar"] = {int: "N", float: "X"}.get(tp, f.name.upper() if "choices" not in kw else None)
        if kw["metavar"] is None:
            del kw["metavar"]
        parser.add_argument(flag, type=str, **kw)


def add_recipe_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="YAML", default=None,
                        help="YAML recipe; its keys are this command's flag names (CLI flags override it).")
    parser.add_argument("--set", metavar="KEY=VALUE", action="append", default=[], dest="sets",
                        help="Override any field, e.g. --set temperature=0.9 (repeatable; wins over the recipe).")


def from_args(cls: type[T], args: argparse.Namespace, exclude: typing.Iterable[str] = ()) -> T:
    """Resolve ``cls`` from a parsed namespace built with :func:`add_arguments`."""
    names = fields_of(cls)
    exclude = set(exclude)
    cli = {k: v for k, v in vars(args).items() if k in names and k not in exclude}
    return resolve(cls, getattr(args, "config", None), cli, getattr(args, "sets", ()))
