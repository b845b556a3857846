"""One chat request to an OpenAI-compatible endpoint, with our own bounded retry policy.

What this module chose, and why:

* The ``openai`` client (``AsyncOpenAI``) speaks to any compatible endpoint (vLLM, DeepSeek,
  Ollama); its **own retries are switched off** (``max_retries=0``) so that the policy is ours,
  visible in the logs and testable against a server that injects faults.
* **Retried** (at most ``max_retries`` times, exponential backoff ``base * 2**k`` with jitter in
  ``[0.5, 1]`` of that, capped at ``max_delay``): timeouts, connection errors, HTTP 429 (waiting
  at least the server's ``Retry-After``/``retry-after-ms``, itself capped at
  :data:`MAX_RETRY_AFTER`), HTTP 5xx, HTTP 408/409, bodies that are not valid JSON, answers without
  ``choices`` and answers with empty content (an overloaded server often returns those).
* **Not retried**: other 4xx (a bad model name, a missing key, a prompt that is too long) - asking
  again would give the same answer.
* Whatever is finally given up on raises :class:`EndpointError` with a short ``kind`` (counted in
  the summary) and a detail a person can act on.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)

MAX_RETRY_AFTER = 300.0   # seconds; a longer Retry-After is cut to this (and logged)


class EndpointError(Exception):
    """A request that failed for good: ``kind`` is e.g. 'timeout', 'http_429', 'http_503', 'empty'."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(f"{kind}: {detail}")
        self.kind = kind
        self.detail = detail


class _Retryable(Exception):
    def __init__(self, kind: str, detail: str, retry_after: float | None = None) -> None:
        super().__init__(f"{kind}: {detail}")
        self.kind, self.detail, self.retry_after = kind, detail, retry_after


@dataclass
class RetryPolicy:
    """Bounded exponential backoff with jitter."""

    max_retries: int = 6
    base_delay: float = 1.0
    max_delay: float = 60.0

    def delay(self, retry: int, rng: random.Random, retry_after: float | None = None) -> float:
        """Seconds to wait before retry number ``retry`` (0-based)."""
        backoff = min(self.max_delay, self.base_delay * 2**retry) * rng.uniform(0.5, 1.0)
        if retry_after is not None:
            return max(backoff, min(retry_after, MAX_RETRY_AFTER))
        return backoff


@dataclass
class ChatClient:
    """``await client.complete(messages) -> str``: the assistant's text, retried per ``policy``."""

    base_url: str
    model: str
    api_key: str
    timeout: float = 120.0
    policy: RetryPolicy = field(default_factory=RetryPolicy)
    temperature: float = 0.6
    max_tokens: int = 2048
    seed: int = 0
    faults: Counter = field(default_factory=Counter)   # retried faults by kind, for the summary

    def __post_init__(self) -> None:
        from openai import AsyncOpenAI

        self._client = AsyncOpenAI(base_url=self.base_url, api_key=self.api_key, timeout=self.timeout, max_retries=0)
        self._rng = random.Random(self.seed)

    async def complete(self, messages: list[dict[str, str]]) -> str:
        for retry in range(self.policy.max_retries + 1):
            try:
                return await self._once(messages)
            except _Retryable as fault:
                self.faults[fault.kind] += 1
                if retry == self.policy.max_retries:
                    raise EndpointError(fault.kind, f"{fault.detail} (gave up after {retry + 1} attempts)") from None
                wait = self.policy.delay(retry, self._rng, fault.retry_after)
                log.debug("%s (attempt %d), retrying in %.2fs", fault, retry + 1, wait)
                await asyncio.sleep(wait)
        raise AssertionError("unreachable")

    async def close(self) -> None:
        await self._client.close()

    async def _once(self, messages: list[dict[str, str]]) -> str:
        import openai

        try:
            response = await self._client.chat.completions.create(
                model=self.model, messages=messages, temperature=self.temperature, max_tokens=self.max_tokens)
        except openai.APITimeoutError:
            raise _Retryable("timeout", f"no answer within {self.timeout:g}s from {self.base_url}") from None
        except openai.APIConnectionError as err:
            raise _Retryable("connection", f"cannot reach {self.base_url}: {err.__cause__ or err}") from None
        except openai.APIStatusError as err:
            code = err.status_code
            detail = f"HTTP {code} from {self.base_url}: {_short(err.message)}"
            if code == 429:
                raise _Retryable("http_429", detail, retry_after(err.response.headers)) from None
            if code >= 500 or code in (408, 409):
                raise _Retryable(f"http_{code}", detail) from None
            raise EndpointError(f"http_{code}", detail) from None
        except (openai.APIResponseValidationError, ValueError) as err:   # a body that is not JSON
            raise _Retryable("malformed", f"unreadable response from {self.base_url}: {_short(str(err))}") from None
        choices = getattr(response, "choices", None)
        if not choices:
            raise _Retryable("malformed", f"response without choices from {self.base_url}")
        message = getattr(choices[0], "message", None)
        content = getattr(message, "content", None)
        if not isinstance(content, str) or not content.strip():
            raise _Retryable("empty", f"empty answer from {self.base_url} (finish_reason={choices[0].finish_reason!r})")
        return content


def retry_after(headers: Any) -> float | None:
    """Seconds from ``retry-after-ms`` or ``Retry-After`` (seconds or an HTTP date), else None."""
    try:
        ms = headers.get("retry-after-ms")
        if ms is not None:
            return max(0.0, float(ms) / 1000)
        value = headers.get("retry-after")
        if value is None:
            return None
        try:
            return max(0.0, float(value))
        except ValueError:
            when = email.utils.parsedate_to_datetime(value)
            return max(0.0, when.timestamp() - time.time())
    except (TypeError, ValueError):
        log.debug("ignoring an unreadable Retry-After header: %r", headers)
        return None


def _short(text: str, limit: int = 200) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[:limit] + "..."
