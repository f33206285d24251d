"""Options shared by commands, and the steps every model-loading command takes.

Every option falls back to a ``SENTICTL_*`` environment variable, shown in ``--help``. Shared option
sets are tables of options (MODEL_OPTIONS, CACHE_OPTIONS) applied by one decorator.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import click

from .. import config

if TYPE_CHECKING:
    from ..engine.cache import ResultCache
    from ..engine.model import Model
    from ..engine.rediscache import RedisCache

# A click decorator: takes the command function and returns it with an option attached.
Decorator = Callable[[Callable[..., Any]], Callable[..., Any]]

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100, "show_default": True}


def opt(*names: str, env: str | None = None, **kwargs: Any) -> Decorator:
    """A click option falling back to SENTICTL_<env>, shown in --help."""
    if env:
        kwargs.setdefault("envvar", config.env(env))
        kwargs.setdefault("show_envvar", True)
    return click.option(*names, **kwargs)


def stacked(options: Sequence[Decorator]) -> Decorator:
    """One decorator applying a table of options, the first listed first in --help."""

    def decorate(f: Callable[..., Any]) -> Callable[..., Any]:
        for option in reversed(options):
            f = option(f)
        return f

    return decorate


def _no_verify(ctx: click.Context, param: click.Parameter, value: bool) -> bool:
    """--no-verify also reaches models that library code loads itself (eval, bench) via the environment."""
    if value:
        os.environ[config.env("NO_VERIFY")] = "1"
    return value


# The options that choose and load a model: shared by score, serve, bridge, info, bench and eval.
MODEL_OPTIONS: tuple[Decorator, ...] = (
    opt(
        "--model-dir",
        env="MODEL_DIR",
        type=click.Path(file_okay=False),
        default=None,
        help="Exported model directory. Default: models/finbert if exported, else the bundled model.",
    ),
    opt(
        "--provider",
        env="PROVIDER",
        type=click.Choice(config.PROVIDERS),
        default="auto",
        help="Execution provider; auto picks cuda > coreml > cpu with the matching variant.",
    ),
    opt(
        "--variant",
        env="VARIANT",
        default=None,
        help="Force a variant (fp32, int8, fp16, coreml) instead of the provider's choice.",
    ),
    opt(
        "--threads",
        env="THREADS",
        type=click.IntRange(min=1),
        default=None,
        help="Intra-op threads for ONNX Runtime (default: all cores).",
    ),
    opt(
        "--long",
        "long_mode",
        env="LONG",
        type=click.Choice(config.LONG_MODES),
        default="truncate",
        help='Texts over the model\'s max length: truncate (flagged "truncated": true) or chunk '
        "(split at sentences, probabilities averaged by length).",
    ),
    opt(
        "--run-tokens",
        env="RUN_TOKENS",
        type=click.IntRange(min=1),
        default=None,
        show_default=str(config.DEFAULT_RUN_TOKENS),
        help="Token budget of one inference run (batch x padded length): texts are sorted by length and "
        "run in groups of at most this many tokens. Results do not depend on it; speed does.",
    ),
    opt(
        "--no-verify",
        env="NO_VERIFY",
        is_flag=True,
        default=False,
        callback=_no_verify,
        help="Run model files that do not match the sha256 in manifest.json (a folder edited on purpose). "
        "Nothing is hashed; results are cached under an 'unverified' fingerprint derived from the "
        "files' size, mtime and inode, never under the genuine model's, so the two never share entries.",
    ),
)
model_options = stacked(MODEL_OPTIONS)


class CacheLocation(click.types.StringParamType):
    """--cache: a redis://, rediss:// or unix:// URL passes unchanged; anything else is a file path."""

    name = "PATH|URL"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        from ..engine.rediscache import is_url

        if is_url(value):
            return str(value)
        return click.Path(dir_okay=False, path_type=str).convert(value, param, ctx)


class Size(click.IntRange):
    """A size in bytes, or with a K/M/G suffix (500M, 2G); 0 is unbounded."""

    name = "SIZE"

    def __init__(self) -> None:
        super().__init__(min=0)

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        from ..engine.cache import parse_size

        if isinstance(value, int):
            return value
        try:
            return parse_size(str(value)) or 0
        except ValueError as exc:
            self.fail(str(exc), param, ctx)

    def get_metavar(self, *args: Any, **kwargs: Any) -> str:
        return "SIZE"


def cache_given(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    """A password typed into --cache shows in `ps`: say where it belongs instead (it still works)."""
    if not value:
        return value
    from urllib.parse import urlsplit

    from ..engine.rediscache import is_url

    if is_url(value) and ctx.get_parameter_source(param.name or "") == click.core.ParameterSource.COMMANDLINE:
        try:
            secret = urlsplit(value).password or "password=" in value.lower()
        except ValueError:
            secret = False
        if secret:
            from ..console import notice

            notice(
                "the --cache URL holds a password, which any user can read in `ps`: put the URL in "
                "SENTICTL_CACHE or the password in a file named by --cache-password-file"
            )
    return value


# The options of the shared result cache (score, serve, bridge).
CACHE_OPTIONS: tuple[Decorator, ...] = (
    opt(
        "--cache",
        "cache_path",
        env="CACHE",
        type=CacheLocation(),
        default=None,
        callback=cache_given,
        help="Result cache: a SQLite file, or a Redis server shared by a fleet "
        "(redis://[user@]host:6379/0, rediss://..., unix:///run/redis.sock). Default: a file in the "
        "user cache dir. Example: --cache redis://cache.internal:6379/0",
    ),
    opt(
        "--cache-password-file",
        env="CACHE_PASSWORD_FILE",
        type=click.Path(dir_okay=False),
        default=None,
        help="File holding the Redis password (kept out of the URL, so out of `ps` and logs).",
    ),
    opt(
        "--cache-max-size",
        env="CACHE_MAX_SIZE",
        type=Size(),
        default=config.DEFAULT_CACHE_MAX_SIZE,
        help="Bound of the cache file with its -wal/-shm (bytes, or K/M/G: 500M, 2G; 0: unbounded): past it "
        "the least recently used entries are evicted in batches, off the lookup path. A Redis cache is "
        "bounded by its own maxmemory.",
    ),
    opt("--no-cache", env="NO_CACHE", is_flag=True, default=False, help="Neither read nor write the result cache."),
    opt(
        "--cache-ttl",
        env="CACHE_TTL",
        type=click.FloatRange(min=0),
        default=None,
        help="Ignore cached results older than this many seconds (0 or unset: keep forever); Redis "
        "entries expire then.",
    ),
)
cache_options = stacked(CACHE_OPTIONS)


def load_model(opts: dict[str, Any], quiet: bool = False, verify: str = "stamp", **extra: Any) -> Model:
    """Load the model from model_options values (extra: Model keyword arguments).

    verify: how the model files are checked against manifest.json ("always" for long-running
    serve and bridge, "stamp" otherwise; see sentictl.engine.integrity); --no-verify makes it "off".
    """
    from ..engine.model import load

    if opts.get("no_verify"):
        verify = "off"
    return load(
        opts["model_dir"],
        quiet=quiet,
        provider=opts["provider"],
        variant=opts["variant"],
        threads=opts["threads"],
        long=opts["long_mode"],
        run_tokens=opts["run_tokens"] or config.DEFAULT_RUN_TOKENS,
        verify=verify,
        **extra,
    )


def cache_location(opts: dict[str, Any]) -> str | None:
    """Where the shared cache lives from cache_options values (a path or a Redis URL), or None with --no-cache."""
    if opts.get("no_cache"):
        return None
    return os.fspath(opts.get("cache_path") or config.default_cache_location())


def cache_file(opts: dict[str, Any]) -> str | None:
    """The shared cache's file, or None with --no-cache or a Redis URL (no file an output could clobber)."""
    from ..engine.rediscache import is_url

    location = cache_location(opts)
    return None if location is None or is_url(location) else location


def cache_password(opts: dict[str, Any]) -> str | None:
    """The Redis password from --cache-password-file (one line), or None."""
    name = opts.get("cache_password_file")
    if not name:
        return None
    try:
        with open(name, encoding="utf-8") as fh:
            return fh.read().rstrip("\r\n")
    except (OSError, UnicodeDecodeError) as exc:
        raise click.UsageError(f"--cache-password-file {name}: {getattr(exc, 'strerror', None) or exc}") from None


def open_cache(opts: dict[str, Any], strict: bool = False) -> ResultCache | RedisCache | None:
    """The shared cache from cache_options values (a SQLite file or Redis), or None with --no-cache."""
    location = cache_location(opts)
    if location is None:
        return None
    from ..engine.cache import open_cache as open_backend
    from ..errors import CacheError

    try:
        cache: ResultCache | RedisCache = open_backend(
            location,
            ttl=opts.get("cache_ttl"),
            strict=strict,
            password=cache_password(opts),
            max_size=opts.get("cache_max_size", "default"),
        )
    except CacheError as exc:
        raise click.ClickException(str(exc)) from None
    return cache
