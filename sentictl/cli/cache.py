"""`sentictl cache stats|clear`: the shared result cache itself."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

from ..console import notice
from .options import CONTEXT, CacheLocation, cache_given, open_cache, opt

if TYPE_CHECKING:
    from ..engine.cache import ResultCache
    from ..engine.rediscache import RedisCache

_LOCATION = opt(
    "--cache",
    "cache_path",
    env="CACHE",
    type=CacheLocation(),
    default=None,
    callback=cache_given,
    help="Result cache: a SQLite file or a redis:// URL (only sentictl's keys, sentictl:v1:*, are counted or removed).",
)
_PASSWORD = opt(
    "--cache-password-file",
    env="CACHE_PASSWORD_FILE",
    type=click.Path(dir_okay=False),
    default=None,
    help="File holding the Redis password.",
)


@click.group("cache", context_settings=CONTEXT)
def cache() -> None:
    """Inspect or empty the shared result cache."""


@cache.command("stats", context_settings=CONTEXT)
@_LOCATION
@_PASSWORD
def cache_stats(cache_path: str | None, cache_password_file: str | None) -> None:
    """Show the cache (file or redacted Redis URL), its entry count and size, as JSON.

    \b
    Example:
     sentictl cache stats --cache /tmp/results.sqlite
     SENTICTL_CACHE=redis://:secret@cache.internal:6379/0 sentictl cache stats
    """
    import orjson

    with _open({"cache_path": cache_path, "cache_password_file": cache_password_file}) as c:
        stats = c.stats()
    stats.pop("hits"), stats.pop("misses")
    click.echo(orjson.dumps(stats, option=orjson.OPT_INDENT_2).decode())


@cache.command("clear", context_settings=CONTEXT)
@_LOCATION
@_PASSWORD
@opt("--expired", env="CACHE_CLEAR_EXPIRED", is_flag=True, help="Only remove entries older than --ttl seconds.")
@opt(
    "--ttl",
    env="CACHE_TTL",
    type=click.FloatRange(min=0),
    default=None,
    help="Age limit in seconds for --expired (the same variable as the doors' --cache-ttl).",
)
def cache_clear(cache_path: str | None, cache_password_file: str | None, expired: bool, ttl: float | None) -> None:
    """Remove cached results (all of them, or only expired ones).

    \b
    Examples:
     sentictl cache clear
     sentictl cache clear --expired --ttl 86400
    """
    if expired and not ttl:
        raise click.UsageError("--expired needs --ttl SECONDS")
    # strict: asked about the cache itself, a cache that cannot be used is an error (exit 1); a
    # damaged file is moved aside and a fresh one started, which is how `clear` repairs it.
    # On Redis only sentictl's keys go (SCAN sentictl:v1:*, never FLUSHDB): one Redis may hold other data.
    opts = {"cache_path": cache_path, "cache_password_file": cache_password_file, "cache_ttl": ttl}
    with _open(opts) as c:
        removed = c.clear(expired_only=expired)
    notice(f"removed {removed} cached results")


def _open(opts: dict[str, Any]) -> ResultCache | RedisCache:
    """The cache a subcommand is about, strict: asked about the cache itself, one that cannot be used is an error."""
    cache = open_cache(opts, strict=True)
    assert cache is not None, "only --no-cache opens no cache, and these subcommands have none"
    return cache
