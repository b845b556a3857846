"""`reczero teacher`: cold-start reasoning samples for RecOne, with rationalisation.

What this module chose, and why:

* **Samples**: the first ``n`` of a permutation of the split under ``seed`` (so a larger ``n``
  with the same seed asks for a superset, and a rerun asks for the same ones).
* **One conversation per sample, at most ``max_tries`` teacher answers**. The first answer comes
  from the Think-before-Recommendation messages (:func:`reczero.prompts.build_messages`); its
  parsed rating is the teacher's ``prediction``. An answer that fails the template's format check
  is answered with a format reminder; one whose rating is off by more than ``tolerance`` is
  answered with the true rating ("the user actually rated it Y; write the steps so that they lead
  to Y") - **rationalisation**, as in the RecOne paper. The record's ``completion`` is the last
  answer, paired with the *original* prompt ``messages`` (the follow-up turns are how the answer
  was obtained, not part of what a student learns to answer).
* **Exactly one record per requested sample**: ``accepted``, or ``rejected`` with a ``reason``:
  ``format`` (no answer passed the format), ``wrong_rating`` (well-formed answers never came within
  the tolerance, even when told the rating) or ``endpoint_error`` (the endpoint failed beyond its
  retries; such samples are asked again by a rerun, see :mod:`reczero.teacher.store`).
* **The two teachers share one protocol** (``name``, ``await answer(sample, messages, feedback)``,
  ``await close()``): :class:`LLMTeacher` (an OpenAI-compatible endpoint, fault handling in
  :mod:`reczero.teacher.client`) and :class:`reczero.teacher.heuristic.HeuristicTeacher`. Feedback
  is a typed value, never a magic string the heuristic would have to parse.
* **Stopping**: if ``abort_after`` samples in a row fail on endpoint errors the run stops (a dead
  endpoint should not be hammered for hours); the exit status is non-zero only when nothing was
  accepted and every sample done failed on the endpoint, i.e. when nothing could be done.

The pieces: this module is the command (sample choice, the conversation, the run's summary);
:mod:`~reczero.teacher.client` (one chat request with bounded retries),
:mod:`~reczero.teacher.heuristic` (the embedded teacher without an endpoint) and
:mod:`~reczero.teacher.store` (the append-only JSONL output, resumable).
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import sys
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

from reczero.config import TeacherConfig
from reczero.data import schema
from reczero.data.schema import RatingScale
from reczero.errors import DataError
from reczero.prompts import build_messages, format_rating, template_tags
from reczero.rewards import check_format, parse_rating
from reczero.teacher.client import ChatClient, EndpointError, RetryPolicy
from reczero.teacher.heuristic import HeuristicTeacher
from reczero.teacher.store import ENDPOINT_ERROR, TeacherStore, summarise

log = logging.getLogger(__name__)

_LEADING_THINK = re.compile(r"^\s*<think>.*?</think>\s*", re.DOTALL)


@dataclass(frozen=True)
class Feedback:
    """What the teacher is told before answering again.

    ``rating`` is the true rating when rationalising (else None); ``format_error`` says the
    previous answer did not follow the template.
    """

    previous: str
    rating: float | None = None
    format_error: bool = False

    @property
    def kind(self) -> str:
        return "rationalise" if self.rating is not None else "format"


def feedback_prompt(feedback: Feedback, template: str, scale: RatingScale) -> str:
    tags = " ".join(f"<{t}>...</{t}>" for t in template_tags(template))
    fmt = f"use exactly the tags {tags} in this order, write nothing outside them, and only a number inside <rate>"
    if feedback.rating is None:
        return f"Your answer did not follow the required format. Answer again: {fmt}."
    y = format_rating(feedback.rating, scale)
    text = (f"The user actually rated this item {y}. Write your answer again so that every step leads to {y}: "
            f"ground it in the history and the item shown, end with <rate>{y}</rate>, and do not mention "
            f"that you were told the rating.")
    return text + (f" Your last answer also broke the format: {fmt}." if feedback.format_error else "")


class LLMTeacher:
    """A teacher behind an OpenAI-compatible endpoint."""

    def __init__(self, client: ChatClient, template: str, scale: RatingScale) -> None:
        self.client, self.template, self.scale = client, template, scale
        self.name = client.model

    async def answer(self, sample: dict[str, Any], messages: list[dict[str, str]], feedback: Feedback | None) -> str:
        conversation = list(messages)
        if feedback is not None:
            conversation += [{"role": "assistant", "content": feedback.previous},
                             {"role": "user", "content": feedback_prompt(feedback, self.template, self.scale)}]
        text = await self.client.complete(conversation)
        if self.template != "think-answer":   # reasoning models (R1 via Ollama) may prefix their thoughts
            text = _LEADING_THINK.sub("", text, count=1)
        return text.strip()

    async def close(self) -> None:
        await self.client.close()


async def teach_one(teacher: Any, sample: dict[str, Any], messages: list[dict[str, str]], cfg: TeacherConfig,
                    scale: RatingScale) -> dict[str, Any]:
    """Ask, check, rationalise: the record of one sample (EndpointError becomes a rejected record)."""
    truth = float(sample["rating"])
    record: dict[str, Any] = {
        "sample_id": sample["sample_id"], "messages": messages, "completion": "", "prediction": None,
        "rating": truth, "rationalised": False, "tries": 0, "status": "rejected", "reason": None,
        "teacher": teacher.name, "template": cfg.template,
    }
    feedback: Feedback | None = None
    rationalising = well_formed = False
    try:
        for tries in range(1, cfg.max_tries + 1):
            text = await teacher.answer(sample, messages, feedback)
            value = parse_rating(text, scale, cfg.template)
            ok = value is not None and check_format(text, cfg.template, scale)
            record.update(completion=text, tries=tries)
            if value is not None and not rationalising and record["prediction"] is None:
                record["prediction"] = value
            if not ok:
                feedback = Feedback(text, truth if rationalising else None, format_error=True)
                continue
            well_formed = True
            if abs(value - truth) <= cfg.tolerance + 1e-9:
                record.update(status="accepted", rationalised=rationalising)
                return record
            rationalising = True
            feedback = Feedback(text, truth)
    except EndpointError as err:
        record.update(reason=ENDPOINT_ERROR, detail=str(err))
        return record
    record["reason"] = "wrong_rating" if well_formed else "format"
    return record


def choose_samples(data_dir: str, split: str, n: int, seed: int) -> list[dict[str, Any]]:
    """The first ``n`` rows of a seeded permutation of the split, as plain dicts."""
    import numpy as np
    import pyarrow.parquet as pq

    schema.read_manifest(data_dir)
    path = schema.split_path(data_dir, split)
    if not path.is_file():
        raise DataError(f"{path}: split file missing")
    table = pq.read_table(path)
    missing = [c for c in ("sample_id", "rating") if c not in table.column_names]
    if missing:
        raise DataError(f"{path}: no column(s) {', '.join(missing)}; expected the prepared-sample schema")
    if table.num_rows == 0:
        raise DataError(f"{path}: the {split} split is empty")
    if n > table.num_rows:
        log.warning("--n %d is more than the %d samples of %s; asking for all of them", n, table.num_rows, path)
    order = np.random.default_rng(seed).permutation(table.num_rows)[:n]
    rows = table.take(order).to_pylist()
    ids = [r["sample_id"] for r in rows]
    if len(set(ids)) != len(ids):
        raise DataError(f"{path}: sample_id is not unique ({len(ids) - len(set(ids))} duplicates among the chosen)")
    return rows


def make_teacher(cfg: TeacherConfig, scale: RatingScale) -> Any:
    if cfg.heuristic:
        return HeuristicTeacher(cfg.template, scale, seed=cfg.seed, shown_history=cfg.prompt_history,
                                shown_reviews=cfg.prompt_item_reviews)
    api_key = os.environ.get(cfg.api_key_env)
    if not api_key:
        log.info("$%s is not set; sending a placeholder key (fine for local endpoints)", cfg.api_key_env)
        api_key = "not-needed"
    client = ChatClient(cfg.base_url, cfg.model, api_key, timeout=cfg.request_timeout,
                        policy=RetryPolicy(cfg.max_retries, cfg.retry_delay),
                        temperature=cfg.temperature, max_tokens=cfg.max_tokens, seed=cfg.seed)
    return LLMTeacher(client, cfg.template, scale)


def run_teacher(cfg: TeacherConfig) -> int:
    """The `reczero teacher` command: returns the exit status (see the module docstring)."""
    return asyncio.run(_run(cfg))


async def _run(cfg: TeacherConfig) -> int:
    started = time.monotonic()
    schema.require_ratings(cfg.data, "teacher")
    scale = schema.rating_scale(cfg.data)
    samples = choose_samples(cfg.data, cfg.split, cfg.n, cfg.seed)
    requested = {s["sample_id"] for s in samples}
    teacher = make_teacher(cfg, scale)
    try:
        with TeacherStore(cfg.out) as store:
            done = store.open()
            _check_existing(store, teacher.name, cfg.template, requested)
            todo = [s for s in samples if s["sample_id"] not in done]
            log.info("%d samples requested from %s/%s; %d already recorded in %s; %d to do",
                     len(samples), cfg.data, cfg.split, len(samples) - len(todo), cfg.out, len(todo))
            new, stopped = await _teach_all(cfg, scale, teacher, todo, store)
    finally:
        await teacher.close()
    return _report(cfg, teacher, new, requested, len(samples) - len(todo), store, stopped,
                   time.monotonic() - started)


async def _teach_all(cfg: TeacherConfig, scale: RatingScale, teacher: Any, todo: list[dict[str, Any]],
                     store: TeacherStore) -> tuple[list[dict[str, Any]], bool]:
    """Teach ``todo`` with ``concurrency`` workers, appending each record as it completes.

    Returns the new records and whether the run stopped early on a dead endpoint.
    """
    from tqdm import tqdm

    new: list[dict[str, Any]] = []
    status: Counter = Counter()
    workers = 1 if cfg.heuristic else cfg.concurrency
    abort_after = max(10, 2 * workers)
    state = {"streak": 0, "stopped": False}
    pending = iter(todo)
    tasks: list[asyncio.Task] = []

    async def worker(bar: Any) -> None:
        for sample in pending:   # one shared iterator: the event loop runs one worker at a time
            record = await teach_one(teacher, sample, build_messages(sample, cfg, scale=scale), cfg, scale)
            store.append(record)
            new.append(record)
            status["rationalised" if record["rationalised"] else record["status"]] += 1
            bar.update(1)
            bar.set_postfix(accepted=status["accepted"] + status["rationalised"], rationalised=status["rationalised"],
                            rejected=status["rejected"])
            state["streak"] = state["streak"] + 1 if record["reason"] == ENDPOINT_ERROR else 0
            if state["streak"] >= abort_after and not state["stopped"]:
                state["stopped"] = True
                log.error("%d samples in a row failed on endpoint errors (last: %s); stopping, a rerun resumes",
                          state["streak"], record.get("detail"))
                for task in tasks:   # a cancelled worker writes nothing: its sample is done by a rerun
                    if task is not asyncio.current_task():
                        task.cancel()
                return

    with tqdm(total=len(todo), desc=f"teacher {teacher.name}", unit="sample", disable=not todo) as bar:
        try:
            async with asyncio.TaskGroup() as group:
                tasks += [group.create_task(worker(bar)) for _ in range(workers)]
        except ExceptionGroup as group_error:   # the first real error, so that the CLI can print it
            raise group_error.exceptions[0] from None
    return new, state["stopped"]


def _check_existing(store: TeacherStore, name: str, template: str, requested: set[str]) -> None:
    ours = [r for sid, r in store.records.items() if sid in requested]
    others = Counter(f"{r.get('teacher')}/{r.get('template')}" for r in ours
                     if (r.get("teacher"), r.get("template")) != (name, template))
    if others:
        log.warning("%s already holds records of this request from other teachers/templates (%s); they are kept "
                    "and skipped", store.path, ", ".join(f"{k}: {v}" for k, v in others.items()))
    if len(store.records) > len(ours):
        log.info("%s also holds %d records of samples outside this request (another --n, --seed or --split?)",
                 store.path, len(store.records) - len(ours))


def _report(cfg: TeacherConfig, teacher: Any, new: list[dict[str, Any]], requested: set[str], skipped: int,
            store: TeacherStore, stopped: bool, seconds: float) -> int:
    counts = summarise(new)
    rejected = ", ".join(f"{k} {v}" for k, v in sorted(counts["rejected"].items())) or "none"
    recorded = len(requested & (set(store.records) | {r["sample_id"] for r in new}))
    lines = [f"teacher {teacher.name}: {len(new)} samples done in {seconds:.1f}s: {counts['accepted']} accepted "
             f"({counts['rationalised']} rationalised), rejected: {rejected}; {len(requested) - len(new) - skipped} "
             f"not reached; {skipped} were already recorded"]
    faults = getattr(getattr(teacher, "client", None), "faults", None)
    if faults:
        lines.append("endpoint faults retried: " + ", ".join(f"{k} {v}" for k, v in sorted(faults.items())))
    lines.append(f"{cfg.out}: {recorded} of {len(requested)} requested samples recorded")
    if counts["rejected"].get(ENDPOINT_ERROR):
        lines.append(f"{counts['rejected'][ENDPOINT_ERROR]} samples failed on endpoint errors; a rerun asks them again")
    if stopped:
        lines.append("stopped early: the endpoint kept failing; rerun the same command to continue")
    print("\n".join(lines))
    endpoint_only = bool(new) and all(r["reason"] == ENDPOINT_ERROR for r in new)
    if counts["accepted"] == 0 and endpoint_only:
        last = new[-1].get("detail", "")
        print(f"reczero teacher: nothing could be done: every sample failed on endpoint errors (last: {last})",
              file=sys.stderr)
        return 1
    if new and counts["accepted"] == 0:
        log.warning("no sample was accepted: check the teacher's answers in %s (reasons: %s)", cfg.out, rejected)
    return 0
