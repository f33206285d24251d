"""`sentictl serve`: the click command (import-light: the server stack loads inside the command)."""

from __future__ import annotations

from typing import Any

import click

from .. import __version__, config
from ..kafka.options import apply_legacy_env, config_from_options, kafka_options
from .options import CONTEXT, cache_options, load_model, model_options, open_cache, opt


@click.command("serve", context_settings=CONTEXT)
@model_options
@cache_options
@opt("--host", env="HOST", default="127.0.0.1", help="Address to bind; 0.0.0.0 exposes the server to the network.")
@opt("--port", env="PORT", type=click.IntRange(0, 65535), default=8080, help="TCP port to listen on.")
@opt("--coalesce-tokens", env="COALESCE_TOKENS", type=click.IntRange(min=1), default=config.DEFAULT_COALESCE_TOKENS,
      help="Token budget of the concurrent requests gathered into one batch; the engine then runs "
           "it in length-sorted runs of --max-batch-tokens.")
@opt("--max-wait-ms", env="MAX_WAIT_MS", type=click.FloatRange(min=0), default=5.0,
      help="How long a request may wait for others to share its inference batch.")
@opt("--max-body-bytes", env="MAX_BODY_BYTES", type=click.IntRange(min=1), default=1 << 20,
      help="Larger request bodies are refused with 413.")
@opt("--max-client-batch-size", env="MAX_CLIENT_BATCH_SIZE", type=click.IntRange(min=1), default=64,
      help="Most texts one request may send ({\"texts\": [...]} or /predict inputs); more → 413.")
@opt("--max-chars", env="MAX_CHARS", type=click.IntRange(min=1), default=config.DEFAULT_MAX_CHARS,
      help="Texts longer than this many characters are refused with 413 (reason too_long).")
@opt("--max-queue", env="MAX_QUEUE", type=click.IntRange(min=1), default=1024,
      help="Most texts waiting for inference; requests beyond it get 429 at once.")
@opt("--token", env="TOKEN", default=None,
      help="Require 'Authorization: Bearer TOKEN' on every route but /health and /openapi.json.")
@opt("--publish", env="PUBLISH", default=None,
      help="Also produce every result to this Kafka topic; {label} routes by label, e.g. '{label}-news'.")
@kafka_options(client_id_default=f"sentictl-serve-{__version__}", purpose=" for --publish")
@opt("--access-log/--no-access-log", env="ACCESS_LOG", default=False, help="Log one line per request on stderr.")
@opt("--graceful-timeout", env="GRACEFUL_TIMEOUT", type=click.FloatRange(min=0), default=30.0,
      help="On SIGTERM, how long in-flight requests may take before they are cancelled.")
@opt("--header-timeout", env="HEADER_TIMEOUT", type=click.FloatRange(min=0, min_open=True), default=10.0,
      help="A request's headers must arrive within this many seconds of connecting (on a kept-alive "
           "connection: of the request's first byte), else 408 and the connection is closed.")
@opt("--body-timeout", env="BODY_TIMEOUT", type=click.FloatRange(min=0, min_open=True), default=30.0,
      help="A request's body must arrive within this many seconds of its headers, else 408 and close; "
           "a client that stops reading its answer for this long is closed too.")
@opt("--keep-alive-timeout", env="KEEP_ALIVE_TIMEOUT", type=click.FloatRange(min=0, min_open=True), default=5.0,
      help="An idle kept-alive connection is closed after this many seconds.")
@opt("--max-connections", env="MAX_CONNECTIONS", type=click.IntRange(min=1), default=None,
      help="Most client connections held at once. At the cap the oldest connection without a request in "
           "progress (slow headers, idle) is closed to let a new client in; when all are busy, new ones get "
           "503. Default: what the descriptor limit leaves free (the soft limit is raised to the hard one at "
           "start), at most 10000; never more than that.")
@opt("--max-concurrent-requests", env="MAX_CONCURRENT_REQUESTS", type=click.IntRange(min=1), default=None,
      help="Most /sentiment and /predict requests in progress at once; more get 429 at once. "
           "Default: 512, or half of --max-connections if less.")
def serve_command(**opts: Any) -> None:
    """Serve the model over HTTP with dynamic batching, the shared cache and metrics.

    \b
    Routes:
      POST /sentiment     raw text body (the original demo) or JSON {"text"} / {"texts": [...]}
      POST /predict       text-embeddings-inference style {"inputs", "raw_scores", "truncate"}
      GET  /health        200 once the model is loaded, 503 before
      GET  /info, /metrics (Prometheus), /openapi.json

    Concurrent requests are coalesced into batches (--coalesce-tokens, --max-wait-ms); cached
    texts are answered without queueing. SIGTERM lets in-flight requests finish, then exits 0.
    Texts follow the same record rules as score and bridge (one trailing line ending and a BOM
    removed); a refused one answers {"error", "error_type", "reason"}, e.g. reason "empty" (422)
    or "too_long" (413).

    Slow or stalled clients are bounded: headers and bodies have read timeouts (408), open
    connections a cap kept below the descriptor limit (the oldest idle or half-sent one makes room
    for a new client), requests in progress a limit (429).

    \b
    Examples:
      sentictl serve --port 8080
      curl -X POST -d 'Apple adjusted their targets downward.' localhost:8080/sentiment
      sentictl serve --publish '{label}-news' --bootstrap localhost:9092
      sentictl serve --host 0.0.0.0 --token s3cret --header-timeout 5 --max-connections 2000
    """
    from ..errors import SentictlError
    from ..serve import ServeSettings, check_topic_template, serve

    kafka = None
    if opts["publish"]:
        check_topic_template(opts["publish"])
        # The same Kafka options and SENTICTL_KAFKA_* variables as bridge; serve's old names still work.
        opts = apply_legacy_env(opts)
        if not opts.get("bootstrap"):
            raise click.UsageError("--publish needs --bootstrap HOST:PORT (or SENTICTL_KAFKA_BOOTSTRAP)")
        kafka = config_from_options(opts, needed_for="--publish")
    _check_model(opts)
    settings = ServeSettings(
        host=opts["host"], port=opts["port"], max_wait_ms=opts["max_wait_ms"],
        max_batch_tokens=opts["coalesce_tokens"], max_body_bytes=opts["max_body_bytes"],
        max_client_batch_size=opts["max_client_batch_size"], max_queue=opts["max_queue"], max_chars=opts["max_chars"],
        token=opts["token"] or None, publish=opts["publish"], kafka=kafka,
        access_log=opts["access_log"], graceful_timeout=opts["graceful_timeout"],
        max_connections=opts["max_connections"], max_concurrent_requests=opts["max_concurrent_requests"],
        header_timeout=opts["header_timeout"], body_timeout=opts["body_timeout"],
        keep_alive_timeout=opts["keep_alive_timeout"],
    )
    cache = open_cache(opts)
    try:
        serve(settings, lambda: load_model(opts, spin=False, verify="always"), cache)
    except SentictlError:
        if cache is not None:
            cache.close()
        raise


def _check_model(opts: dict[str, Any]) -> None:
    """Fail before opening the port when the model directory is plainly wrong (loading comes later)."""
    from .. import config
    from ..engine.model import MANIFEST, read_manifest

    resolved = config.resolve_model_dir(opts["model_dir"])
    if resolved.bundled and not (resolved.path / MANIFEST).is_file():
        load_model(opts)  # raises the bundled-model message
    elif not resolved.bundled:
        read_manifest(resolved.path)
