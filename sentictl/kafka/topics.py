"""Topic names and topic templates, shared by bridge --out/--dlq/--in and serve --publish.

A template is a topic name with ``{field}`` placeholders (``'{label}-news'``). Each door says
which fields it fills in (bridge: label and topic; serve: label) and checks, before connecting,
that every topic the template can produce is one Kafka accepts, so a typo fails at start-up with
exit 1 instead of as a produce error in the middle of a stream.
"""

from __future__ import annotations

import itertools
import re
import string
from collections.abc import Iterable
from dataclasses import dataclass, field

from ..errors import TopicError

MAX_TOPIC_LENGTH = 249
_LEGAL_CHARS = re.compile(r"[A-Za-z0-9._-]")


def topic_problem(name: str) -> str | None:
    """Why Kafka would refuse this topic name, or None when it is legal."""
    if not name:
        return "it is empty"
    if name in (".", ".."):
        return "'.' and '..' are reserved"
    if len(name) > MAX_TOPIC_LENGTH:
        return f"it is {len(name)} characters, over Kafka's limit of {MAX_TOPIC_LENGTH}"
    bad = sorted({c for c in name if not _LEGAL_CHARS.fullmatch(c)})
    if bad:
        shown = " ".join(repr(c) for c in bad[:5]) + (" ..." if len(bad) > 5 else "")
        return f"it contains {shown}: only letters, digits, '.', '_' and '-' are allowed"
    return None


def is_legal_topic(name: str) -> bool:
    """True when Kafka accepts this topic name (1-249 of [A-Za-z0-9._-], not '.' or '..')."""
    return topic_problem(name) is None


def check_topic(name: str, option: str = "topic") -> str:
    """The name itself when Kafka accepts it; otherwise a TopicError naming the option."""
    problem = topic_problem(name)
    if problem:
        raise TopicError(f"{option} {name!r} is not a valid Kafka topic name: {problem}")
    return name


@dataclass(frozen=True)
class TopicTemplate:
    """A topic name with placeholders from ``allowed``, checked on creation; render() fills them in."""

    template: str
    allowed: tuple[str, ...] = ("label",)
    option: str = "--publish"
    fields: tuple[str, ...] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "allowed", tuple(self.allowed))
        try:
            parsed = [
                (name, spec, conv)
                for _, name, spec, conv in string.Formatter().parse(self.template)
                if name is not None
            ]
        except ValueError as exc:
            raise TopicError(f"bad {self.option} template {self.template!r}: {exc}") from None
        example = "'{label}-news'" if "label" in self.allowed else f"'{{{self.allowed[0]}}}-out'"
        use = ", ".join("{" + name + "}" for name in self.allowed)
        for name, spec, conv in parsed:
            if name not in self.allowed:
                raise TopicError(
                    f"bad {self.option} template {self.template!r}: unknown placeholder {{{name}}} "
                    f"(use {use}, e.g. {example})"
                )
            if spec or conv:
                raise TopicError(
                    f"bad {self.option} template {self.template!r}: write plain {{{name}}}, "
                    f"without a conversion or format spec"
                )
        object.__setattr__(self, "fields", tuple(dict.fromkeys(name for name, _, _ in parsed)))
        if self.fixed:
            check_topic(self.render(), self.option)

    @property
    def fixed(self) -> bool:
        """True when the template has no placeholders: every record goes to one topic."""
        return not self.fields

    def render(self, **values: str) -> str:
        """The topic for these field values (fields the template does not use are ignored)."""
        if self.fixed:
            # No format(): a fixed name is taken as written (check_topic refuses braces anyway).
            return self.template
        return self.template.format(**{name: values[name] for name in self.fields})

    def topics(self, **choices: Iterable[str]) -> list[str]:
        """Every topic the template yields for the given values of each field it uses."""
        missing = [name for name in self.fields if name not in choices]
        if missing:
            raise ValueError(f"no values given for the template field(s) {', '.join(missing)}")
        pools = [list(dict.fromkeys(choices[name])) for name in self.fields]
        return list(dict.fromkeys(self.render(**dict(zip(self.fields, combo))) for combo in itertools.product(*pools)))

    def check(self, **choices: Iterable[str]) -> list[str]:
        """Every topic the template yields for these values, each checked for legality."""
        topics = self.topics(**choices)
        for topic in topics:
            problem = topic_problem(topic)
            if problem:
                raise TopicError(f"{self.option} {self.template!r} gives the invalid topic name {topic!r}: {problem}")
        return topics
