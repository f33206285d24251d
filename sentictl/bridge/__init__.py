"""The Kafka door: poll a batch → Engine.classify → produce → flush → commit.

Delivery is at-least-once by default: consumed offsets are committed only after every record
of the batch (results and dead letters) has been acknowledged by the broker, so a crash anywhere
re-delivers at most the batch in hand. ``exactly_once`` wraps each batch, its output and its
consumed offsets in one Kafka transaction instead.

Modules: ``settings`` (what the bridge is told and writes), ``loop`` (the Bridge), ``clients``
(its producer and consumer), ``classify`` (a batch's records → results and bad records),
``delivery`` (a batch's Checkpoint: produce, flush, commit), ``retry`` (broker outages),
``reload`` (SIGHUP), ``eos`` (--exactly-once start-up checks), ``metrics`` (counters), ``run``
(signals and the summary). Connections come from :mod:`sentictl.kafka`, records and verdicts
from :mod:`sentictl.engine`.
"""

from ..errors import BridgeError
from .loop import Bridge
from .metrics import BridgeMetrics, BridgeStats
from .run import run_bridge
from .settings import LABEL_HEADER, MODEL_HEADER, TEMPLATE_FIELDS, BridgeSettings, enrich

__all__ = [
    "Bridge",
    "BridgeError",
    "BridgeMetrics",
    "BridgeSettings",
    "BridgeStats",
    "LABEL_HEADER",
    "MODEL_HEADER",
    "TEMPLATE_FIELDS",
    "enrich",
    "run_bridge",
]
