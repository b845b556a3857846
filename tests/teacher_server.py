"""A real OpenAI-compatible HTTP server on 127.0.0.1 for the teacher tests, with injected faults.

``POST /v1/chat/completions`` answers in the OpenAI response shape. Which request gets which
fault is decided by ``fault(index)`` (``index`` counts requests from 0), so tests are
deterministic. Fault kinds:

    "500", "503"   HTTP server error with a JSON error body (retried by the client)
    "400", "404"   HTTP client error (not retried: asking again gives the same answer)
    "429"          HTTP 429 with ``Retry-After: <retry_after>``
    "slow"         answers only after ``slow_s`` seconds (past the client's timeout)
    "malformed"    HTTP 200 whose body is not JSON
    "no_choices"   HTTP 200 with ``"choices": []``
    "empty"        HTTP 200 with empty content
    "drop"         closes the connection without any response
    "no_tags"      a well-formed answer whose text ignores the format

The normal answer is ``answer(messages) -> str`` (given by the test). With
``faults_per_conversation=k`` one conversation (the same messages) gets at most ``k`` faults, so a
client with more than ``k`` retries must get through, however requests interleave.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def cycle(kinds: Sequence[str | None], every: int = 1) -> Callable[[int], str | None]:
    """Every ``every``-th request gets the next fault of ``kinds`` (None: no fault)."""
    def fault(index: int) -> str | None:
        if index % every:
            return None
        return kinds[(index // every) % len(kinds)]
    return fault


class TeacherServer:
    def __init__(self, answer: Callable[[list[dict]], str], fault: Callable[[int], str | None] = lambda i: None,
                 retry_after: float = 0.05, slow_s: float = 1.0, delay_s: float = 0.0,
                 faults_per_conversation: int | None = None) -> None:
        self.answer, self.fault = answer, fault
        self.faults_per_conversation = faults_per_conversation
        self._faulted: Counter = Counter()      # conversation -> faults injected into it
        self.retry_after, self.slow_s, self.delay_s = retry_after, slow_s, delay_s
        self.requests: list[dict] = []          # every request body, in arrival order
        self.served = Counter()                 # fault kind (or "ok") -> count
        self.request_times: list[float] = []
        self._lock = threading.Lock()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}/v1"

    def __enter__(self) -> TeacherServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def _next(self, body: dict) -> str | None:
        with self._lock:
            index = len(self.requests)
            self.requests.append(body)
            self.request_times.append(time.monotonic())
            kind = self.fault(index)
            key = json.dumps(body.get("messages"), sort_keys=True)
            if kind and self.faults_per_conversation is not None:
                if self._faulted[key] >= self.faults_per_conversation:
                    kind = None
                else:
                    self._faulted[key] += 1
            self.served[kind or "ok"] += 1
        return kind

    def _handler(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:   # keep pytest output clean
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("content-length", 0))))
                if not self.path.endswith("/chat/completions"):
                    return self._send(404, {"error": {"message": f"no route {self.path}"}})
                kind = server._next(body)
                if server.delay_s:
                    time.sleep(server.delay_s)
                if kind in ("500", "503", "400", "404"):
                    return self._send(int(kind), {"error": {"message": f"injected HTTP {kind}"}})
                if kind == "429":
                    return self._send(429, {"error": {"message": "rate limited"}},
                                      {"Retry-After": f"{server.retry_after:g}"})
                if kind == "drop":
                    self.close_connection = True
                    self.connection.shutdown(2)
                    return None
                if kind == "malformed":
                    return self._send_raw(200, b'{"id": "x", "choices": [{"mess')
                if kind == "no_choices":
                    return self._send(200, _completion(body, None) | {"choices": []})
                if kind == "slow":
                    time.sleep(server.slow_s)
                content = {"empty": "", "no_tags": "Hmm, hard to say, maybe good."}.get(kind or "")
                if content is None:
                    content = server.answer(body["messages"])
                return self._send(200, _completion(body, content))

            def _send(self, code: int, payload: dict, headers: dict | None = None) -> None:
                self._send_raw(code, json.dumps(payload).encode(), headers)

            def _send_raw(self, code: int, data: bytes, headers: dict | None = None) -> None:
                try:
                    self.send_response(code)
                    self.send_header("content-type", "application/json")
                    self.send_header("content-length", str(len(data)))
                    for key, value in (headers or {}).items():
                        self.send_header(key, value)
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):   # the client timed out and left
                    pass

        return Handler


def _completion(body: dict, content: str | None) -> dict:
    return {
        "id": "chatcmpl-test", "object": "chat.completion", "created": int(time.time()),
        "model": body.get("model", "test"),
        "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": content}}],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
    }
