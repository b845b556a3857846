"""`reczero serve` against a real uvicorn on 127.0.0.1: every rating route, auth, bad requests, batching.

One module-scoped server holds a tiny random Qwen2 rating run on a small RecWorld (the run's
``config.yaml`` names the dataset), behind a bearer key, with small limits so that each one can be
crossed. The random model writes gibberish, so its ratings are the stated fallbacks; a test that
needs a parsable answer wraps the real generation (as tests/test_evaluate.py does). After every bad
request the server must still answer a good one.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest

from reczero import cli, generation
from reczero.config import EvalConfig, save_config

KEY = "test-key-123"
LIMITS = {"max_new_tokens": 8, "max_history": 5, "max_body_bytes": 20_000, "max_k": 5, "max_wait_ms": 50.0,
          "max_batch_size": 8}


# ----------------------------------------------------------------------------------------------
# Fixtures: a world, a run, a live server
# ----------------------------------------------------------------------------------------------


def make_world(root: Path) -> tuple[Path, Path]:
    """A small RecWorld prepared dataset and a tiny random rating run whose config names it."""
    from conftest import make_test_model

    data = root / "data"
    assert cli.main(["-q", "data", "synth", "--users", "30", "--items", "20", "--seed", "1", "--out", str(data)]) == 0
    run = root / "tiny"
    make_test_model(run / "model")
    save_config(EvalConfig(model=str(run), data=str(data), template="structured"), run)
    return data, run


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> tuple[Path, Path]:
    return make_world(tmp_path_factory.mktemp("serve"))


class LiveServer:
    """uvicorn on 127.0.0.1 (a free port) in a thread; ``url``; waits for /readyz; stops cleanly."""

    def __init__(self, app) -> None:
        import uvicorn

        self.app = app
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.server = uvicorn.Server(uvicorn.Config(app, log_config=None, access_log=False, lifespan="on"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def __enter__(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/readyz", timeout=5).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"server at {self.url} not ready: {self.app.state.serve.load_error}")

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(30)
        self.sock.close()
        assert not self.thread.is_alive(), "the server did not stop"


@pytest.fixture(scope="module")
def server(world):
    from reczero.serve import create_app

    _, run = world
    with LiveServer(create_app([str(run)], api_key=KEY, **LIMITS)) as live:
        yield live


@pytest.fixture()
def client(server):
    with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {KEY}"}, timeout=60) as c:
        yield c


def known_pair(data: Path) -> tuple[str, str]:
    inter = pd.read_parquet(data / "interactions.parquet")
    row = inter.iloc[len(inter) // 2]
    return row["user_id"], row["item_id"]


def metric(server: LiveServer, name: str, **labels: str) -> float:
    """A sample's value from /metrics (0 when absent)."""
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(f"{server.url}/metrics", timeout=10).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return sample.value
    return 0.0


def still_serving(client: httpx.Client, data: Path) -> None:
    user, item = known_pair(data)
    r = client.post("/v1/predict", json={"model": "tiny", "user_id": user, "item_id": item})
    assert r.status_code == 200, r.text


STRUCTURED = ("<analyze user>likes quiet drama</analyze user><analyze item>a slow drama</analyze item>"
              "<match>a good fit</match><rate>4</rate>")


@pytest.fixture()
def answers(monkeypatch):
    """Wrap the real generation: prompts containing a key of ``state`` get that answer, or raise it."""
    real = generation.generate
    state: dict[str, object] = {}

    def wrapper(model, tokenizer, prompts, **kw):
        completions = real(model, tokenizer, prompts, **kw)
        out = []
        for prompt, completion in zip(prompts, completions, strict=True):
            forced = next((v for k, v in state.items() if k in prompt), None)
            if isinstance(forced, Exception):
                raise forced
            out.append(forced if forced is not None else completion)
        return out

    monkeypatch.setattr(generation, "generate", wrapper)
    return state


# ----------------------------------------------------------------------------------------------
# Open routes and auth
# ----------------------------------------------------------------------------------------------


def test_health_ready_and_metrics_need_no_key(server):
    assert httpx.get(f"{server.url}/healthz").json() == {"status": "ok"}
    assert httpx.get(f"{server.url}/readyz").json() == {"status": "ready", "models": ["tiny"]}
    r = httpx.get(f"{server.url}/metrics")
    assert r.status_code == 200 and "reczero_requests_total" in r.text


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": KEY},
                                     {"Authorization": f"Basic {KEY}"}])
@pytest.mark.parametrize("method,path", [("POST", "/v1/predict"), ("POST", "/v1/recommend"), ("GET", "/v1/models"),
                                         ("POST", "/v1/chat/completions")])
def test_every_v1_route_wants_the_key(server, world, headers, method, path):
    user, item = known_pair(world[0])
    r = httpx.request(method, f"{server.url}{path}", headers=headers,
                      json={"model": "tiny", "user_id": user, "item_id": item} if method == "POST" else None)
    assert r.status_code == 401, r.text
    assert r.headers["www-authenticate"] == "Bearer"
    assert "Authorization: Bearer" in r.json()["error"]["message"]


def test_readyz_reports_a_failed_load_and_v1_routes_answer_503(world, tmp_path):
    from reczero.serve import create_app

    data, run = world
    broken = tmp_path / "broken"
    (broken / "model").mkdir(parents=True)
    (broken / "model" / "config.json").write_text((run / "model" / "config.json").read_text())   # no weights
    (broken / "config.yaml").write_text((run / "config.yaml").read_text())
    server = LiveServer(create_app([str(broken)]))
    server.thread.start()
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not server.app.state.serve.load_error:
            time.sleep(0.1)
        r = httpx.get(f"{server.url}/readyz")
        assert r.status_code == 503 and r.json()["reason"].startswith("loading failed:")
        assert httpx.get(f"{server.url}/healthz").status_code == 200
        user, item = known_pair(data)
        r = httpx.post(f"{server.url}/v1/predict", json={"model": "broken", "user_id": user, "item_id": item})
        assert r.status_code == 503 and "loading failed" in r.json()["error"]["message"]
    finally:
        server.__exit__(None, None, None)


# ----------------------------------------------------------------------------------------------
# /v1/predict
# ----------------------------------------------------------------------------------------------


def test_predict_known_pair_falls_back_to_the_users_average_without_that_pair(client, world):
    data, _ = world
    user, item = known_pair(data)
    r = client.post("/v1/predict", json={"model": "tiny", "user_id": user, "item_id": item})
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["model"], body["user_id"], body["item_id"]) == ("tiny", user, item)
    assert body["parsed"] is False and body["fallback"] == "user_avg"      # a random model's gibberish
    inter = pd.read_parquet(data / "interactions.parquet")
    others = inter[(inter["user_id"] == user) & (inter["item_id"] != item)]
    assert body["rating"] == pytest.approx(others["rating"].mean())        # the pair itself is left out
    assert body["latency_ms"] > 0 and isinstance(body["completion"], str)


def test_predict_reads_a_parsable_answer_and_its_reasoning(client, world, answers):
    data, _ = world
    user, item = known_pair(data)
    answers["Target item:"] = STRUCTURED
    body = client.post("/v1/predict", json={"model": "tiny", "user_id": user, "item_id": item}).json()
    assert (body["rating"], body["parsed"], body["fallback"]) == (4.0, True, None)
    assert body["completion"] == STRUCTURED
    assert body["reasoning"].startswith("<analyze user>likes quiet drama") and "<rate>" not in body["reasoning"]


def test_predict_new_user_from_explicit_history_and_item_text(client, world):
    data, _ = world
    known_item = pd.read_parquet(data / "items.parquet").iloc[0]
    history = [{"item_id": known_item["item_id"], "rating": 5, "review": "loved it"},
               {"title": "A Film Nobody Knows", "attributes": ["noir"], "rating": 2}]
    r = client.post("/v1/predict", json={"model": "tiny", "history": history,
                                         "item": {"title": "Orbit Nine", "attributes": ["space"],
                                                  "description": "A crew drifts toward a dying star."}})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["user_id"] is None and body["item_id"] is None
    assert (body["rating"], body["fallback"]) == (3.5, "user_avg")         # the mean of the two ratings sent


