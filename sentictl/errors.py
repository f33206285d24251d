"""Errors whose message is meant for the user; the CLI prints them and exits 1."""


class SentictlError(Exception):
    """Base class: the message says what went wrong and what to do about it."""


class ModelNotFound(SentictlError):
    """No usable model directory where one was expected."""


class ManifestError(SentictlError):
    """A model directory whose manifest is missing, malformed or does not match its files."""


class ExportError(SentictlError):
    """Exporting a checkpoint failed (download, conversion or parity)."""


class CacheError(SentictlError):
    """The result cache file cannot be opened or used."""


class InputError(SentictlError):
    """Input that cannot be read at all (as opposed to one bad record in a stream)."""


class KafkaConfigError(SentictlError):
    """Kafka connection settings that can never work (protocol/mechanism mismatch, missing file, ...)."""


class TopicError(SentictlError):
    """A topic name or topic template that Kafka would refuse or that uses unknown fields."""


class BrokerUnavailable(SentictlError):
    """No Kafka broker answered at the bootstrap servers within the connect timeout."""


class BridgeError(SentictlError):
    """The bridge cannot start or cannot go on (broker, settings, a failed delivery)."""


class BrokerLost(BridgeError):
    """The broker stopped answering mid-run for longer than --connect-timeout (nothing acknowledged was lost)."""


class OutputError(SentictlError):
    """An output that cannot be written: the same file as an input, a missing directory, a full disk."""


class InferenceError(SentictlError):
    """The model failed on an input (ONNX Runtime raised): a token id past its tables, a text past its positions."""


class IntegrityError(ManifestError):
    """A model file whose bytes do not match the sha256 its manifest records (edited or corrupt)."""


# ------------------------------------------------------------------------------------- HTTP
# text-embeddings-inference's error types (its ErrorType enum): every HTTP error body names one.
ERROR_TYPES = ("Unhealthy", "Backend", "Overloaded", "Validation", "Tokenizer", "Empty")


class HttpError(SentictlError):
    """An error the HTTP door answers as JSON {"error", "error_type"[, "reason"]}; HTTP_STATUS gives its status.

    error_type is one of TEI's ERROR_TYPES, so TEI clients read it; reason is sentictl's finer,
    stable code (a record reason such as "empty" or "too_long", or the class's own, e.g.
    "unauthorized"), for clients that need to tell apart refusals TEI lumps together.
    """

    error_type = "Backend"
    reason: str | None = None
    headers: tuple[tuple[str, str], ...] = ()

    def __init__(self, message: str, *, reason: str | None = None):
        super().__init__(message)
        self.message = message
        if reason is not None:
            self.reason = reason

    @property
    def status(self) -> int:
        """The HTTP status this error answers with."""
        return http_status(type(self))

    def body(self) -> dict[str, str]:
        """The JSON error body."""
        body = {"error": self.message, "error_type": self.error_type}
        if self.reason is not None:
            body["reason"] = self.reason
        return body


class EmptyInput(HttpError):
    """Nothing to classify: an empty or blank text, an empty list."""

    error_type = "Empty"
    reason = "empty"


class BadRequest(HttpError):
    """A body that cannot be read: not UTF-8, not JSON, or cut off."""

    error_type = "Validation"


class Unauthorized(HttpError):
    """Missing or wrong bearer token."""

    error_type = "Validation"
    reason = "unauthorized"
    headers = (("www-authenticate", "Bearer"),)


class NotFound(HttpError):
    """No such route."""

    error_type = "Validation"
    reason = "not_found"


class MethodNotAllowed(HttpError):
    """The route exists, not with this method."""

    error_type = "Validation"
    reason = "method_not_allowed"


class PayloadTooLarge(HttpError):
    """A request body over --max-body-bytes."""

    error_type = "Validation"
    reason = "body_too_large"


class ValidationFailed(HttpError):
    """Readable input that is not acceptable: wrong shape, not a string."""

    error_type = "Validation"


class InputTooLarge(ValidationFailed):
    """Input over a size limit a retry cannot change: a text over --max-chars, more texts than
    --max-client-batch-size."""

    reason = "too_many_inputs"


class TooManyTokens(ValidationFailed):
    """A text (or pair) over the model's token limit when the request asked not to truncate it."""

    reason = "too_many_tokens"


class TokenizerFailed(HttpError):
    """The tokenizer cannot encode or decode the input."""

    error_type = "Tokenizer"


class Overloaded(HttpError):
    """The server is full: --max-concurrent-requests requests in progress; retry shortly."""

    error_type = "Overloaded"


class BackendError(HttpError):
    """Inference failed."""

    error_type = "Backend"


class InternalError(BackendError):
    """The server itself failed (a bug; the details are in the server log)."""


class Unhealthy(HttpError):
    """The model is not loaded yet."""

    error_type = "Unhealthy"


# Answered by serve's connection guard (sentictl.serve.connections), outside any route.
class RequestTimeout(HttpError):
    """A request whose headers or body did not arrive in time (--header-timeout, --body-timeout)."""

    error_type = "Validation"
    reason = "timeout"


class ConnectionsFull(HttpError):
    """Every connection the server may hold (--max-connections) has a request in progress."""

    error_type = "Overloaded"
    reason = "connections_full"


# The one place an error type becomes an HTTP status (the most specific class listed wins).
# TEI's table: Empty 400, Validation and Tokenizer 422, Overloaded 429, Backend 424, Unhealthy 503;
# a body over the limit or too many texts 413 (as TEI documents it). The statuses TEI has no type
# for (an unreadable body, auth, routing, timeouts, the connection cap) keep HTTP's own meaning.
HTTP_STATUS: dict[type[HttpError], int] = {
    BadRequest: 400,
    EmptyInput: 400,
    Unauthorized: 401,
    NotFound: 404,
    MethodNotAllowed: 405,
    RequestTimeout: 408,
    PayloadTooLarge: 413,
    InputTooLarge: 413,
    ValidationFailed: 422,
    TokenizerFailed: 422,
    Overloaded: 429,
    BackendError: 424,
    InternalError: 500,
    Unhealthy: 503,
    ConnectionsFull: 503,
    HttpError: 500,
}


def http_status(cls: type[HttpError]) -> int:
    """The HTTP status of an error type (its nearest listed ancestor's)."""
    return next(HTTP_STATUS[c] for c in cls.__mro__ if c in HTTP_STATUS)


def error_for_status(status: int) -> type[HttpError]:
    """The error type to report a status raised by the web framework itself (404, 405, ...)."""
    for cls, code in HTTP_STATUS.items():
        if code == status:
            return cls
    return BadRequest if status < 500 else InternalError
