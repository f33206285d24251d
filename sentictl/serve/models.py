"""Request and response bodies as pydantic models: they validate requests and generate /openapi.json.

The request models depend on --max-client-batch-size, so they are built per app by
:func:`request_models`. Which texts are acceptable (blank, too long) is not modelled here: every
text goes through the engine's record rules after the shape was checked.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, TypeAdapter
from pydantic.json_schema import models_json_schema

from ..engine import REASONS

# Where the generated request schemas live in /openapi.json, beside FastAPI's own.
REF_TEMPLATE = "#/components/schemas/{model}"


# ---------------------------------------------------------------------------------- responses
class Metadata(BaseModel):
    """What the original demo answered beside the label."""

    cache_hit: bool
    truncated: bool = Field(False, description="Present (true) only when the text was cut to the model's limit.")


class SentimentResult(BaseModel):
    """One classified text in the original demo's shape, with every label's score."""

    label: str
    score: float
    text: str = Field(description="The text as classified: a leading BOM and one trailing line ending removed.")
    metadata: Metadata
    scores: dict[str, float]


class Prediction(BaseModel):
    """One label and its score (text-embeddings-inference's shape)."""

    label: str
    score: float


class Health(BaseModel):
    """Whether the model is loaded."""

    status: Literal["ok", "loading"]


class Info(BaseModel):
    """Which model runs, how, and the server's limits."""

    model_config = ConfigDict(protected_namespaces=(), extra="allow")

    model_id: str = Field(description="The model's source id (a hub id, or the name of the folder it was exported from).")
    model: str
    model_dir: str = Field(description="The name of the model's folder (never its location).")
    variant: str
    provider: str
    fingerprint: str
    max_length: int
    labels: list[str]
    long: str
    version: str
    max_batch_tokens: int
    max_wait_ms: float
    max_client_batch_size: int
    max_queue: int
    max_body_bytes: int
    max_chars: int
    max_connections: int | None = Field(None, description="The connection cap (--max-connections); null when not run by `sentictl serve`.")
    max_concurrent_requests: int
    header_timeout: float
    body_timeout: float
    keep_alive_timeout: float
    cache: str | None = Field(description="The name of the result cache file (never its location); null with --no-cache.")
    publish: str | None
    uptime_s: float


class ErrorBody(BaseModel):
    """Every error answer: a message for people, a stable type, and a record's reason code if it has one."""

    error: str
    error_type: str
    reason: str | None = Field(None, description="Why a text was refused: " + ", ".join(REASONS) + ".")


# ---------------------------------------------------------------------------------- requests
@dataclass(frozen=True)
class RequestModels:
    """The request bodies of one app (their list limits come from its settings)."""

    sentiment_text: type[BaseModel]
    sentiment_texts: type[BaseModel]
    predict: type[BaseModel]


def request_models(max_client_batch_size: int) -> RequestModels:
    """Request models whose text lists hold 1 to max_client_batch_size strings."""
    texts_field = Annotated[list[str], Field(min_length=1, max_length=max_client_batch_size)]

    class SentimentText(BaseModel):
        """One text to classify."""

        model_config = ConfigDict(strict=True, extra="forbid")
        text: str

    class SentimentTexts(BaseModel):
        """Several texts, answered in input order."""

        model_config = ConfigDict(strict=True, extra="forbid")
        texts: texts_field

    # A tagged union reports the errors of the branch the client meant, not of both.
    inputs_field = Annotated[
        Annotated[str, Tag("text")] | Annotated[texts_field, Tag("texts")],
        Discriminator(lambda value: "texts" if isinstance(value, list) else "text"),
    ]

    class PredictRequest(BaseModel):
        """text-embeddings-inference's classification request (other fields are ignored)."""

        model_config = ConfigDict(strict=True)
        inputs: inputs_field
        raw_scores: bool = Field(False, description="Log-probabilities instead of probabilities.")
        truncate: bool = Field(False, description="Cut texts over the model's limit instead of refusing them.")

    return RequestModels(SentimentText, SentimentTexts, PredictRequest)


def request_body(content: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """An OpenAPI requestBody from pydantic types by media type, and the component schemas it refers to."""
    media: dict[str, Any] = {}
    components: dict[str, Any] = {}
    for media_type, tp in content.items():
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            # A model becomes a named component (a $ref), as FastAPI does with its own models.
            refs, defs = models_json_schema([(tp, "validation")], ref_template=REF_TEMPLATE)
            schema = dict(refs[(tp, "validation")])
        else:
            schema = TypeAdapter(tp).json_schema(ref_template=REF_TEMPLATE)
            defs = {"$defs": schema.pop("$defs", {})}
        components.update(defs.get("$defs", {}))
        media[media_type] = {"schema": schema}
    return {"requestBody": {"required": True, "content": media}}, components
