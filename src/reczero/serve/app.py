"""The FastAPI app: state, start-up, the guards every request passes, and the open routes.

What this module chose, and why:

* **Loads in the background.** The app answers ``/healthz`` at once; the runs are loaded on a
  thread after start-up and ``/readyz`` says 200 only once every run is loaded (503 with the reason
  before that, or if loading failed). ``/v1`` routes answer 503 until then.
* **Guards, outermost first**: :class:`~reczero.serve.metrics.MetricsMiddleware` (counts, times,
  and turns any unhandled exception into a generic 500), :class:`BodyLimitMiddleware` (413 past
  ``max_body_bytes``, from ``Content-Length`` or while reading a chunked body), then the bearer key
  (a dependency of the ``/v1`` router, compared in constant time) and the request schemas.
* **One error shape** (:func:`reczero.serve.errors.error_body`) for our errors, FastAPI's schema
  errors (422, each field named by its path, e.g. ``history.0.rating``) and Starlette's own (unknown
  path 404, wrong method 405).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import secrets
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from reczero.config import ConfigError, ServeConfig
from reczero.serve.batcher import MicroBatcher
from reczero.serve.errors import (
    NotFound,
    NotReady,
    ServeError,
    Unauthorized,
    error_body,
)
from reczero.serve.metrics import MetricsMiddleware, ServeMetrics
from reczero.serve.models import RunSpec, load_runs, plan_run

log = logging.getLogger(__name__)


class ServeState:
    """What the routes share: the config, the planned and loaded runs, their batchers, the metrics."""

    def __init__(self, cfg: ServeConfig, api_key: str | None) -> None:
        self.cfg, self.api_key = cfg, api_key
        self.specs: dict[str, RunSpec] = {}
        for text in cfg.runs:
            spec = plan_run(text)
            if spec.name in self.specs:
                raise ConfigError(f"two runs are named {spec.name!r} ({self.specs[spec.name].path} and {spec.path}); "
                                  "name them with NAME=RUN")
            self.specs[spec.name] = spec
        self.metrics = ServeMetrics()
        self.runs: dict[str, Any] = {}
        self.batchers: dict[str, MicroBatcher] = {}
        self.ready = asyncio.Event()
        self.load_error: str | None = None

    async def load(self) -> None:
        try:
            runs = await asyncio.to_thread(load_runs, list(self.specs.values()), self.cfg)
        except Exception as err:      # a ReczeroError names the run; anything else is logged in full
            self.load_error = str(err)
            log.error("loading the runs failed: %s", err, exc_info=not isinstance(err, ConfigError))
            return
        batch, wait = (self.cfg.max_batch_size, self.cfg.max_wait_ms / 1000) if self.cfg.batching else (1, 0.0)
        for name, run in runs.items():
            fn = run.generate_batch if run.kind == "rating" else run.recommend_batch
            batcher = MicroBatcher(fn, name=name, max_batch_size=batch, max_wait_s=wait,
                                   on_batch=self.metrics.observe_batch(name))
            await batcher.start()
            self.batchers[name] = batcher
        self.runs = runs
        self.ready.set()
        log.info("ready: %s", ", ".join(f"{n} ({r.kind})" for n, r in runs.items()))

    async def stop(self) -> None:
        for batcher in self.batchers.values():
            await batcher.stop()

    def run(self, name: str, kind: str) -> Any:
        """The loaded run ``name`` of ``kind``; 404 naming it when unknown, 400 when of the other kind."""
        if name not in self.specs:
            raise NotFound(f"unknown model {name!r}; this server has {', '.join(sorted(self.specs))}", param="model")
        if not self.ready.is_set():
            raise NotReady(self.load_error and f"loading failed: {self.load_error}" or "the models are still loading")
        run = self.runs[name]
        if run.kind != kind:
            raise ServeError(f"model {name!r} is a {run.kind} run; this route needs a {kind} run", param="model")
        return run


def state_of(request: Request) -> ServeState:
    return request.app.state.serve


async def require_key(request: Request) -> None:
    """The ``/v1`` routes' guard: ``Authorization: Bearer <key>`` when the server has a key."""
    key = state_of(request).api_key
    if key is None:
        return
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not secrets.compare_digest(token.strip().encode(), key.encode()):
        raise Unauthorized("missing or wrong API key: send the header 'Authorization: Bearer <key>'")


