"""OpenAI-compatible ``POST /v1/chat/completions`` (plain and streamed) and ``GET /v1/models``.

So that the ``openai`` client - and ``reczero teacher --base-url`` - can use a served rating run.

What this module chose, and why:

* The messages are rendered with the model's own chat template (generation prompt added) and
  generated through the run's micro-batcher with the request's ``temperature`` and ``top_p``
  (``temperature: 0`` is greedy). ``max_tokens`` / ``max_completion_tokens`` is capped at the
  server's ``--max-new-tokens``; ``finish_reason`` is ``length`` when the answer used them all.
  ``stop`` sequences cut the answer after generation. ``n`` must be 1; unknown fields are ignored,
  as OpenAI clients send optional ones.
* **Streaming** (``"stream": true``) answers in OpenAI's server-sent-event chunk format: a role
  chunk, content chunks, a final chunk with ``finish_reason``, then ``data: [DONE]``. The batcher
  generates whole completions, so the chunks are sent once the completion is done: clients that
  stream work unchanged, but the first token arrives with the last (no per-token streaming of a
  batched ``generate``).
* ``usage`` counts tokens with the model's tokenizer: the rendered prompt, and the answer as
  decoded (special tokens skipped), which can differ from the generated count by a token.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Iterator

from fastapi import APIRouter, Depends, Request
from fastapi.responses import StreamingResponse

from reczero.serve.app import require_key, state_of
from reczero.serve.models import GenerationJob
from reczero.serve.schemas import ChatCompletionRequest

router = APIRouter(prefix="/v1", dependencies=[Depends(require_key)])

_PIECES = re.compile(r"\s*\S+|\s+$")          # words with their leading space: joined, they give the text back


@router.get("/models")
async def models(request: Request) -> dict:
    state = state_of(request)
    data = []
    for name, spec in sorted(state.specs.items()):
        run = state.runs.get(name)
        data.append({"id": name, "object": "model", "created": int(spec.path.stat().st_mtime), "owned_by": "reczero",
                     "kind": spec.kind, "ready": run is not None, "path": str(spec.path), "data": str(spec.data)})
    return {"object": "list", "data": data}


def cut_at_stop(text: str, stops: list[str]) -> tuple[str, bool]:
    """``text`` up to the first of ``stops`` (excluded), and whether one was found."""
    hits = [i for i in (text.find(s) for s in stops) if i >= 0]
    return (text[: min(hits)], True) if hits else (text, False)


@router.post("/chat/completions")
async def chat_completions(body: ChatCompletionRequest, request: Request):
    state = state_of(request)
    run = state.run(body.model, "rating")
    max_new = min(body.requested_tokens or state.cfg.max_new_tokens, state.cfg.max_new_tokens)
    job = GenerationJob(messages=[m.model_dump() for m in body.messages], max_new_tokens=max_new,
                        temperature=body.temperature, top_p=body.top_p)
    completion = await state.batchers[run.name].submit(job)
    text, stopped = cut_at_stop(completion.text, body.stops)
    finish = "stop" if stopped or completion.completion_tokens < max_new else "length"
    ident, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
    usage = {"prompt_tokens": completion.prompt_tokens, "completion_tokens": completion.completion_tokens,
             "total_tokens": completion.prompt_tokens + completion.completion_tokens}
    if not body.stream:
        return {"id": ident, "object": "chat.completion", "created": created, "model": run.name,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish,
                             "logprobs": None}],
                "usage": usage}
    return StreamingResponse(_chunks(ident, created, run.name, text, finish), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache"})


def _chunks(ident: str, created: int, model: str, text: str, finish: str) -> Iterator[str]:
    def event(delta: dict, finish_reason: str | None = None) -> str:
        chunk = {"id": ident, "object": "chat.completion.chunk", "created": created, "model": model,
                 "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason, "logprobs": None}]}
        return f"data: {json.dumps(chunk)}\n\n"

    yield event({"role": "assistant", "content": ""})
    for piece in _PIECES.findall(text):
        yield event({"content": piece})
    yield event({}, finish)
    yield "data: [DONE]\n\n"
