"""`sentictl serve`: the click command (import-light: the server stack loads inside the command)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

from .. import __version__, config
from ..kafka import KafkaConfig
from ..kafka.options import config_from_options, kafka_options
from .options import CONTEXT, cache_options, load_model, model_options, open_cache, opt

if TYPE_CHECKING:
    from ..serve import ServeSettings

# The command's --help (click cleans its indentation as it would a docstring's).
HELP = """Serve the model over HTTP with dynamic batching, the shared cache and metrics; speaks
text-embeddings-inference's (TEI's) classification API too.

\b
Routes:
  POST /sentiment     raw text body (the original demo) or JSON {"text"} / {"texts": [...]}
  POST /predict       TEI: {"inputs", "raw_scores", "truncate", "truncation_direction"}
                      (also POST / and /invocations); inputs: "text", ["text", "pair"],
                      or a batch [["text"], ["text", "pair"], ...]
  POST /tokenize      TEI: {"inputs", "add_special_tokens"} -> tokens with byte offsets
  POST /decode        TEI: {"ids", "skip_special_tokens"} -> texts
  GET  /health        200 once the model is loaded, 503 before (also GET / and /ping)
  GET  /info (TEI's fields and sentictl's), /metrics (Prometheus), /openapi.json
  POST /admin/reload  with --api-key only: reload the model folder now (as SIGHUP)

Concurrent requests are coalesced into batches (--max-batch-tokens, --max-wait-ms); cached
texts are answered without queueing. SIGTERM lets in-flight requests finish, then exits 0.
SIGHUP reloads the model folder without dropping a request: it is loaded and verified beside
the running model, then switched to between batches (requests in flight finish on the model
they started on; every answer names its model in the x-model-fingerprint header). A folder
that fails to verify or load leaves the running model serving (one log line,
sentictl_reload_failures_total). The model's files are read once and checked as read: later
changes to the folder change nothing the server runs until it is told to reload.
Texts follow the same record rules as score and bridge (one trailing line ending and a BOM
removed). Every error answers {"error", "error_type", "reason"} with TEI's error types and
statuses: Empty 400 (reason "empty"), Validation 422 (413 for a body, text or batch over a
limit, e.g. reason "too_long"), Overloaded 429, Backend 424, Unhealthy 503.

\b
What differs from TEI on purpose: it listens on 127.0.0.1:8080 (not 0.0.0.0:80); /metrics
needs the token like the other routes; blank texts are Empty (400) and texts over --max-chars
413 in every route; a TEI batch over --max-client-batch-size is 413 (as TEI documents it);
results are cached (one entry per text, pairs in a key space of their own).

Slow or stalled clients are bounded: headers and bodies have read timeouts (408), open
connections a cap kept below the descriptor limit (the oldest idle or half-sent one makes room
for a new client), requests in progress a limit (429).

\b
Exit status: 0 stopped by SIGTERM/SIGINT after in-flight requests finished; 1 could not start
(model folder, port in use, Kafka settings for --publish); 2 usage error.

\b
Examples:
  sentictl serve --port 8080
  curl -X POST -d 'Apple adjusted their targets downward.' localhost:8080/sentiment
  curl localhost:8080/predict -H 'content-type: application/json' \\
       -d '{"inputs": [["Shares jumped."], ["Losses widened."]]}'
  python -c 'from huggingface_hub import InferenceClient as C; \\
             print(C(base_url="http://127.0.0.1:8080").text_classification("Profit rose"))'
  sentictl serve --publish '{label}-news' --bootstrap localhost:9092
  sentictl serve --publish '{label}-news' --kafka-config client.properties -X compression.type=gzip
  sentictl serve --hostname 0.0.0.0 --api-key s3cret --header-timeout 5 --max-connections 2000