def test_sample_has_the_shape_of_the_prepared_split(world):
    """A known user's serving sample agrees with a prepared test row whose target is their last
    interaction; the same history sent explicitly gives the same user fields."""
    from reczero.prompts import build_messages
    from reczero.serve.dataset import DatasetIndex
    from reczero.serve.schemas import HistoryEntry

    data, _ = world
    index = DatasetIndex(data)
    inter = pd.read_parquet(data / "interactions.parquet")
    last = inter.sort_values("timestamp").groupby("user_id").tail(1)
    test = pd.read_parquet(data / "test.parquet")
    rows = test.merge(last[["user_id", "item_id", "timestamp"]], on=["user_id", "item_id", "timestamp"])
    ties = inter.groupby(["user_id", "timestamp"]).size()
    rows = rows[[ties[(u, t)] == 1 for u, t in zip(rows["user_id"], rows["timestamp"], strict=True)]]
    assert len(rows), "no test row is its user's last interaction"
    row = rows.iloc[0].to_dict()
    sample = index.sample(user_id=row["user_id"], item_id=row["item_id"])
    for name in ("user_n", "item_title", "item_description"):
        assert sample[name] == row[name], name
    assert sample["user_avg"] == pytest.approx(row["user_avg"])
    assert list(sample["item_attributes"]) == list(row["item_attributes"])
    expected = [{k: (list(v) if k == "attributes" else v) for k, v in e.items()} for e in row["user_history"]]
    assert sample["user_history"] == expected

    explicit = [HistoryEntry(title=e["title"], attributes=list(e["attributes"]), rating=e["rating"], review=e["review"])
                for e in row["user_history"]]
    again = index.sample(history=explicit, item_id=row["item_id"])
    assert again["user_avg"] == pytest.approx(np.mean([e["rating"] for e in row["user_history"]]))

    opts = EvalConfig(model="m", data=str(data))
    lines = lambda s: build_messages(s, opts)[1]["content"].split("\n")      # noqa: E731
    assert [ln for ln in lines(again) if ln.startswith("- ") and "rated" in ln][: len(explicit)] == \
        [ln for ln in lines(sample) if ln.startswith("- ") and "rated" in ln][: len(explicit)]


# ----------------------------------------------------------------------------------------------
# Bad requests: a clear answer, and the server keeps serving
# ----------------------------------------------------------------------------------------------


