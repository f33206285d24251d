"""One parser for a list of model variants (`--variants`, `--keep`), shared by export, bench and eval."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from .errors import SentictlError


def parse_variant_list(
    spec: str | None,
    have: Sequence[str],
    *,
    keywords: Mapping[str, Sequence[str]] | None = None,
    what: str = "this model has no variant",
) -> list[str]:
    """'all' (or empty) → every name in ``have``; a keyword → its names; else a comma list of names in ``have``."""
    keywords = keywords or {}
    text = (spec or "all").strip().lower()
    if text == "all":
        return list(have)
    if text in keywords:
        return list(keywords[text])
    wanted = list(dict.fromkeys(v.strip() for v in text.split(",") if v.strip()))
    unknown = [v for v in wanted if v not in have]
    if unknown or not wanted:
        choices = ", ".join([*keywords, "all", *have])
        named = ", ".join(unknown) if unknown else repr(spec)
        raise SentictlError(f"{what} {named} (choose from {choices})")
    return wanted
