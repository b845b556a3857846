"""The runs a server holds: each loaded once, with the dataset its ``config.yaml`` names.

What this module chose, and why:

* **Two kinds of run.** A *rating* run holds a causal LM (``RUN/model/config.json``: RecZero,
  RecOne, SFT, the base): it answers ``/v1/predict`` and the OpenAI chat route. A *ranking* run is a
  fitted ranking baseline (``reczero baseline --method popularity|sasrec|itemknn``, loaded with
  ``reczero.baselines.load_ranker``): it answers ``/v1/recommend``. :func:`plan_run` tells them
  apart and checks the run and its dataset cheaply, so ``reczero serve`` refuses a wrong path in one
  line before anything heavy is loaded.
* **The run's own prompt**: a rating run is prompted with the prompt options of its
  ``config.yaml`` (as ``reczero eval`` warns when they differ), and its ratings are read with the
  rewards' ``parse_rating`` and the stated fallback of :func:`reczero.predictions.fallback_prediction`,
  exactly as ``reczero eval`` scores them.
* **All tokenizer and model work runs on the model's one batch thread** (:mod:`reczero.serve.batcher`):
  a fast tokenizer must not be called from two threads at once (it mutates its padding state), so
  prompts are rendered inside the batch, and a prompt that cannot be rendered or is too long for
  the model fails only its own request.
* **Greedy for predictions**, as in evaluation. Chat requests with ``temperature > 0`` sample with
  their temperature and ``top_p``; requests with different generation settings are batched apart.
"""

from __future__ import annotations

import dataclasses
import logging
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from reczero.config import ConfigError, PromptOptions, ServeConfig
from reczero.errors import ReczeroError
from reczero.serve.dataset import DatasetIndex
from reczero.serve.errors import InvalidValue

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunSpec:
    name: str
    path: Path
    kind: str                 # "rating" or "ranking"
    data: Path
    config: dict[str, Any] = field(compare=False, repr=False)