"""


@click.command("serve", context_settings=CONTEXT, help=HELP)
@model_options
@cache_options
@opt(
    "--host",
    "--hostname",
    "host",
    env="HOST",
    default="127.0.0.1",
    help="Address to bind (--hostname is TEI's name); 0.0.0.0 exposes the server to the network.",
)
@opt("--port", env="PORT", type=click.IntRange(0, 65535), default=8080, help="TCP port to listen on.")
@opt(
    "--max-batch-tokens",
    "max_batch_tokens",
    env="SERVE_MAX_BATCH_TOKENS",
    type=click.IntRange(min=1),
    default=None,
    show_default=str(config.DEFAULT_COALESCE_TOKENS),
    help="Token budget of the concurrent requests gathered into one batch (TEI's --max-batch-tokens); "
    "the engine then runs it in length-sorted runs of --run-tokens.",
)
@opt(
    "--max-wait-ms",
    env="MAX_WAIT_MS",
    type=click.FloatRange(min=0),
    default=5.0,
    help="How long a request may wait for others to share its inference batch.",
)
@opt(
    "--max-body-bytes",
    "--payload-limit",
    "max_body_bytes",
    env="MAX_BODY_BYTES",
    type=click.IntRange(min=1),
    default=1 << 20,
    help="Larger request bodies are refused with 413 (--payload-limit is TEI's name).",
)
@opt(
    "--max-client-batch-size",
    env="MAX_CLIENT_BATCH_SIZE",
    type=click.IntRange(min=1),
    default=64,
    help='Most inputs one request may send ({"texts": [...]}, a TEI batch, /tokenize or /decode lists); more → 413.',
)
@opt(
    "--max-chars",
    env="MAX_CHARS",
    type=click.IntRange(min=1),
    default=config.DEFAULT_MAX_CHARS,
    help="Texts longer than this many characters are refused with 413 (reason too_long).",
)
@opt(
    "--auto-truncate/--no-auto-truncate",
    env="AUTO_TRUNCATE",
    default=True,
    help="What a TEI request without \"truncate\" gets: inputs over the model's token limit cut (as TEI's "
    'default), or refused with 422. /sentiment always cuts (flagged "truncated").',
)
@opt(
    "--token",
    "--api-key",
    "token",
    env="TOKEN",
    default=None,
    help="Require 'Authorization: Bearer TOKEN' on every route but the health routes and /openapi.json "
    "(--api-key is TEI's name).",
)
@opt(
    "--publish",
    env="PUBLISH",
    default=None,
    help="Also produce every result to this Kafka topic; {label} routes by label, e.g. '{label}-news'.",
)
@kafka_options(client_id_default=f"sentictl-serve-{__version__}", purpose=" for --publish")
@opt("--access-log/--no-access-log", env="ACCESS_LOG", default=False, help="Log one line per request on stderr.")
@opt(
    "--graceful-timeout",
    env="GRACEFUL_TIMEOUT",
    type=click.FloatRange(min=0),
    default=30.0,
    help="On SIGTERM, how long in-flight requests may take before they are cancelled.",
)
@opt(
    "--header-timeout",
    env="HEADER_TIMEOUT",
    type=click.FloatRange(min=0, min_open=True),
    default=10.0,
    help="A request's headers must arrive within this many seconds of connecting (on a kept-alive "
    "connection: of the request's first byte), else 408 and the connection is closed.",
)
@opt(
    "--body-timeout",
    env="BODY_TIMEOUT",
    type=click.FloatRange(min=0, min_open=True),
    default=30.0,
    help="A request's body must arrive within this many seconds of its headers, else 408 and close; "
    "a client that stops reading its answer for this long is closed too.",
)
@opt(
    "--keep-alive-timeout",
    env="KEEP_ALIVE_TIMEOUT",
    type=click.FloatRange(min=0, min_open=True),
    default=5.0,
    help="An idle kept-alive connection is closed after this many seconds.",
)
@opt(
    "--max-connections",
    env="MAX_CONNECTIONS",
    type=click.IntRange(min=1),
    default=None,
    help="Most client connections held at once. At the cap the oldest connection without a request in "
    "progress (slow headers, idle) is closed to let a new client in; when all are busy, new ones get "
    "503. Default: what the descriptor limit leaves free (the soft limit is raised to the hard one at "
    "start), at most 10000; never more than that.",
)
@opt(
    "--max-concurrent-requests",
    env="MAX_CONCURRENT_REQUESTS",
    type=click.IntRange(min=1),
    default=None,
    help="Most classification requests in progress at once (TEI's flag); only beyond it a request gets "
    "429 (Overloaded), so one request is always admitted when none is in progress. "
    "Default: 512, or half of --max-connections if less.",
)
def serve_command(**opts: Any) -> None:
    """Settings from the options (checked before the port opens), then the server until SIGTERM (--help: HELP)."""
    from ..errors import SentictlError
    from ..serve import serve

    kafka = _publish_config(opts)
    _notice_ignored_run_tokens()
    _check_model(opts)
    settings = _settings(opts, kafka)
    cache = open_cache(opts)
    try:
        serve(settings, lambda: load_model(opts, spin_after_run=False, verify="always"), cache)
    except SentictlError:
        if cache is not None:
            cache.close()
        raise


def _publish_config(opts: dict[str, Any]) -> KafkaConfig | None:
    """With --publish: its topic template checked, then the Kafka configuration (the same options and
    SENTICTL_KAFKA_* variables as bridge); without it, None."""
    if not opts["publish"]:
        return None
    from ..serve import check_topic_template

    check_topic_template(opts["publish"])
    # The brokers may come from --bootstrap, -X bootstrap.servers or --kafka-config: the shared
    # configuration refuses a missing one with one line (exit 1).
    return config_from_options(opts, needed_for="--publish")


def _notice_ignored_run_tokens() -> None:
    """Before --run-tokens, SENTICTL_MAX_BATCH_TOKENS set serve's per-run budget too: say where it went."""
    if config.getenv("MAX_BATCH_TOKENS") and not config.getenv("RUN_TOKENS"):
        from ..console import notice

        notice(
            f"{config.env('MAX_BATCH_TOKENS')} is ignored by serve: use {config.env('RUN_TOKENS')} for the "
            f"per-run budget, {config.env('SERVE_MAX_BATCH_TOKENS')} for TEI's --max-batch-tokens"
        )


