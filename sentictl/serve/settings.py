"""What `sentictl serve` is told on its command line, besides the model and the cache."""

from __future__ import annotations

from dataclasses import dataclass

from .. import config
from ..kafka import KafkaConfig


@dataclass
class ServeSettings:
    """Everything `sentictl serve` needs besides the model and the cache."""

    host: str = "127.0.0.1"
    port: int = 8080
    max_wait_ms: float = 5.0
    max_batch_tokens: int = config.DEFAULT_COALESCE_TOKENS
    max_body_bytes: int = 1 << 20
    max_client_batch_size: int = 64
    max_queue: int = 1024
    max_chars: int = config.DEFAULT_MAX_CHARS
    token: str | None = None
    publish: str | None = None
    # The shared Kafka connection (same options and SENTICTL_KAFKA_* variables as bridge); set with --publish.
    kafka: KafkaConfig | None = None
    access_log: bool = False
    graceful_timeout: float = 30.0