def plan_run(spec: str) -> RunSpec:
    """``RUN`` or ``NAME=RUN`` -> what will be loaded; a :class:`ReczeroError` naming what is wrong."""
    name, sep, path_text = spec.partition("=")
    if not sep:
        name, path_text = "", spec
    path = Path(path_text).expanduser()
    if not path.is_dir():
        raise ConfigError(f"{path}: no such run directory")
    config_path = path / "config.yaml"
    if not config_path.is_file():
        raise ConfigError(f"{path}: not a run directory (no config.yaml)")
    try:
        config = yaml.safe_load(config_path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{config_path}: not valid YAML: {err}") from err
    if not isinstance(config, dict) or not config.get("data"):
        raise ConfigError(f"{config_path}: names no dataset ('data'); serving needs the run's prepared dataset")
    data = Path(config["data"])
    if not (data / "manifest.json").is_file():
        raise ConfigError(f"{config_path}: its dataset {data} is not a prepared dataset (no manifest.json)")
    is_lm = (path / "model" / "config.json").is_file() or (path / "config.json").is_file()
    if not is_lm:
        from reczero.baselines import RANKERS, ranking_method

        if ranking_method(path) is None or not (path / "model").is_dir():
            raise ConfigError(f"{path}: holds neither a language model (model/config.json) nor a fitted ranking "
                              f"baseline ({', '.join(RANKERS)}: config.yaml's method and model/)")
    name = name or path.resolve().name
    return RunSpec(name=name, path=path, kind="rating" if is_lm else "ranking", data=data, config=config)


def prompt_options_of(config: dict[str, Any]) -> PromptOptions:
    """The run's prompt options (an option the run predates takes its default)."""
    known = {f.name for f in dataclasses.fields(PromptOptions)}
    return PromptOptions(**{k: v for k, v in config.items() if k in known})


# ----------------------------------------------------------------------------------------------
# Rating runs
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GenerationJob:
    """One completion to generate: from a sample (rendered with the run's prompt) or chat messages."""

    sample: dict[str, Any] | None = None
    messages: list[dict[str, str]] | None = None
    max_new_tokens: int = 256
    temperature: float = 0.0
    top_p: float = 1.0

    @property
    def settings(self) -> tuple[int, float, float]:
        return (self.max_new_tokens, self.temperature if self.temperature > 0 else 0.0,
                self.top_p if self.temperature > 0 else 1.0)


@dataclass(frozen=True)
class Completion:
    text: str
    prompt_tokens: int
    completion_tokens: int


class RatingRun:
    kind = "rating"

    def __init__(self, spec: RunSpec, cfg: ServeConfig, dataset: DatasetIndex) -> None:
        from reczero.models import configure_threads, load_model, resolve_model_path

        self.spec, self.name, self.dataset = spec, spec.name, dataset
        if dataset.scale is None:
            raise ConfigError(f"{spec.path}: its dataset {spec.data} has no rating scale; a rating run needs one")
        self.opts = prompt_options_of(spec.config)
        self.model_path = resolve_model_path(spec.path)
        self.model, self.tokenizer = load_model(self.model_path)
        if not getattr(self.tokenizer, "chat_template", None):
            raise ConfigError(f"{self.model_path}: the tokenizer has no chat template; it cannot be prompted")
        configure_threads(cfg.threads, self.model)
        self.context = int(getattr(self.model.config, "max_position_embeddings", 0) or 0)
        self.batch_size = cfg.max_batch_size

    # -- on the batch thread -----------------------------------------------------------------

    def _prompt(self, job: GenerationJob) -> str:
        from reczero.prompts import render_prompt

        if job.sample is not None:
            return render_prompt(job.sample, self.opts, self.tokenizer, self.dataset.scale)
        return self.tokenizer.apply_chat_template(job.messages, tokenize=False, add_generation_prompt=True)

    def _count(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def generate_batch(self, jobs: list[GenerationJob]) -> list[Completion | Exception]:
        """The batcher's ``run_batch``: prompts rendered, then one ``generate`` per generation setting."""
        from jinja2 import TemplateError  # raised by a chat template that refuses a conversation

        results: list[Completion | Exception | None] = [None] * len(jobs)
        prompts: dict[int, tuple[str, int]] = {}
        for i, job in enumerate(jobs):
            try:
                prompt = self._prompt(job)
                n = self._count(prompt)
                if self.context and n + job.max_new_tokens > self.context:
                    raise InvalidValue(f"the prompt is {n} tokens; with {job.max_new_tokens} new tokens it "
                                       f"exceeds the model's context of {self.context} tokens", param="messages")
                prompts[i] = (prompt, n)
            except (ReczeroError, InvalidValue, ValueError, TemplateError) as err:
                results[i] = err if isinstance(err, InvalidValue) else InvalidValue(f"cannot build the prompt: {err}")
        groups: dict[tuple, list[int]] = defaultdict(list)
        for i in prompts:
            groups[jobs[i].settings].append(i)
        for (max_new, temperature, top_p), members in groups.items():
            texts = self._generate([prompts[i][0] for i in members], max_new, temperature, top_p)
            for i, text in zip(members, texts, strict=True):
                results[i] = Completion(text, prompts[i][1], self._count(text))
        return results  # type: ignore[return-value]

    def _generate(self, prompts: list[str], max_new_tokens: int, temperature: float, top_p: float) -> list[str]:
        from reczero.generation import generate

        if temperature <= 0:
            return generate(self.model, self.tokenizer, prompts, batch_size=self.batch_size,
                            max_new_tokens=max_new_tokens, greedy=True, progress=False)
        # ``generate`` samples with the model's generation config: set the request's settings on it
        # for this call. Safe: only this (the model's batch) thread ever uses the model.
        gen = self.model.generation_config
        saved = (gen.temperature, gen.top_p, gen.top_k)
        gen.temperature, gen.top_p, gen.top_k = temperature, top_p, None     # no top-k: OpenAI has none
        try:
            return generate(self.model, self.tokenizer, prompts, batch_size=self.batch_size,
                            max_new_tokens=max_new_tokens, greedy=False, progress=False)
        finally:
            gen.temperature, gen.top_p, gen.top_k = saved

    # -- on the event loop -------------------------------------------------------------------

    def read_rating(self, sample: dict[str, Any], completion: str) -> tuple[float, bool, str | None]:
        """(rating, parsed, fallback) exactly as ``reczero eval`` scores a completion."""
        from reczero.predictions import fallback_prediction
        from reczero.rewards import parse_rating

        value = parse_rating(completion, self.dataset.scale, self.opts.template)
        if value is not None:
            return float(value), True, None
        value, fallback = fallback_prediction(sample, self.dataset.global_mean)
        return float(value), False, fallback

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "path": str(self.spec.path), "data": str(self.spec.data),
                "model": self.model_path, "template": self.opts.template}


# ----------------------------------------------------------------------------------------------
# Ranking runs
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RecommendJob:
    history: list[str]
    k: int
    exclude_history: bool


class RankingRun:
    kind = "ranking"

    def __init__(self, spec: RunSpec, cfg: ServeConfig, dataset: DatasetIndex) -> None:
        from reczero.baselines import load_ranker
        from reczero.serve.recommenders import RankerRecommender, Retriever

        self.spec, self.name, self.dataset = spec, spec.name, dataset
        self.recommender = RankerRecommender(load_ranker(spec.path))
        self.retriever = Retriever(self.recommender, cfg.index)

    def recommend_batch(self, jobs: list[RecommendJob]) -> list[Any]:
        """The batcher's ``run_batch``: one ``score`` call for the batch's histories."""
        k = max(job.k for job in jobs)
        lists = self.retriever.recommend([job.history for job in jobs], k, [job.exclude_history for job in jobs])
        return [(ids[:job.k], scores[:job.k], reasoning) for job, (ids, scores, reasoning) in zip(jobs, lists, strict=True)]

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "path": str(self.spec.path), "data": str(self.spec.data),
                "method": self.spec.config.get("method"), "n_items": len(self.recommender.item_ids)}


def load_runs(specs: list[RunSpec], cfg: ServeConfig) -> dict[str, Any]:
    """Each run loaded once; runs on the same dataset share one :class:`DatasetIndex`."""
    datasets: dict[Path, DatasetIndex] = {}
    runs: dict[str, Any] = {}
    for spec in specs:
        key = spec.data.resolve()
        if key not in datasets:
            datasets[key] = DatasetIndex(spec.data)
        cls = RatingRun if spec.kind == "rating" else RankingRun
        runs[spec.name] = cls(spec, cfg, datasets[key])
        log.info("loaded %s run %s from %s", spec.kind, spec.name, spec.path)
    return runs