def _check_model(opts: dict[str, Any]) -> None:
    """Fail before opening the port when the model directory is plainly wrong (loading comes later)."""
    from ..engine.manifest import MANIFEST, check_model_dir

    resolved = config.resolve_model_dir(opts["model_dir"])
    if resolved.bundled and not (resolved.path / MANIFEST).is_file():
        load_model(opts)  # raises the bundled-model message
    elif not resolved.bundled:
        check_model_dir(resolved.path)


def _settings(opts: dict[str, Any], kafka: KafkaConfig | None) -> ServeSettings:
    """ServeSettings from the command's options."""
    from ..serve import ServeSettings

    return ServeSettings(
        host=opts["host"],
        port=opts["port"],
        max_wait_ms=opts["max_wait_ms"],
        max_batch_tokens=opts["max_batch_tokens"] or config.DEFAULT_COALESCE_TOKENS,
        max_body_bytes=opts["max_body_bytes"],
        max_client_batch_size=opts["max_client_batch_size"],
        max_chars=opts["max_chars"],
        auto_truncate=opts["auto_truncate"],
        token=opts["token"] or None,
        publish=opts["publish"],
        kafka=kafka,
        access_log=opts["access_log"],
        graceful_timeout=opts["graceful_timeout"],
        max_connections=opts["max_connections"],
        max_concurrent_requests=opts["max_concurrent_requests"],
        header_timeout=opts["header_timeout"],
        body_timeout=opts["body_timeout"],
        keep_alive_timeout=opts["keep_alive_timeout"],
    )
