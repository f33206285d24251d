"""Defaults and the environment: the only module that reads ``SENTICTL_*`` variables.

Precedence everywhere: command-line option > ``SENTICTL_*`` environment variable > default.
Click options name their variable with ``envvar=`` (see :func:`env`), so ``--help`` shows it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

DEFAULT_HUB_MODEL = "ProsusAI/finbert"
DEFAULT_MODELS_ROOT = Path("models")
# Where `sentictl export` writes FinBERT when --out is not given; score/serve/bridge look here next.
DEFAULT_MODEL_DIR = DEFAULT_MODELS_ROOT / "finbert"
BUNDLED_MODEL_NAME = "finsent-mini"

# A token budget per inference run: padded batch_size x seq_len. Texts are sorted by length
# first, so short headlines travel in large batches and long articles in small ones. Small runs
# keep activations in cache: on bert-base int8 with 2 threads, 400 headlines ran at 99 texts/s
# with 1024 tokens per run, 84 with 4096 and 71 with 8192 (benchmarks/NOTES.md).
DEFAULT_RUN_TOKENS = 1024
DEFAULT_MAX_BATCH_SIZE = 256
# The server coalesces concurrent requests up to this many tokens before splitting them into runs.
DEFAULT_COALESCE_TOKENS = 8192
# Texts longer than this (characters) are rejected as bad records: tokenizing a multi-megabyte
# line just to truncate it would stall a stream.
DEFAULT_MAX_CHARS = 100_000
LONG_MODES = ("truncate", "chunk")
PROVIDERS = ("auto", "cpu", "cuda", "coreml")


def env(name: str) -> str:
    """The environment variable name for a setting, e.g. env("CACHE") -> "SENTICTL_CACHE"."""
    return f"SENTICTL_{name}"


def getenv(name: str, default: str | None = None) -> str | None:
    """Read one SENTICTL_* variable (empty counts as unset)."""
    value = os.environ.get(env(name))
    return value if value else default


# The local cache's bound (--cache-max-size): past it the least recently used entries go. 1 GiB
# holds about two million headline results (~500 bytes each with the text) and is small beside
# any disk sentictl runs on; a fixed size, not a share of the free disk, so it never changes
# between runs. "0" is unbounded.
DEFAULT_CACHE_MAX_SIZE = "1G"


def default_cache_max_size() -> str:
    """SENTICTL_CACHE_MAX_SIZE, else DEFAULT_CACHE_MAX_SIZE (a size such as "500M")."""
    return getenv("CACHE_MAX_SIZE", DEFAULT_CACHE_MAX_SIZE) or DEFAULT_CACHE_MAX_SIZE


def default_cache_location() -> str | Path:
    """The shared result cache: SENTICTL_CACHE (a file, or a redis:// URL kept as given), else the default file."""
    configured = getenv("CACHE")
    if configured and configured.lower().startswith(("redis://", "rediss://", "unix://")):
        return configured
    return default_cache_path()


def default_cache_path() -> Path:
    """The shared result cache file: SENTICTL_CACHE or a file in the user cache directory."""
    configured = getenv("CACHE")
    if configured:
        return Path(configured).expanduser()
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("sentictl")) / "results.sqlite"


def bundled_model_dir() -> Path:
    """The small model that ships inside the package (used when nothing else is configured)."""
    return Path(__file__).resolve().parent / "models" / BUNDLED_MODEL_NAME


@dataclass(frozen=True)
class ResolvedModel:
    """Which model directory a command will use, and why."""

    path: Path
    reason: str
    bundled: bool = False


def resolve_model_dir(option: str | os.PathLike[str] | None = None) -> ResolvedModel:
    """--model-dir > SENTICTL_MODEL_DIR > the default export location > the bundled model."""
    configured = getenv("MODEL_DIR")
    # click fills --model-dir from SENTICTL_MODEL_DIR itself: the same value came from the environment.
    if option and (not configured or os.fspath(option) != configured):
        return ResolvedModel(Path(option).expanduser(), "given with --model-dir")
    if configured:
        return ResolvedModel(Path(configured).expanduser(), "set by SENTICTL_MODEL_DIR")
    if (DEFAULT_MODEL_DIR / "manifest.json").is_file() or (
        (DEFAULT_MODEL_DIR / "config.json").is_file() and any(DEFAULT_MODEL_DIR.glob("*.onnx"))
    ):  # a sentictl export, or a folder from `optimum-cli export onnx --model ProsusAI/finbert models/finbert`
        # Relative to the current directory: say so, since one folder up the same command runs another model.
        return ResolvedModel(
            DEFAULT_MODEL_DIR,
            f"the default export location {DEFAULT_MODEL_DIR}, relative to the "
            f"current directory (--model-dir or SENTICTL_MODEL_DIR to pin one)",
        )
    bundled = bundled_model_dir()
    return ResolvedModel(
        bundled,
        f"no exported model in {DEFAULT_MODEL_DIR} under the current directory, and no --model-dir/SENTICTL_MODEL_DIR",
        bundled=True,
    )
