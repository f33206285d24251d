"""The benchmark harness behind `sentictl bench`.

Every contender runs in its own child process with the same thread budget, so that one cannot
warm caches, grab threads or inflate the peak memory of another: tokenization alone, ORT
inference per variant and batch size, the cache-hit path, whole `sentictl score` processes, the
cold start of a one-line `score`, and (when torch and transformers are importable) the Hugging
Face ``pipeline("text-classification")`` on the checkpoint the model was exported from.

Child processes (``jobs``) get a job as JSON and write their result as JSON; the parent
(``processes``) reads each child's peak RSS from ``os.wait4``; ``report`` writes the results.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .. import config
from ..config import ResolvedModel
from ..console import Steps
from ..errors import SentictlError
from ..variantlist import parse_variant_list
from .jobs import padding_engine, worker
from .processes import cold_start, default_threads, machine, run_job, score_processes, spawn, thread_env
from .report import OUT_FILES, format_markdown, plot, prepare_out_dir, speedups, write_outputs
from .stats import BUDGET, percentile, summarize

__all__ = [
    "BUDGET",
    "DEFAULT_BATCH_SIZES",
    "DEFAULT_LIMIT",
    "OUT_FILES",
    "cold_start",
    "config_preference",
    "default_texts",
    "default_threads",
    "format_markdown",
    "machine",
    "padding_engine",
    "parse_batch_sizes",
    "percentile",
    "pick_variants",
    "plot",
    "prepare_out_dir",
    "read_texts",
    "resolve_checkpoint",
    "run_bench",
    "run_job",
    "score_processes",
    "spawn",
    "speedups",
    "summarize",
    "thread_env",
    "worker",
    "write_outputs",
]

DEFAULT_BATCH_SIZES = (1, 8, 32, 64)
DEFAULT_LIMIT = 400


def default_texts() -> Path:
    """The 50 financial sentences that ship in the package (export's parity set)."""
    # data/ belongs to the sentictl package, one level above this subpackage.
    return Path(__file__).resolve().parent.parent / "data" / "parity.txt"


def read_texts(path: str | Path, limit: int | None) -> list[str]:
    """Non-blank lines of a text file (the first ``limit`` of them)."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise SentictlError(f"cannot read --texts {path}: {exc}") from None
    texts = [line.strip() for line in lines if line.strip()]
    if limit:
        texts = texts[:limit]
    if not texts:
        raise SentictlError(f"--texts {path} has no non-blank lines")
    return texts


def parse_batch_sizes(spec: str | Sequence[int]) -> list[int]:
    """'1,8,32' → [1, 8, 32]."""
    if not isinstance(spec, str):
        return [int(b) for b in spec]
    try:
        sizes = [int(b) for b in spec.split(",") if b.strip()]
    except ValueError:
        raise SentictlError(f"--batch-sizes must be a comma list of integers, not {spec!r}") from None
    if not sizes or min(sizes) < 1:
        raise SentictlError(f"--batch-sizes must be positive integers, not {spec!r}")
    return sorted(set(sizes))


def pick_variants(manifest: dict[str, Any], spec: str | None, provider: str) -> list[str]:
    """auto: the variants built for the provider that will run them; all; or a comma list."""
    from ..engine.model import available_providers

    # A variant listed only for its export figures (its file not shipped, e.g. the bundled model's
    # fp32) cannot be measured: all/auto leave it out, naming it is refused before anything runs.
    have = [v for v, entry in manifest["variants"].items() if entry.get("shipped", True)]
    not_shipped = [v for v in manifest["variants"] if v not in have]
    spec = (spec or "auto").strip().lower()
    if spec == "all":
        return have
    if spec == "auto":
        runnable = set(available_providers())
        target = provider if provider != "auto" else None
        chosen = [
            v
            for v in have
            if manifest["variants"][v].get("usable", True)
            and (
                manifest["variants"][v].get("provider", "cpu") == target
                if target
                else manifest["variants"][v].get("provider", "cpu") in runnable
            )
        ]
        return chosen or (["fp32"] if "fp32" in have else have[:1])
    wanted = [v.strip() for v in spec.split(",") if v.strip()]
    absent = [v for v in wanted if v in not_shipped]
    if absent:
        raise SentictlError(
            f"cannot bench {', '.join(absent)}: {'its file is' if len(absent) == 1 else 'their files are'} not shipped "
            f"with this model (the manifest keeps only the export figures); it ships {', '.join(have) or 'no variant'}: "
            f"use --variants {','.join(have) or 'auto'}, or export a model with `sentictl export`"
        )
    return parse_variant_list(spec, have)


def config_preference(provider: str) -> tuple[str, ...]:
    """The variant order the engine prefers for a provider (auto → cpu's)."""
    from ..engine.model import PREFERRED_VARIANTS

    return PREFERRED_VARIANTS.get(provider if provider != "auto" else "cpu", ("int8", "fp32"))


def resolve_checkpoint(manifest: dict[str, Any]) -> tuple[str | None, str]:
    """The checkpoint the model was exported from, for the pipeline baseline, or why there is none."""
    source = manifest.get("source") or {}
    ident = source.get("id")
    if not ident:
        return None, "the manifest names no source checkpoint"
    if source.get("kind") == "optimum":
        return None, "an optimum folder names no PyTorch checkpoint to compare with"
    if source.get("kind") == "local" or Path(ident).is_dir():
        if (Path(ident) / "config.json").is_file():
            return ident, ""
        return None, f"the source checkpoint {ident} is not on this machine"
    return ident, ""


@dataclass
class _Setup:
    """What every contender of one bench run shares: the model, the texts, the variants, the budget."""

    resolved: ResolvedModel
    manifest: dict[str, Any]
    model_path: str
    texts_path: Path
    texts: list[str]
    sizes: list[int]
    chosen: list[str]
    threads: int
    repeats: int
    warmup: int
    checkpoint: str | None  # the pipeline baseline's checkpoint (None: skipped, for no_baseline)
    no_baseline: str
    default_variant: str  # the one the cache-hit path and the cold start use
    env: dict[str, str]  # the children's environment, pinned to the thread budget


def run_bench(
    model_dir: str | Path | None = None,
    texts_path: str | Path | None = None,
    variants: str | None = "auto",
    batch_sizes: str | Sequence[int] = DEFAULT_BATCH_SIZES,
    threads: int | None = None,
    baseline: str = "pipeline",
    out: str | Path | None = "bench-out",
    repeats: int = 3,
    warmup: int = 1,
    limit: int | None = DEFAULT_LIMIT,
    provider: str = "auto",
    long: str = "truncate",
    run_tokens: int | None = None,
    cold_starts: int = 3,
    quiet: bool = False,
) -> dict[str, Any]:
    """Measure every contender with one thread budget; write bench.json/.md/.png to ``out``."""
    setup = _setup(
        model_dir, texts_path, variants, batch_sizes, threads, baseline, repeats, warmup, limit, provider, quiet
    )
    base_job = _base_job(setup, provider, long, run_tokens)
    out_dir = Path(out) if out else None
    if out_dir:
        prepare_out_dir(out_dir, [setup.texts_path])
    rows, notes = _measure(setup, base_job, provider, long, run_tokens, cold_starts, quiet)
    if not setup.checkpoint and baseline != "none":
        notes.append(f"baseline skipped: {setup.no_baseline}")
    report = _report(setup, rows, notes)
    if out_dir:
        write_outputs(report, out_dir)
    return report


def _setup(
    model_dir: str | Path | None,
    texts_path: str | Path | None,
    variants: str | None,
    batch_sizes: str | Sequence[int],
    threads: int | None,
    baseline: str,
    repeats: int,
    warmup: int,
    limit: int | None,
    provider: str,
    quiet: bool,
) -> _Setup:
    """Resolve the model (saying which), read the texts, choose the variants and the baseline."""
    from ..engine.manifest import read_manifest
    from ..engine.model import announce

    resolved = config.resolve_model_dir(model_dir)
    manifest = read_manifest(resolved.path)
    announce(resolved, manifest.get("name"), quiet=quiet)
    texts_file = Path(texts_path) if texts_path else default_texts()
    texts = read_texts(texts_file, limit)
    sizes = parse_batch_sizes(batch_sizes)
    chosen = pick_variants(manifest, variants, provider)
    threads = int(threads or default_threads())
    checkpoint, no_baseline = _baseline(manifest, baseline)
    return _Setup(
        resolved=resolved,
        manifest=manifest,
        model_path=str(resolved.path.resolve()),
        texts_path=texts_file,
        texts=texts,
        sizes=sizes,
        chosen=chosen,
        threads=threads,
        repeats=max(1, int(repeats)),
        warmup=max(0, int(warmup)),
        checkpoint=checkpoint,
        no_baseline=no_baseline,
        default_variant=_default_variant(chosen, provider),
        env=thread_env(threads),
    )


def _default_variant(chosen: list[str], provider: str) -> str:
    """The variant the cache-hit path and the cold start measure: the engine's preference among the chosen."""
    if len(chosen) == 1:
        return chosen[0]
    return next((v for v in config_preference(provider) if v in chosen), chosen[0])


def _base_job(setup: _Setup, provider: str, long: str, run_tokens: int | None) -> dict[str, Any]:
    """The job every measurement child gets (each adds its kind, and its variant where it has one)."""
    return {
        "model_dir": setup.model_path,
        "texts": setup.texts,
        "batch_sizes": setup.sizes,
        "threads": setup.threads,
        "repeats": setup.repeats,
        "warmup": setup.warmup,
        "provider": provider,
        "long": long,
        "run_tokens": run_tokens or config.DEFAULT_RUN_TOKENS,
    }


def _measure(
    setup: _Setup,
    base_job: dict[str, Any],
    provider: str,
    long: str,
    run_tokens: int | None,
    cold_starts: int,
    quiet: bool,
) -> tuple[list[dict[str, Any]], list[str]]:
    """Run every contender, one child process each, in order; their report rows and notes."""
    chosen, env, default_variant = setup.chosen, setup.env, setup.default_variant
    sizes = ",".join(map(str, setup.sizes))
    steps = Steps("bench", 2 + 2 * len(chosen) + 1 + (1 if setup.checkpoint else 0), quiet).start
    rows: list[dict[str, Any]] = []
    notes: list[str] = []

    def add(contender: str, variant: str | None, result: dict[str, Any]) -> None:
        _add(rows, notes, contender, variant, result)

    steps(f"tokenization alone ({len(setup.texts)} texts, batch sizes {sizes})")
    add("tokenize", None, run_job({**base_job, "kind": "tokenize"}, env))
    for v in chosen:
        steps(f"inference, {v} variant, batch sizes {sizes} and {BUDGET}")
        add("onnxruntime", v, run_job({**base_job, "kind": "infer", "variant": v}, env))
    steps(f"cache-hit path ({default_variant})")
    add("cache-hit", default_variant, run_job({**base_job, "kind": "cache", "variant": default_variant}, env))
    for v in chosen:
        steps(f"end-to-end `sentictl score` processes, {v} variant ({setup.repeats}×)")
        rows.append(
            score_processes(
                setup.model_path, v, setup.texts, setup.threads, setup.repeats, env, provider, long, run_tokens
            )
        )
    steps(f"cold start: `sentictl score` of one line ({cold_starts}×)")
    rows.append(cold_start(setup.model_path, default_variant, setup.threads, max(1, cold_starts), env, provider))
    if setup.checkpoint:
        steps(f"baseline: transformers pipeline on {setup.checkpoint}")
        max_length = int(setup.manifest["max_length"])
        job = {**base_job, "kind": "pipeline", "checkpoint": setup.checkpoint, "max_length": max_length}
        add("hf-pipeline", "torch fp32", run_job(job, env))
    return rows, notes


def _report(setup: _Setup, rows: list[dict[str, Any]], notes: list[str]) -> dict[str, Any]:
    """bench.json: the machine, the setup, every row, the notes and the speedups."""
    threads = setup.threads
    return {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": machine(),
        "threads": threads,
        "thread_budget": f"{threads} threads for every contender (ORT intra-op, torch, tokenizers/rayon, OMP)",
        "model": {
            "dir": setup.model_path,
            "name": setup.manifest.get("name"),
            "source": setup.manifest.get("source"),
            "max_length": setup.manifest["max_length"],
            "chosen_because": setup.resolved.reason,
        },
        "texts": {"file": str(setup.texts_path), "n": len(setup.texts)},
        "variants": setup.chosen,
        "batch_sizes": setup.sizes,
        "repeats": setup.repeats,
        "warmup": setup.warmup,
        "rows": rows,
        "notes": notes,
        "speedup": speedups(rows),
    }


def _baseline(manifest: dict[str, Any], baseline: str) -> tuple[str | None, str]:
    """The checkpoint the transformers pipeline baseline runs (None: skipped), and why it is skipped."""
    checkpoint, no_baseline = (None, "--baseline none") if baseline == "none" else resolve_checkpoint(manifest)
    if baseline != "none" and checkpoint:
        try:
            import importlib.util

            if importlib.util.find_spec("torch") is None or importlib.util.find_spec("transformers") is None:
                from ..export.stack import INSTALL_COMMAND

                return None, f"torch/transformers are not installed: {INSTALL_COMMAND}"
        except ValueError:
            pass
    return checkpoint, no_baseline


def _add(
    rows: list[dict[str, Any]], notes: list[str], contender: str, variant: str | None, result: dict[str, Any]
) -> None:
    """A measurement child's result as report rows (or one error row) and notes."""
    if "error" in result:
        notes.append(f"{contender} {variant or ''}: failed: {result['error']}".replace("  ", " "))
        rows.append({"contender": contender, "variant": variant, "batch_size": None, "error": result["error"]})
        return
    for row in result["rows"]:
        rows.append({"contender": contender, "variant": variant, **row, "peak_rss_mb": result["peak_rss_mb"]})
    notes.extend(result.get("notes", []))
