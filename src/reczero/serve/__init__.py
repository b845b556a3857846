"""`reczero serve`: trained runs behind one HTTP API (FastAPI on uvicorn).

Endpoints (all ``/v1`` routes take an optional bearer key, ``--api-key-env VAR``):

* ``POST /v1/predict`` - a rating run's rating for (user, item), by ids the dataset knows or by an
  explicit history and item text; with the reasoning, ``parsed`` and the fallback used, read exactly
  as ``reczero eval`` reads answers.
* ``POST /v1/recommend`` - a ranking run's top ``k`` items for a user or an explicit history
  (the history excluded by default); exact top-k, or a FAISS index over item vectors.
* ``POST /v1/chat/completions`` (plain and streamed) and ``GET /v1/models`` - OpenAI-compatible, so
  the ``openai`` client and ``reczero teacher --base-url`` can use a served model.
* ``GET /healthz``, ``GET /readyz`` (200 once the runs are loaded), ``GET /metrics`` (Prometheus).

The pieces: :mod:`~reczero.serve.app` (the app factory, guards, error answers),
:mod:`~reczero.serve.routes` and :mod:`~reczero.serve.openai_routes` (the routes),
:mod:`~reczero.serve.schemas` (request bodies with their limits), :mod:`~reczero.serve.models` (the
loaded runs), :mod:`~reczero.serve.dataset` (users' histories and items' text as prompt samples),
:mod:`~reczero.serve.batcher` (micro-batching), :mod:`~reczero.serve.recommenders` and
:mod:`~reczero.serve.topk` (what ``/v1/recommend`` serves and how it searches),
:mod:`~reczero.serve.metrics`. Nothing heavy is imported until a function runs.
"""

from __future__ import annotations

import logging
from typing import Any

from reczero.config import ServeConfig

log = logging.getLogger(__name__)

__all__ = ["create_app", "serve"]


def create_app(runs: Any, *, api_key: str | None = None, **options: Any):
    """The FastAPI app serving ``runs`` (see :func:`reczero.serve.app.create_app`)."""
    from reczero.serve.app import create_app as _create_app

    return _create_app(runs, api_key=api_key, **options)


def serve(cfg: ServeConfig) -> int:
    """The `reczero serve` command: check the runs, then serve until interrupted."""
    import uvicorn

    app = create_app(cfg)                      # plans every run: a wrong path fails here, in one line
    log.info("serving %s on http://%s:%d (batching: %s)", ", ".join(app.state.serve.specs), cfg.host, cfg.port,
             f"up to {cfg.max_batch_size} requests, adaptive wait of at most {cfg.max_wait_ms:g} ms" if cfg.batching else "off")
    uvicorn.run(app, host=cfg.host, port=cfg.port, log_config=None, access_log=False,
                timeout_graceful_shutdown=10)
    return 0