def _bad_cases(user: str, item: str) -> list[tuple[str, dict, int, str]]:
    """(path, body, status, text the error must contain)."""
    entry = {"title": "x", "rating": 3}
    return [
        ("/v1/predict", {"model": "tiny", "item_id": item}, 422, "user_id"),
        ("/v1/predict", {"model": "tiny", "user_id": user}, 422, "item_id"),
        ("/v1/predict", {"modle": "tiny", "user_id": user, "item_id": item}, 422, "modle"),
        ("/v1/predict", {"model": "tiny", "history": [{"title": "x", "rating": "three"}], "item_id": item}, 422,
         "history.0.rating"),
        ("/v1/predict", {"model": "tiny", "history": [{"rating": 3}], "item_id": item}, 422, "item_id"),
        ("/v1/predict", {"model": "tiny", "history": [{"title": "x", "rating": 9}], "item_id": item}, 422,
         "history[0].rating"),
        ("/v1/predict", {"model": "tiny", "history": [entry] * 6, "item_id": item}, 422, "limit of 5"),
        ("/v1/predict", {"model": "nope", "user_id": user, "item_id": item}, 404, "'nope'"),
        ("/v1/predict", {"model": "tiny", "user_id": "no-such-user", "item_id": item}, 404, "'no-such-user'"),
        ("/v1/predict", {"model": "tiny", "user_id": user, "item_id": "no-such-item"}, 404, "'no-such-item'"),
        ("/v1/predict", {"model": "tiny", "history": [{"item_id": "gone", "rating": 3}], "item_id": item}, 404,
         "history[0].item_id"),
        ("/v1/predict", {"model": "tiny", "user_id": user, "item": {"title": "x" * 30_000}}, 413, "20000 bytes"),
        ("/v1/recommend", {"model": "tiny", "user_id": user, "k": 6}, 422, "limit of 5"),
        ("/v1/recommend", {"model": "tiny", "user_id": user, "k": 0}, 422, "k"),
        ("/v1/recommend", {"model": "tiny", "user_id": user, "k": 3}, 400, "rating run"),
        ("/v1/chat/completions", {"model": "tiny", "messages": []}, 422, "messages"),
        ("/v1/chat/completions", {"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "n": 2}, 422, "n"),
        ("/v1/chat/completions", {"model": "tiny", "messages": [{"role": "robot", "content": "hi"}]}, 422,
         "messages.0.role"),
        ("/v1/chat/completions", {"model": "gpt-9", "messages": [{"role": "user", "content": "hi"}]}, 404, "gpt-9"),
    ]


def test_each_bad_request_gets_a_clear_answer_and_the_server_keeps_serving(client, world):
    data, _ = world
    user, item = known_pair(data)
    for path, body, status, needle in _bad_cases(user, item):
        r = client.post(path, json=body)
        assert r.status_code == status, (path, body, r.text)
        error = r.json()["error"]
        assert needle in error["message"] or needle == error["param"], (needle, error)
        assert error["code"] == status and "Traceback" not in r.text
        still_serving(client, data)


def test_raw_bad_bodies(server, client, world):
    data, _ = world
    r = client.post("/v1/predict", content=b'{"model": "tiny", "user_id": ', headers={"content-type": "application/json"})
    assert r.status_code == 422 and "not valid JSON" in r.json()["error"]["message"]

    def chunks():                      # no Content-Length: the limit is enforced while reading
        yield b'{"model": "tiny", "history": ['
        for _ in range(500):
            yield b'{"title": "' + b"y" * 100 + b'", "rating": 3},'
        yield b'{"title": "z", "rating": 3}], "item_id": "x"}'

    refused = metric(server, "reczero_request_errors_total", route="/v1/predict", code="413")
    r = client.post("/v1/predict", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413 and "--max-body-bytes" in r.json()["error"]["message"]
    assert metric(server, "reczero_request_errors_total", route="/v1/predict", code="413") == refused + 1
    host, port = client.base_url.host, client.base_url.port     # a huge declared body is refused unread
    with socket.create_connection((host, port), timeout=30) as raw:
        raw.sendall(b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                    b"Content-Length: 999999999\r\n\r\n{")
        assert raw.recv(4096).startswith(b"HTTP/1.1 413 ")
    assert client.get("/v1/predict").status_code == 405
    assert client.get("/v1/no-such-route").status_code == 404
    still_serving(client, data)


def test_an_unexpected_error_is_a_generic_500_and_never_leaks(client, world, monkeypatch):
    from reczero.serve.models import RatingRun

    data, _ = world
    user, item = known_pair(data)

    def broken(self, sample, completion):
        raise RuntimeError("secret internal detail")

    monkeypatch.setattr(RatingRun, "read_rating", broken)
    r = client.post("/v1/predict", json={"model": "tiny", "user_id": user, "item_id": item})
    assert r.status_code == 500
    assert "secret" not in r.text and "Traceback" not in r.text
    assert r.json()["error"]["message"].startswith("internal server error")
    monkeypatch.undo()
    still_serving(client, data)


# ----------------------------------------------------------------------------------------------
# Concurrency: micro-batching, and a bad item failing alone
# ----------------------------------------------------------------------------------------------


async def _predict_many(url: str, bodies: list[dict]) -> list[httpx.Response]:
    async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {KEY}"}, timeout=120) as c:
        return await asyncio.gather(*(c.post("/v1/predict", json=b) for b in bodies))


def test_concurrent_predictions_are_batched(server, world):
    data, _ = world
    inter = pd.read_parquet(data / "interactions.parquet").drop_duplicates("user_id").head(16)
    before_count = metric(server, "reczero_batch_size_count", model="tiny")
    before_ones = metric(server, "reczero_batch_size_bucket", model="tiny", le="1.0")
    bodies = [{"model": "tiny", "user_id": u, "item_id": i} for u, i in zip(inter["user_id"], inter["item_id"], strict=True)]
    responses = asyncio.run(_predict_many(server.url, bodies))
    assert [r.status_code for r in responses] == [200] * len(bodies)
    assert [r.json()["user_id"] for r in responses] == list(inter["user_id"])     # each gets its own answer
    batches = metric(server, "reczero_batch_size_count", model="tiny") - before_count
    singles = metric(server, "reczero_batch_size_bucket", model="tiny", le="1.0") - before_ones
    assert batches < len(bodies) and singles < batches                 # some model call served several requests
    assert metric(server, "reczero_batch_size_bucket", model="tiny", le="8.0") == \
        metric(server, "reczero_batch_size_count", model="tiny")      # never more than --max-batch-size


def test_a_failing_item_fails_only_its_own_request(server, world, answers):
    data, _ = world
    users = pd.read_parquet(data / "interactions.parquet").drop_duplicates("user_id").head(6)
    answers["POISON-PILL"] = RuntimeError("generation blew up")
    bodies = [{"model": "tiny", "user_id": u, "item_id": i} for u, i in zip(users["user_id"], users["item_id"], strict=True)]
    bodies.insert(3, {"model": "tiny", "user_id": users["user_id"].iloc[0], "item": {"title": "POISON-PILL"}})
    responses = asyncio.run(_predict_many(server.url, bodies))
    codes = [r.status_code for r in responses]
    assert codes == [200, 200, 200, 500, 200, 200, 200], [r.text for r in responses]
    assert "blew up" not in responses[3].text


# ----------------------------------------------------------------------------------------------
# OpenAI compatibility: the openai client, and `reczero teacher --base-url`
# ----------------------------------------------------------------------------------------------


def test_openai_client_models_chat_and_stream(server):
    import openai

    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key=KEY, max_retries=0)
    models = client.models.list()
    assert [m.id for m in models.data] == ["tiny"]
    messages = [{"role": "system", "content": "You rate films."}, {"role": "user", "content": "Orbit Nine?"}]
    done = client.chat.completions.create(model="tiny", messages=messages, temperature=0, max_tokens=2048)
    text = done.choices[0].message.content
    assert done.choices[0].message.role == "assistant" and isinstance(text, str)
    assert 0 < done.usage.completion_tokens <= LIMITS["max_new_tokens"] + 1     # max_tokens capped by the server
    assert done.choices[0].finish_reason in ("stop", "length")
    stream = client.chat.completions.create(model="tiny", messages=messages, temperature=0, max_tokens=2048, stream=True)
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == text       # greedy: the same answer
    assert chunks[-1].choices[0].finish_reason == done.choices[0].finish_reason
    sampled = client.chat.completions.create(model="tiny", messages=messages, temperature=0.7, top_p=0.9, max_tokens=4)
    assert isinstance(sampled.choices[0].message.content, str)
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=f"{server.url}/v1", api_key="wrong", max_retries=0).models.list()
    with pytest.raises(openai.NotFoundError, match="gpt-9"):
        client.chat.completions.create(model="gpt-9", messages=messages)


def test_reczero_teacher_writes_cold_start_samples_from_the_served_model(server, world, tmp_path, monkeypatch):
    data, _ = world
    out = tmp_path / "teacher.jsonl"
    monkeypatch.setenv("SERVE_TEST_KEY", KEY)
    before = metric(server, "reczero_requests_total", route="/v1/chat/completions", method="POST", code="200")
    rc = cli.main(["-q", "teacher", "--base-url", f"{server.url}/v1", "--model", "tiny", "--api-key-env",
                   "SERVE_TEST_KEY", "--data", str(data), "--n", "3", "--max-tries", "2", "--max-retries", "0",
                   "--out", str(out)])
    assert rc == 0
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(records) == 3 and all(r["teacher"] == "tiny" for r in records)
    # A random model cannot follow the four-tag format: each sample was asked twice, then rejected.
    assert all((r["status"], r["reason"], r["tries"]) == ("rejected", "format", 2) for r in records)
    assert all(r["completion"] for r in records)
    served = metric(server, "reczero_requests_total", route="/v1/chat/completions", method="POST", code="200")
    assert served - before == 6


# ----------------------------------------------------------------------------------------------
# The command line
# ----------------------------------------------------------------------------------------------


def test_cli_refuses_bad_runs_in_one_line(tmp_path, world, capsys, monkeypatch):
    _, run = world
    assert cli.main(["serve"]) == 2
    assert "at least one run" in capsys.readouterr().err
    assert cli.main(["serve", str(tmp_path / "missing")]) == 2
    assert "no such run directory" in capsys.readouterr().err
    assert cli.main(["serve", str(tmp_path)]) == 2
    assert "no config.yaml" in capsys.readouterr().err
    assert cli.main(["serve", f"a={run}", f"a={run}"]) == 2
    assert "two runs are named 'a'" in capsys.readouterr().err
    monkeypatch.delenv("NO_SUCH_KEY_VAR", raising=False)
    assert cli.main(["serve", str(run), "--api-key-env", "NO_SUCH_KEY_VAR"]) == 2
    assert "$NO_SUCH_KEY_VAR is not set" in capsys.readouterr().err


def test_reczero_serve_command_serves_unbatched_and_stops_on_sigint(world):
    data, run = world
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "SERVE_CLI_KEY": KEY}
    cmd = [sys.executable, "-m", "reczero.cli", "-q", "serve", f"recone={run}", "--port", str(port),
           "--api-key-env", "SERVE_CLI_KEY", "--max-new-tokens", "4", "--no-batching"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{url}/readyz", timeout=5).status_code == 200:
                    break
            time.sleep(0.2)
        user, item = known_pair(data)
        bodies = [{"model": "recone", "user_id": user, "item_id": item}] * 4
        responses = asyncio.run(_predict_many(url, bodies))
        assert [r.status_code for r in responses] == [200] * 4 and responses[0].json()["model"] == "recone"
        text = httpx.get(f"{url}/metrics").text              # --no-batching: every model call served one request
        assert 'reczero_batch_size_bucket{le="1.0",model="recone"} 4.0' in text
        assert 'reczero_batch_size_count{model="recone"} 4.0' in text
    finally:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err.decode()[-2000:]
