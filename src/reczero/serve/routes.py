"""``POST /v1/predict`` (a rating and its reasoning) and ``POST /v1/recommend`` (top-k items).

Each route checks the request against the server's limits (422 naming the limit), resolves the
model, user and items (404 naming what is unknown), then waits for its model's batcher.
"""

from __future__ import annotations

import re
import time

from fastapi import APIRouter, Depends, Request

from reczero.serve.app import require_key, state_of
from reczero.serve.errors import LimitExceeded, NotFound
from reczero.serve.models import GenerationJob, RecommendJob
from reczero.serve.schemas import (
    PredictRequest,
    PredictResponse,
    RecommendedItem,
    RecommendRequest,
    RecommendResponse,
)

router = APIRouter(prefix="/v1", dependencies=[Depends(require_key)])

DEFAULT_K = 10
_RATE_TAG = re.compile(r"<rate>", re.IGNORECASE)


def reasoning_of(completion: str) -> str:
    """The answer before its ``<rate>`` step (the whole answer when it has none)."""
    match = _RATE_TAG.search(completion)
    return (completion[: match.start()] if match else completion).strip()


def _check_history(n: int, limit: int) -> None:
    if n > limit:
        raise LimitExceeded(f"history has {n} entries, over this server's limit of {limit} (--max-history)",
                            param="history")


@router.post("/predict", response_model=PredictResponse)
async def predict(body: PredictRequest, request: Request) -> PredictResponse:
    started = time.perf_counter()
    state = state_of(request)
    run = state.run(body.model, "rating")
    if body.history is not None:
        _check_history(len(body.history), state.cfg.max_history)
    sample = run.dataset.sample(user_id=body.user_id, history=body.history, item_id=body.item_id, item=body.item)
    completion = await state.batchers[run.name].submit(GenerationJob(sample=sample, max_new_tokens=state.cfg.max_new_tokens))
    rating, parsed, fallback = run.read_rating(sample, completion.text)
    return PredictResponse(model=run.name, user_id=body.user_id, item_id=body.item_id, rating=rating, parsed=parsed,
                           fallback=fallback, reasoning=reasoning_of(completion.text), completion=completion.text,
                           latency_ms=(time.perf_counter() - started) * 1000)


@router.post("/recommend", response_model=RecommendResponse)
async def recommend(body: RecommendRequest, request: Request) -> RecommendResponse:
    started = time.perf_counter()
    state = state_of(request)
    k = min(DEFAULT_K, state.cfg.max_k) if body.k is None else body.k
    if k > state.cfg.max_k:
        raise LimitExceeded(f"k={k} is over this server's limit of {state.cfg.max_k} (--max-k)", param="k")
    run = state.run(body.model, "ranking")
    if body.user_id is not None:
        history = run.dataset.user_items(body.user_id)
    else:
        _check_history(len(body.history), state.cfg.max_history)
        for i, item_id in enumerate(body.history):
            if not run.dataset.has_item(item_id):
                raise NotFound(f"unknown item {item_id!r} in history[{i}]: not in the dataset {run.dataset.path}",
                               param=f"history[{i}]")
        history = list(body.history)
    ids, scores, reasoning = await state.batchers[run.name].submit(RecommendJob(history, k, body.exclude_history))
    items = [RecommendedItem(item_id=i, title=run.dataset.title(i), score=s) for i, s in zip(ids, scores, strict=True)]
    return RecommendResponse(model=run.name, user_id=body.user_id, items=items, reasoning=reasoning,
                             latency_ms=(time.perf_counter() - started) * 1000)