class BodyLimitMiddleware:
    """413 for a request body over ``max_bytes`` (Starlette and uvicorn set no such limit).

    A declared ``Content-Length`` over the limit is refused before reading; otherwise the body is
    read here (at most ``max_bytes`` of it are ever held) and handed on whole, so a chunked body is
    refused as soon as it crosses the limit."""

    def __init__(self, app: Any, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None:
            if not declared.isdigit():
                return await _send_json(send, 400, error_body("Content-Length is not a number", "invalid_request_error", 400))
            if int(declared) > self.max_bytes:
                return await self._refuse(send)
        body, more = bytearray(), True
        while more:
            message = await receive()
            if message["type"] != "http.request":       # the client left
                return None
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > self.max_bytes:
                return await self._refuse(send)
        pending = [{"type": "http.request", "body": bytes(body), "more_body": False}]

        async def replay() -> dict:
            return pending.pop() if pending else await receive()     # then: disconnect notices

        await self.app(scope, replay, send)

    async def _refuse(self, send: Any) -> None:
        message = f"request body over this server's limit of {self.max_bytes} bytes (--max-body-bytes)"
        await _send_json(send, 413, error_body(message, "invalid_request_error", 413))


async def _send_json(send: Any, status: int, payload: dict) -> None:
    body = json.dumps(payload).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


# ----------------------------------------------------------------------------------------------
# Error answers
# ----------------------------------------------------------------------------------------------


def _field(loc: tuple) -> str:
    parts = [str(p) for p in loc if p != "body"]
    return ".".join(parts) or "body"


async def _serve_error(request: Request, err: ServeError) -> JSONResponse:
    headers = {}
    if isinstance(err, Unauthorized):
        headers["WWW-Authenticate"] = "Bearer"
    elif err.status == 503:
        headers["Retry-After"] = "1"
    return JSONResponse(error_body(err.message, err.type, err.status, err.param), err.status, headers=headers)


async def _validation_error(request: Request, err: RequestValidationError) -> JSONResponse:
    problems = []
    for e in err.errors():
        if e.get("type") == "json_invalid":        # loc is ("body", character offset)
            loc = e.get("loc", ())
            problems.append({"field": "body", "type": "json_invalid", "message": f"not valid JSON at character "
                             f"{loc[-1] if loc else '?'}: {e.get('ctx', {}).get('error', e.get('msg', ''))}"})
        else:
            problems.append({"field": _field(e.get("loc", ())), "message": e.get("msg", ""), "type": e.get("type", "")})
    message = "invalid request: " + "; ".join(f"{p['field']}: {p['message']}" for p in problems)
    first = problems[0]["field"] if problems else None
    return JSONResponse(error_body(message, "invalid_request_error", 422, first, errors=problems), 422)


async def _http_error(request: Request, err: StarletteHTTPException) -> JSONResponse:
    message = {404: f"no route {request.url.path}", 405: f"method {request.method} not allowed on {request.url.path}"}
    return JSONResponse(error_body(message.get(err.status_code, str(err.detail)), "invalid_request_error", err.status_code),
                        err.status_code, headers=getattr(err, "headers", None))


# ----------------------------------------------------------------------------------------------
# The app
# ----------------------------------------------------------------------------------------------


def create_app(runs: ServeConfig | list[str], *, api_key: str | None = None, **options: Any) -> FastAPI:
    """The serving app for ``runs`` (a :class:`ServeConfig`, or run directories plus its fields as
    keyword arguments). ``api_key`` (else ``$<api_key_env>``) makes every ``/v1`` route require it.

    >>> app = create_app(["runs/recone"], max_batch_size=16)          # doctest: +SKIP
    >>> uvicorn.run(app, host="127.0.0.1", port=8000)                 # doctest: +SKIP
    """
    from reczero.serve.openai_routes import router as openai_router
    from reczero.serve.routes import router as api_router

    cfg = runs if isinstance(runs, ServeConfig) else ServeConfig(runs=list(runs), **options)
    if api_key is None and cfg.api_key_env:
        api_key = os.environ.get(cfg.api_key_env)
        if not api_key:
            raise ConfigError(f"--api-key-env {cfg.api_key_env}: ${cfg.api_key_env} is not set (or empty)")
    state = ServeState(cfg, api_key)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        loading = asyncio.create_task(state.load())
        try:
            yield
        finally:
            loading.cancel()
            await state.stop()

    app = FastAPI(title="reczero serve", version="1", lifespan=lifespan)
    app.state.serve = state
    app.add_exception_handler(ServeError, _serve_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_middleware(BodyLimitMiddleware, max_bytes=cfg.max_body_bytes)
    paths = frozenset({"/healthz", "/readyz", "/metrics"} | {r.path for r in api_router.routes + openai_router.routes})
    app.add_middleware(MetricsMiddleware, metrics=state.metrics, paths=paths)      # outermost: sees every answer

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz() -> JSONResponse:
        if state.ready.is_set():
            return JSONResponse({"status": "ready", "models": sorted(state.runs)})
        reason = f"loading failed: {state.load_error}" if state.load_error else "loading"
        return JSONResponse({"status": "not ready", "reason": reason}, 503)

    @app.get("/metrics")
    async def metrics() -> Response:
        body, content_type = state.metrics.render()
        return Response(body, media_type=content_type)

    app.include_router(api_router)
    app.include_router(openai_router)
    return app
