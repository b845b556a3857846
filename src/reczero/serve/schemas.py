"""Request and response bodies of the serving API (pydantic), with the limits that do not vary.

Sizes that a server sets (``--max-history``, ``--max-k``) are checked by the routes against the
app's :class:`~reczero.config.ServeConfig` and answered with a 422 naming the limit; the bounds
here are fixed sanity limits (string lengths, list lengths) so that no field can carry an
unbounded value past validation. Our own routes forbid unknown fields (a typo is a 422 naming it);
the OpenAI-compatible request ignores them, as OpenAI clients send optional fields we do not use.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

Id = Annotated[str, StringConstraints(min_length=1, max_length=256)]
ShortText = Annotated[str, StringConstraints(max_length=512)]
Attribute = Annotated[str, StringConstraints(max_length=128)]
LONG_TEXT = 20_000            # characters of a review, a description or a chat message
MAX_LIST = 10_000             # entries of any list before the server's own limits apply


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _one_of(obj: BaseModel, a: str, b: str) -> None:
    if (getattr(obj, a) is None) == (getattr(obj, b) is None):
        raise ValueError(f"give exactly one of {a!r} or {b!r}")


# ----------------------------------------------------------------------------------------------
# /v1/predict
# ----------------------------------------------------------------------------------------------


class HistoryEntry(Strict):
    """One item the user rated: an ``item_id`` the dataset knows (its title and attributes are
    looked up), or a ``title`` (with optional ``attributes``) for an item it does not."""

    item_id: Id | None = None
    title: ShortText | None = None
    attributes: list[Attribute] = Field(default_factory=list, max_length=64)
    rating: float = Field(allow_inf_nan=False)
    review: str | None = Field(None, max_length=LONG_TEXT)

    @model_validator(mode="after")
    def _named(self) -> HistoryEntry:
        if self.item_id is None and not (self.title or "").strip():
            raise ValueError("a history entry needs an 'item_id' the dataset knows or a 'title'")
        return self


class ItemText(Strict):
    """A target item the dataset does not know, described by its text."""

    title: Annotated[str, StringConstraints(min_length=1, max_length=512)]
    attributes: list[Attribute] = Field(default_factory=list, max_length=64)
    description: str | None = Field(None, max_length=LONG_TEXT)


class PredictRequest(Strict):
    """A rating for (user, item): ``user_id`` or an explicit ``history``; ``item_id`` or ``item``."""

    model: Id
    user_id: Id | None = None
    history: list[HistoryEntry] | None = Field(None, max_length=MAX_LIST)
    item_id: Id | None = None
    item: ItemText | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> PredictRequest:
        _one_of(self, "user_id", "history")
        _one_of(self, "item_id", "item")
        return self


class PredictResponse(BaseModel):
    model: str
    user_id: str | None
    item_id: str | None
    rating: float = Field(description="The parsed rating, else the stated fallback's value.")
    parsed: bool = Field(description="False when the answer held no readable rating on the scale.")
    fallback: str | None = Field(description="user_avg, item_avg or global_mean when not parsed, else null.")
    reasoning: str = Field(description="The answer's text before its <rate> step.")
    completion: str = Field(description="The model's whole answer.")
    latency_ms: float


# ----------------------------------------------------------------------------------------------
# /v1/recommend
# ----------------------------------------------------------------------------------------------


class RecommendRequest(Strict):
    """The top ``k`` items for ``user_id`` or for an explicit ``history`` of item ids (oldest first)."""

    model: Id
    user_id: Id | None = None
    history: list[Id] | None = Field(None, max_length=MAX_LIST)
    k: int | None = Field(None, ge=1, description="How many items (default: 10, or the server's --max-k if lower).")
    exclude_history: bool = Field(True, description="Leave the history's items out of the list.")

    @model_validator(mode="after")
    def _exactly_one(self) -> RecommendRequest:
        _one_of(self, "user_id", "history")
        return self


class RecommendedItem(BaseModel):
    item_id: str
    title: str | None
    score: float


class RecommendResponse(BaseModel):
    model: str
    user_id: str | None
    items: list[RecommendedItem]
    reasoning: str | None = Field(None, description="The model's reasoning before it ranked (R2ec); null for rankers that do not reason.")
    latency_ms: float


# ----------------------------------------------------------------------------------------------
# OpenAI-compatible chat
# ----------------------------------------------------------------------------------------------


class ChatMessage(BaseModel):
    role: Literal["system", "user", "assistant"]
    content: str = Field(max_length=LONG_TEXT * 5)


class ChatCompletionRequest(BaseModel):
    """The fields of OpenAI's chat request that a local model can honour; others are ignored."""

    model_config = ConfigDict(extra="ignore")

    model: Id
    messages: list[ChatMessage] = Field(min_length=1, max_length=256)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    temperature: float = Field(1.0, ge=0.0, le=2.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    n: Literal[1] = 1
    stream: bool = False
    stop: str | list[Annotated[str, StringConstraints(min_length=1, max_length=64)]] | None = Field(None)

    @model_validator(mode="after")
    def _stops(self) -> ChatCompletionRequest:
        if isinstance(self.stop, list) and len(self.stop) > 4:
            raise ValueError("'stop' takes at most 4 sequences")
        return self

    @property
    def stops(self) -> list[str]:
        if self.stop is None:
            return []
        return [self.stop] if isinstance(self.stop, str) else list(self.stop)

    @property
    def requested_tokens(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens
