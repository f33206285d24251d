"""What `sentictl serve` is told on its command line, besides the model and the cache."""

from __future__ import annotations

from dataclasses import dataclass

from .. import config
from ..kafka import KafkaConfig

# Requests in progress at once when --max-concurrent-requests is not given (TEI's default too).
DEFAULT_CONCURRENT_REQUESTS = 512


@dataclass
class ServeSettings:
    """Everything `sentictl serve` needs besides the model and the cache."""

    host: str = "127.0.0.1"
    port: int = 8080
    max_wait_ms: float = 5.0
    # The token budget of one coalesced batch (TEI's --max-batch-tokens; the engine then runs it in
    # length-sorted runs of the model's --run-tokens).
    max_batch_tokens: int = config.DEFAULT_COALESCE_TOKENS
    max_body_bytes: int = 1 << 20
    max_client_batch_size: int = 64
    max_chars: int = config.DEFAULT_MAX_CHARS
    # What a TEI request without "truncate" gets: cut inputs over the model's limit (as TEI's default).
    auto_truncate: bool = True
    token: str | None = None
    publish: str | None = None
    # The shared Kafka connection (same options and SENTICTL_KAFKA_* variables as bridge); set with --publish.
    kafka: KafkaConfig | None = None
    access_log: bool = False
    graceful_timeout: float = 30.0
    # What a client may hold (see connections.py). None: derived when serve() starts (from the
    # descriptor limit, and half the connections at most, respectively).
    max_connections: int | None = None
    max_concurrent_requests: int | None = None
    header_timeout: float = 10.0
    body_timeout: float = 30.0
    keep_alive_timeout: float = 5.0
