"""`sentictl serve`: the click command (import-light: the server stack loads inside the command)."""

from __future__ import annotations

from typing import Any

import click

from . import config
from .cli import CONTEXT, _opt, cache_options, load_model, model_options, open_cache

_SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
_SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")


@click.command("serve", context_settings=CONTEXT)
@model_options
@cache_options
@_opt("--host", env="HOST", default="127.0.0.1", help="Address to bind; 0.0.0.0 exposes the server to the network.")
@_opt("--port", env="PORT", type=click.IntRange(0, 65535), default=8080, help="TCP port to listen on.")
@_opt("--coalesce-tokens", env="COALESCE_TOKENS", type=click.IntRange(min=1), default=config.DEFAULT_COALESCE_TOKENS,
      help="Token budget of the concurrent requests gathered into one batch; the engine then runs "
           "it in length-sorted runs of --max-batch-tokens.")
@_opt("--max-wait-ms", env="MAX_WAIT_MS", type=click.FloatRange(min=0), default=5.0,
      help="How long a request may wait for others to share its inference batch.")
@_opt("--max-body-bytes", env="MAX_BODY_BYTES", type=click.IntRange(min=1), default=1 << 20,
      help="Larger request bodies are refused with 413.")
@_opt("--max-client-batch-size", env="MAX_CLIENT_BATCH_SIZE", type=click.IntRange(min=1), default=64,
      help="Most texts one request may send ({\"texts\": [...]} or /predict inputs); more → 413.")
@_opt("--max-queue", env="MAX_QUEUE", type=click.IntRange(min=1), default=1024,
      help="Most texts waiting for inference; requests beyond it get 429 at once.")
@_opt("--token", env="TOKEN", default=None,
      help="Require 'Authorization: Bearer TOKEN' on every route but /health and /openapi.json.")
@_opt("--publish", env="PUBLISH", default=None,
      help="Also produce every result to this Kafka topic; {label} routes by label, e.g. '{label}-news'.")
@_opt("--bootstrap", env="BOOTSTRAP", default=None, help="Kafka/Redpanda bootstrap servers for --publish (HOST:PORT[,...]).")
@_opt("--security-protocol", env="SECURITY_PROTOCOL", type=click.Choice(_SECURITY_PROTOCOLS, case_sensitive=False),
      default="PLAINTEXT", help="Broker security protocol for --publish.")
@_opt("--sasl-mechanism", env="SASL_MECHANISM", type=click.Choice(_SASL_MECHANISMS, case_sensitive=False),
      default=None, help="SASL mechanism (with SASL_PLAINTEXT or SASL_SSL).")
@_opt("--sasl-username", env="SASL_USERNAME", default=None, help="SASL user name.")
@_opt("--sasl-password", env="SASL_PASSWORD", default=None, help="SASL password (prefer the environment variable).")
@_opt("--ssl-cafile", env="SSL_CAFILE", type=click.Path(exists=True, dir_okay=False), default=None,
      help="CA bundle that signed the broker's certificate (SSL, SASL_SSL).")
@_opt("--access-log/--no-access-log", env="ACCESS_LOG", default=False, help="Log one line per request on stderr.")
@_opt("--graceful-timeout", env="GRACEFUL_TIMEOUT", type=click.FloatRange(min=0), default=30.0,
      help="On SIGTERM, how long in-flight requests may take before they are cancelled.")
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

    \b
    Examples:
      sentictl serve --port 8080
      curl -X POST -d 'Apple adjusted their targets downward.' localhost:8080/sentiment
      sentictl serve --publish '{label}-news' --bootstrap localhost:9092
    """
    from .errors import SentictlError
    from .server import ServeSettings, check_topic_template, serve

    if opts["publish"]:
        if not opts["bootstrap"]:
            raise click.UsageError("--publish needs --bootstrap HOST:PORT (or SENTICTL_BOOTSTRAP)")
        check_topic_template(opts["publish"])
    protocol = opts["security_protocol"].upper()
    if opts["sasl_mechanism"] and not protocol.startswith("SASL_"):
        raise click.UsageError("--sasl-mechanism needs --security-protocol SASL_PLAINTEXT or SASL_SSL")
    if protocol.startswith("SASL_") and not opts["sasl_mechanism"]:
        raise click.UsageError(f"--security-protocol {protocol} needs --sasl-mechanism")
    kafka = {
        "security_protocol": protocol,
        "sasl_mechanism": opts["sasl_mechanism"].upper() if opts["sasl_mechanism"] else None,
        "sasl_plain_username": opts["sasl_username"],
        "sasl_plain_password": opts["sasl_password"],
        "ssl_cafile": opts["ssl_cafile"],
    }
    _check_model(opts)
    settings = ServeSettings(
        host=opts["host"], port=opts["port"], max_wait_ms=opts["max_wait_ms"],
        max_batch_tokens=opts["coalesce_tokens"], max_body_bytes=opts["max_body_bytes"],
        max_client_batch_size=opts["max_client_batch_size"], max_queue=opts["max_queue"],
        token=opts["token"] or None, publish=opts["publish"], bootstrap=opts["bootstrap"], kafka=kafka,
        access_log=opts["access_log"], graceful_timeout=opts["graceful_timeout"],
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
    from . import config
    from .model import MANIFEST, read_manifest

    resolved = config.resolve_model_dir(opts["model_dir"])
    if resolved.bundled and not (resolved.path / MANIFEST).is_file():
        load_model(opts)  # raises the bundled-model message
    elif not resolved.bundled:
        read_manifest(resolved.path)
