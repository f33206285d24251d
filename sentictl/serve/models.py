"""Request and response bodies as pydantic models: they validate requests and generate /openapi.json.

The request models depend on --max-client-batch-size, so they are built per app by
:func:`request_models`. Which texts are acceptable (blank, too long) is not modelled here: every
text goes through the engine's record rules after the shape was checked.

The TEI routes' models follow text-embeddings-inference's schemas (``tests/tei/openapi.json``):
the same field names, shapes and defaults, so a TEI client's request means the same here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, TypeAdapter
from pydantic.fields import FieldInfo
from pydantic.json_schema import models_json_schema

from ..engine import REASONS
from ..errors import ERROR_TYPES

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
    """One label and its score (text-embeddings-inference's shape): a probability, or a logit with raw_scores."""

    label: str
    score: float


class SimpleToken(BaseModel):
    """One token of /tokenize (TEI's shape): start and stop are byte offsets into the text, null for special tokens."""

    id: int = Field(ge=0)
    text: str
    special: bool
    start: int | None = Field(None, ge=0)
    stop: int | None = Field(None, ge=0)


class Health(BaseModel):
    """Whether the model is loaded."""

    status: Literal["ok", "loading"]


class Loading(Health):
    """The 503 answer while the model loads: the status and TEI's error body."""

    error: str
    error_type: Literal["Unhealthy"]


class ClassifierModel(BaseModel):
    """The label maps of a sequence-classification model."""

    id2label: dict[str, str]
    label2id: dict[str, int]


class ModelType(BaseModel):
    """TEI's model type: always a classifier here."""

    classifier: ClassifierModel


class Info(BaseModel):
    """Which model runs, how, and the server's limits: TEI's Info fields, then sentictl's own."""

    model_config = ConfigDict(protected_namespaces=(), extra="allow")

    # text-embeddings-inference's Info
    model_id: str = Field(description="The model's source id (a hub id, or the name of its folder; never a path).")
    model_sha: str | None = Field(description="The source revision the model was exported from, when known.")
    model_dtype: str = Field(description="The running variant's precision: float32, float16 or int8.")
    served_model_name: str
    model_type: ModelType
    max_concurrent_requests: int = Field(ge=0, description="--max-concurrent-requests")
    max_input_length: int = Field(ge=0, description="The model's token limit.")
    max_batch_tokens: int = Field(ge=0, description="--max-batch-tokens: the token budget of one coalesced batch.")
    max_batch_requests: int | None = Field(ge=0, description="The most texts one inference batch holds.")
    max_client_batch_size: int = Field(ge=0, description="--max-client-batch-size")
    auto_truncate: bool = Field(description='--auto-truncate: what a request without "truncate" gets.')
    tokenization_workers: int = Field(ge=0, description="Threads the tokenizer may use.")
    version: str
    sha: str | None = None
    docker_label: str | None = None
    # sentictl's own
    model: str
    model_dir: str = Field(description="The name of the model's folder (never its location).")
    variant: str
    provider: str
    fingerprint: str
    max_length: int
    labels: list[str]
    long: str
    run_tokens: int = Field(description="--run-tokens: the token budget of one inference run.")
    max_wait_ms: float
    max_body_bytes: int
    max_chars: int
    max_connections: int | None = Field(
        None, description="The connection cap (--max-connections); null when not run by `sentictl serve`."
    )
    header_timeout: float
    body_timeout: float
    keep_alive_timeout: float
    cache: str | None = Field(
        description="The name of the result cache file (never its location); null with --no-cache."
    )
    publish: str | None
    uptime_s: float


# Reason codes of refusals that are not about one record (the record ones are engine.REASONS).
HTTP_REASONS = {
    "too_many_inputs": "more texts than --max-client-batch-size",
    "too_many_tokens": "over the model's token limit with truncation off",
    "body_too_large": "a body over --max-body-bytes",
    "unauthorized": "missing or wrong bearer token",
    "not_found": "no such route",
    "method_not_allowed": "the route takes another method",
    "timeout": "headers or body too slow",
    "connections_full": "every connection has a request in progress",
}


class ErrorResponse(BaseModel):
    """Every error answer (TEI's ErrorResponse): a message for people, TEI's error type, and sentictl's reason code."""

    error: str
    error_type: Literal[ERROR_TYPES]  # type: ignore[valid-type]
    reason: str | None = Field(None, description="A stable code for why: " + ", ".join([*REASONS, *HTTP_REASONS]) + ".")


# ---------------------------------------------------------------------------------- requests
@dataclass(frozen=True)
class RequestModels:
    """The request bodies of one app (their list limits come from its settings)."""

    sentiment_text: type[BaseModel]
    sentiment_texts: type[BaseModel]
    predict: type[BaseModel]
    tokenize: type[BaseModel]
    decode: type[BaseModel]


def predict_shape(value: Any) -> str:
    """Which of TEI's PredictInput forms a value is meant as: a text, a flat list (one text or a
    pair) or a batch (a list of lists); TEI decides by the first item the same way."""
    if isinstance(value, list):
        return "batch" if value and isinstance(value[0], list) else "flat"
    return "text"


def _ids_shape(value: Any) -> str:
    return "batch" if isinstance(value, list) and value and isinstance(value[0], list) else "ids"


def request_models(max_client_batch_size: int) -> RequestModels:
    """Request models whose text lists hold 1 to max_client_batch_size strings."""
    batch_size = Field(min_length=1, max_length=max_client_batch_size)
    return RequestModels(
        *_sentiment_models(batch_size),
        _predict_model(batch_size),
        _tokenize_model(batch_size),
        _decode_model(batch_size),
    )


def _sentiment_models(batch_size: FieldInfo) -> tuple[type[BaseModel], type[BaseModel]]:
    """The demo's JSON bodies: {"text"} and {"texts": [...]}."""

    class SentimentText(BaseModel):
        """One text to classify."""

        model_config = ConfigDict(strict=True, extra="forbid")
        text: str

    class SentimentTexts(BaseModel):
        """Several texts, answered in input order."""

        model_config = ConfigDict(strict=True, extra="forbid")
        texts: Annotated[list[str], batch_size]

    return SentimentText, SentimentTexts


def _predict_model(batch_size: FieldInfo) -> type[BaseModel]:
    """TEI's /predict body; its inputs a tagged union, so errors are those of the form the client meant."""
    sequence = Annotated[list[str], Field(min_length=1, max_length=2, description="[text] or [text, text pair]")]
    inputs_field = Annotated[
        Annotated[str, Tag("text"), Field(description="One text")]
        | Annotated[
            list[str],
            Tag("flat"),
            Field(min_length=1, max_length=2, description="One text [text] or one sentence pair [text, text pair]"),
        ]
        | Annotated[
            list[sequence],
            Tag("batch"),
            batch_size,
            Field(description="A batch: [[text], [text, text pair], ...], answered as a list of lists"),
        ],
        Discriminator(predict_shape),
    ]

    class PredictRequest(BaseModel):
        """text-embeddings-inference's classification request (other fields, e.g. "parameters", are ignored)."""

        model_config = ConfigDict(strict=True)
        inputs: inputs_field
        raw_scores: bool = Field(False, description="The model's raw logits instead of probabilities.")
        truncate: bool | None = Field(
            None,
            description="Cut inputs over the model's token limit (true) or refuse "
            "them with 422 (false); null: the server's --auto-truncate.",
        )
        truncation_direction: Literal["Left", "Right", "left", "right"] = Field(
            "Right", description="Which end of a too-long input is cut."
        )

    return PredictRequest


def _tokenize_model(batch_size: FieldInfo) -> type[BaseModel]:
    """TEI's /tokenize body."""

    class TokenizeRequest(BaseModel):
        """text-embeddings-inference's /tokenize request."""

        model_config = ConfigDict(strict=True)
        inputs: Annotated[
            Annotated[str, Tag("text")] | Annotated[list[str], Tag("texts"), batch_size],
            Discriminator(lambda value: "texts" if isinstance(value, list) else "text"),
        ]
        add_special_tokens: bool = True
        prompt_name: str | None = Field(
            None, description="Not supported (classification models have no prompts): must be null."
        )

    return TokenizeRequest


def _decode_model(batch_size: FieldInfo) -> type[BaseModel]:
    """TEI's /decode body."""
    # The bounds are documented, not enforced here: an id outside the vocabulary (negative, or past
    # its end) is the tokenizer's to refuse (422 Tokenizer, as TEI), which /decode checks.
    token_ids = list[Annotated[int, Field(json_schema_extra={"minimum": 0, "maximum": 2**32 - 1})]]

    class DecodeRequest(BaseModel):
        """text-embeddings-inference's /decode request."""

        model_config = ConfigDict(strict=True)
        ids: Annotated[
            Annotated[token_ids, Tag("ids")] | Annotated[list[token_ids], Tag("batch"), batch_size],
            Discriminator(_ids_shape),
        ]
        skip_special_tokens: bool = True

    return DecodeRequest


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
