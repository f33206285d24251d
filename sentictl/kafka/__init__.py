"""Kafka for every door: one connection config, producer/consumer factories, topic templates.

Import-light: kafka-python loads only when a client is made, and click only with
:mod:`sentictl.kafka.options` (the command-line layer over :func:`KafkaConfig`).
"""

from .clients import ConnectStopped, connect_with_retry, make_consumer, make_producer
from .config import SASL_MECHANISMS, SECURITY_PROTOCOLS, KafkaConfig
from .topics import TopicTemplate, check_topic, is_legal_topic, topic_problem

__all__ = [
    "ConnectStopped",
    "KafkaConfig",
    "SASL_MECHANISMS",
    "SECURITY_PROTOCOLS",
    "TopicTemplate",
    "check_topic",
    "connect_with_retry",
    "is_legal_topic",
    "make_consumer",
    "make_producer",
    "topic_problem",
]
