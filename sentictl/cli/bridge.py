"""`sentictl bridge`: click only at import time (score imports this module at start-up)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import click

from .. import config
from ..kafka.options import kafka_options
from .options import CONTEXT, cache_options, load_model, model_options, open_cache, opt

if TYPE_CHECKING:
    from ..bridge import BridgeSettings

# Bridge options a Kafka consumer property can also set (-X, --kafka-config): option → kafka-python argument.
PROPERTY_OPTIONS = {
    "group": "group_id",
    "offset_reset": "auto_offset_reset",
    "session_timeout_ms": "session_timeout_ms",
    "max_poll_interval_ms": "max_poll_interval_ms",
    "batch_size": "max_poll_records",
}


@click.command("bridge", context_settings=CONTEXT)
@opt(
    "--in",
    "inputs",
    env="BRIDGE_IN",
    required=True,
    metavar="TOPIC[,TOPIC...]",
    help="Topic(s) to consume, comma-separated, e.g. --in news,press.",
)
@opt(
    "--out",
    env="BRIDGE_OUT",
    required=True,
    metavar="TOPIC|TEMPLATE",
    help="Topic for results, or a template with {label} and {topic}, e.g. '{label}-news'.",
)
@opt(
    "--group",
    env="BRIDGE_GROUP",
    default="sentictl",
    help="Consumer group; bridges in one group share the input partitions.",
)
@opt(
    "--dlq",
    env="BRIDGE_DLQ",
    default=None,
    metavar="TOPIC",
    help="Dead-letter topic for records that cannot be classified (default: log and count them).",
)
@opt(
    "--input",
    "input_format",
    env="BRIDGE_INPUT",
    type=click.Choice(["raw", "json"]),
    default="raw",
    help="raw: the value is the text; json: the value is an object holding the text in --field.",
)
@opt(
    "--field",
    env="BRIDGE_FIELD",
    default="text",
    help="JSON input: the field holding the text (dots reach nested fields).",
)
@opt(
    "--batch-size",
    env="BRIDGE_BATCH_SIZE",
    type=click.IntRange(min=1),
    default=256,
    help="Records per poll; one classify call, one flush and one commit per batch.",
)
@opt(
    "--exactly-once",
    env="BRIDGE_EXACTLY_ONCE",
    is_flag=True,
    default=False,
    help="Transactional output with the consumed offsets in the transaction (read it with isolation.level=read_committed).",
)
@opt(
    "--transactional-id",
    env="BRIDGE_TRANSACTIONAL_ID",
    default=None,
    help="With --exactly-once: a stable id per bridge instance (e.g. the pod name) so a restart fences its "
    "predecessor. Default: sentictl-GROUP-HOST-PID.",
)
@opt(
    "--skip-eos-check",
    env="BRIDGE_SKIP_EOS_CHECK",
    is_flag=True,
    default=False,
    help="With --exactly-once: skip the start-up check that the broker aborts a crashed producer's transaction.",
)
@opt(
    "--eos-check-topic",
    env="BRIDGE_EOS_CHECK_TOPIC",
    default="__sentictl_eos_check",
    help="Topic the --exactly-once start-up check writes one invisible record to.",
)
@opt(
    "--max-messages",
    env="BRIDGE_MAX_MESSAGES",
    type=click.IntRange(min=1),
    default=None,
    help="Stop after consuming this many records (default: run until stopped).",
)
@opt(
    "--idle-timeout",
    env="BRIDGE_IDLE_TIMEOUT",
    type=click.FloatRange(min=0),
    default=None,
    help="Stop after this many seconds without records, counted from the first partition assignment.",
)
@opt(
    "--connect-timeout",
    env="KAFKA_CONNECT_TIMEOUT",
    type=click.FloatRange(min=0),
    default=30.0,
    help="Keep retrying an unreachable broker this long (with backoff), at start-up and after a connection "
    "reset or broker restart mid-run, before giving up with exit 1 (the batch in hand stays uncommitted).",
)
@opt(
    "--session-timeout-ms",
    env="KAFKA_SESSION_TIMEOUT_MS",
    type=click.IntRange(min=1000),
    default=10_000,
    help="Consumer-group session timeout: a dead bridge's partitions move after this; joining takes about half.",
)
@opt(
    "--max-poll-interval-ms",
    env="KAFKA_MAX_POLL_INTERVAL_MS",
    type=click.IntRange(min=1000),
    default=300_000,
    help="Longest time one batch may take before the group considers this bridge stuck.",
)
@opt(
    "--from",
    "offset_reset",
    env="BRIDGE_FROM",
    type=click.Choice(["earliest", "latest"]),
    default="earliest",
    help="Where a new group starts reading (auto.offset.reset).",
)
@opt(
    "--max-chars",
    env="MAX_CHARS",
    type=click.IntRange(min=1),
    default=config.DEFAULT_MAX_CHARS,
    help="Texts longer than this many characters are bad records (DLQ or log).",
)
@opt(
    "--metrics-port",
    env="BRIDGE_METRICS_PORT",
    type=click.IntRange(min=1, max=65535),
    default=None,
    help="Serve Prometheus metrics on this port (default: off).",
)
@opt("--metrics-host", env="BRIDGE_METRICS_HOST", default="127.0.0.1", help="Address for --metrics-port.")
@opt(
    "--progress-interval",
    env="BRIDGE_PROGRESS_INTERVAL",
    type=click.FloatRange(min=0.1),
    default=5.0,
    help="Seconds between progress lines on stderr.",
)
@kafka_options(bootstrap_default="localhost:9092", client_id_default="sentictl-bridge")
@model_options
@cache_options
@opt("-q", "--quiet", env="QUIET", is_flag=True, help="No progress lines (start, assignment and summary lines stay).")
@opt("-v", "--verbose", env="VERBOSE", is_flag=True, help="Also show kafka-python's warnings.")
def bridge_command(**opts: Any) -> None:
    """Classify a Kafka/Redpanda stream: consume, score, produce enriched records.

    Each batch: poll → classify (shared cache first) → produce every result → flush and check
    every send → commit the consumed offsets. A crash re-delivers at most one batch (at-least-once);
    --exactly-once uses a transaction per batch instead. Output keeps the record key and headers and
    adds the headers sentictl-model (fingerprint) and sentictl-label. Raw input becomes the result
    record; JSON input becomes the object with a "sentiment" field. Records that cannot be
    classified go to --dlq with sentictl-error and sentictl-source-* headers. SIGTERM/SIGINT
    finish the batch, commit and exit 0. SIGHUP reloads the model folder (verified, beside the
    running model) and switches between two batches; a folder that fails leaves the running model
    classifying (one line). Several bridges with one --group share the partitions.

    Kafka client settings by their librdkafka/Java names: -X NAME=VALUE and --kafka-config FILE
    (group.id, auto.offset.reset, session.timeout.ms, max.poll.interval.ms and max.poll.records set
    --group, --from, --session-timeout-ms, --max-poll-interval-ms and --batch-size). Precedence:
    options on the command line > -X > --kafka-config > SENTICTL_* variables > defaults.

    \b
    Exit status: 0 stopped (SIGTERM/SIGINT, --max-messages, --idle-timeout) after the batch was
    produced and committed; 1 could not start or the broker stayed unreachable past
    --connect-timeout (or a permanent Kafka error); 2 usage error. Bad records go to --dlq (or the
    log) and never change the status.

    \b
    Examples:
      sentictl bridge --in news --out '{label}-news' --bootstrap localhost:9092
      sentictl bridge --in news --input json --field title --out news-scored --dlq news-dlq
      SENTICTL_KAFKA_BOOTSTRAP=broker:9092 sentictl bridge --in news --out scored --exactly-once
      sentictl bridge --in news --out scored -X compression.type=gzip -X linger.ms=20
      sentictl bridge --in news --out scored --kafka-config client.properties -X client.id=bridge-1
    """
    from ..bridge import run_bridge

    if not opts["verbose"]:
        # kafka-python logs every reconnect attempt; the bridge reports what matters itself.
        logging.getLogger("kafka").setLevel(logging.CRITICAL)
    settings = bridge_settings(opts)
    # kafka-python's network thread needs the CPU between runs; spinning ORT threads would take it.
    from ..engine.memory import fix_mmap_threshold

    fix_mmap_threshold()  # before the model loads: a reload (SIGHUP) then gives the old model's memory back
    model = load_model(opts, spin_after_run=False, verify="always")
    cache = open_cache(opts)
    try:
        # SIGHUP loads the folder again (verified like the first load) and switches between batches.
        run_bridge(
            model,
            cache,
            settings,
            progress=not opts["quiet"],
            reload=lambda: load_model(opts, quiet=True, spin_after_run=False, verify="always"),
        )
    finally:
        if cache is not None:
            cache.close()


def bridge_settings(opts: dict[str, Any]) -> BridgeSettings:
    """The bridge's settings from its options: the Kafka connection, then the options a consumer
    property may also set, each by its precedence. Usage errors and whatever check_settings refuses
    (topic names, loops, ...) fail here, before the model loads (seconds), and again in full (every
    label) before connecting."""
    from ..bridge import BridgeSettings
    from ..bridge.settings import check_settings
    from ..kafka.options import config_from_options, door_options

    inputs = [t.strip() for t in opts["inputs"].split(",") if t.strip()]
    if not inputs:
        raise click.UsageError("--in needs at least one topic")
    if opts["transactional_id"] and not opts["exactly_once"]:
        raise click.UsageError("--transactional-id only applies with --exactly-once")
    kafka = config_from_options(opts)
    opts, kafka = door_options(opts, kafka, PROPERTY_OPTIONS)
    if opts["exactly_once"]:
        kafka.require("consumer", {"isolation_level": "read_committed"}, because="--exactly-once")
        kafka.require("producer", {"enable_idempotence": True, "acks": "all"}, because="--exactly-once")
    settings = BridgeSettings(
        inputs=inputs,
        out=opts["out"],
        kafka=kafka,
        group=opts["group"],
        dlq=opts["dlq"],
        input_format=opts["input_format"],
        text_field=opts["field"],
        batch_size=opts["batch_size"],
        exactly_once=opts["exactly_once"],
        transactional_id=opts["transactional_id"],
        eos_check=not opts["skip_eos_check"],
        eos_check_topic=opts["eos_check_topic"],
        max_messages=opts["max_messages"],
        idle_timeout=opts["idle_timeout"],
        connect_timeout=opts["connect_timeout"],
        session_timeout_ms=opts["session_timeout_ms"],
        max_poll_interval_ms=opts["max_poll_interval_ms"],
        offset_reset=opts["offset_reset"],
        max_chars=opts["max_chars"],
        progress_interval=opts["progress_interval"],
        metrics_port=opts["metrics_port"],
        metrics_host=opts["metrics_host"],
    )
    check_settings(settings)
    return settings
