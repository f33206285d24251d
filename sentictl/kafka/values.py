"""Parsers of Kafka property values: a librdkafka/Java spelling in, the kafka-python value out, or :class:`Bad`.

Standard library only, like :mod:`sentictl.kafka.properties`, which names each property's parser.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable, Mapping

# The codecs kafka-python can produce with, and the module each needs (gzip is in the standard library).
CODEC_MODULES = {"gzip": None, "snappy": "snappy", "lz4": "lz4", "zstd": "zstandard"}
CODEC_PACKAGES = {"snappy": "python-snappy", "lz4": "lz4", "zstd": "zstandard"}
EXTRA = "kafka-compression"
ASSIGNORS = ("range", "roundrobin", "sticky")
JAVA_ASSIGNORS = {
    "RangeAssignor": "range",
    "RoundRobinAssignor": "roundrobin",
    "StickyAssignor": "sticky",
    "CooperativeStickyAssignor": "cooperative-sticky",
}


class Bad(ValueError):
    """A value a parser refuses; the message completes '<property> <value> ...'."""


def whole(minimum: int = 0) -> Callable[[str], int]:
    def parse(value: str) -> int:
        try:
            number = int(value.strip())
        except ValueError:
            raise Bad("is not a whole number") from None
        if number < minimum:
            raise Bad(f"is below {minimum}")
        return number

    return parse


def buffer(value: str) -> int | None:
    # Java's -1 and librdkafka's 0 both mean "the operating system's default".
    number = whole(-1)(value)
    return number if number > 0 else None


def boolean(value: str) -> bool:
    word = value.strip().lower()
    if word in ("true", "yes", "1", "on"):
        return True
    if word in ("false", "no", "0", "off"):
        return False
    raise Bad("is not true or false")


def choice(*values: str, aliases: Mapping[str, str] | None = None) -> Callable[[str], str]:
    def parse(value: str) -> str:
        word = value.strip().lower()
        word = (aliases or {}).get(word, word)
        if word not in values:
            raise Bad(f"is not one of {', '.join(values)}")
        return word

    return parse


def text(value: str) -> str:
    if not value.strip():
        raise Bad("is empty")
    return value.strip()


def secret(value: str) -> str:
    if not value:
        raise Bad("is empty")
    return value


def acks(value: str) -> str | int:
    word = value.strip().lower()
    if word in ("all", "-1"):
        return "all"
    if word in ("0", "1"):
        return int(word)
    raise Bad("is not all, -1, 0 or 1")


def compression(value: str) -> str | None:
    word = value.strip().lower()
    if word == "none":
        return None
    if word not in CODEC_MODULES:
        raise Bad(f"is not one of none, {', '.join(CODEC_MODULES)}")
    module = CODEC_MODULES[word]
    if module and importlib.util.find_spec(module) is None:
        package = CODEC_PACKAGES[word]
        raise Bad(
            f"needs the Python package {package}, which is not installed: pip install {package} "
            f"(or pip install 'sentictl[{EXTRA}]' for every codec)"
        )
    return word


def endpoint_check(value: str) -> bool:
    # Java's empty value and librdkafka's "none" turn the host-name check off; "https" keeps it.
    word = value.strip().lower()
    if word in ("", "none"):
        return False
    if word == "https":
        return True
    raise Bad("is not https, none or empty")


def offset_reset(value: str) -> str:
    word = value.strip().lower()
    if word in ("none", "error"):
        raise Bad("is not supported: a new group must start somewhere, use earliest or latest")
    return choice(
        "earliest",
        "latest",
        aliases={"smallest": "earliest", "beginning": "earliest", "largest": "latest", "end": "latest"},
    )(word)


def assignors(value: str) -> tuple[str, ...]:
    names = []
    for item in (part.strip() for part in value.split(",")):
        if not item:
            continue
        name = JAVA_ASSIGNORS.get(item.rsplit(".", 1)[-1], item.lower())
        if name == "cooperative-sticky":
            raise Bad(
                "is not supported: cooperative (incremental) rebalancing is not something the bridge "
                "tracks; use range, roundrobin or sticky"
            )
        if name not in ASSIGNORS:
            raise Bad(f"names an unknown assignor {item!r}: use range, roundrobin or sticky")
        names.append(name)
    if not names:
        raise Bad("is empty")
    return tuple(dict.fromkeys(names))


def path(value: str) -> str:
    return os.path.expanduser(text(value))
