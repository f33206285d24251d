"""`sentictl cache stats|clear`: the shared result cache itself."""

from __future__ import annotations

import click

from .. import config
from ..console import notice
from .options import CONTEXT, opt


@click.group("cache", context_settings=CONTEXT)
def cache() -> None:
    """Inspect or empty the shared result cache."""


@cache.command("stats", context_settings=CONTEXT)
@opt("--cache", "cache_path", env="CACHE", type=click.Path(dir_okay=False), default=None, help="Result cache file.")
def cache_stats(cache_path: str | None) -> None:
    """Show the cache file, its entry count and size, as JSON.

    \b
    Example:
     sentictl cache stats --cache /tmp/results.sqlite
    """
    import orjson

    from ..engine.cache import ResultCache

    with ResultCache(cache_path or config.default_cache_path(), strict=True) as c:
        stats = c.stats()
    stats.pop("hits"), stats.pop("misses")
    click.echo(orjson.dumps(stats, option=orjson.OPT_INDENT_2).decode())


@cache.command("clear", context_settings=CONTEXT)
@opt("--cache", "cache_path", env="CACHE", type=click.Path(dir_okay=False), default=None, help="Result cache file.")
@opt("--expired", env="CACHE_CLEAR_EXPIRED", is_flag=True, help="Only remove entries older than --ttl seconds.")
@opt("--ttl", env="CACHE_TTL", type=click.FloatRange(min=0), default=None,
     help="Age limit in seconds for --expired (the same variable as the doors' --cache-ttl).")
def cache_clear(cache_path: str | None, expired: bool, ttl: float | None) -> None:
    """Remove cached results (all of them, or only expired ones).

    \b
    Examples:
     sentictl cache clear
     sentictl cache clear --expired --ttl 86400
    """
    from ..engine.cache import ResultCache

    if expired and not ttl:
        raise click.UsageError("--expired needs --ttl SECONDS")
    # strict: asked about the cache itself, a cache that cannot be used is an error (exit 1); a
    # damaged file is moved aside and a fresh one started, which is how `clear` repairs it.
    with ResultCache(cache_path or config.default_cache_path(), ttl=ttl, strict=True) as c:
        removed = c.clear(expired_only=expired)
    notice(f"removed {removed} cached results")
