"""ONNX Runtime sessions: the options a variant runs under, built from verified bytes only, and ORT's errors.

onnxruntime ships no type information: its sessions and options are typed ``Any``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import ManifestError
from . import memory
from .verified import VerifiedFiles

# ORT's provider names for the engine's short ones.
ORT_PROVIDER = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider", "coreml": "CoreMLExecutionProvider"}


def session_options(provider: str, threads: int | None, spin_after_run: bool) -> Any:
    """ORT's SessionOptions for one variant on ``provider``.

    ``spin_after_run`` False: ORT's threads spin inside a run but stop the moment it returns (for a
    server, whose event loop needs the CPU between runs); True: ORT's default, they spin on."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = int(threads)
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    # Fatal only: a failed run is an exception the engine reports in its own words (inference_error,
    # a start-up check), so ORT's own error line on stderr would only say it twice.
    opts.log_severity_level = 4
    if not spin_after_run:
        # Spin inside a run (its parallel sections hand over without a futex wake-up), but stop the
        # moment a run returns: idle ORT threads would otherwise spin on, taking the CPU that a
        # server's event loop needs to answer and gather the next batch. Measured on serve, 32
        # clients, FinBERT-shaped int8, 2 cores: no spinning 82 req/s with 0.46 cores idle; spinning
        # on 93 req/s; spinning stopped after each run 95-98 req/s (bench_serve.py).
        opts.add_session_config_entry("session.force_spinning_stop", "1")
    if provider == "cpu":
        # A memory pattern is planned per input shape, and every text length is a new shape: on
        # bert-base int8 it added 30-40 MB to the peak for no measurable speed (benchmarks/NOTES.md).
        opts.enable_mem_pattern = False
    return opts


def open_session(path: Path, provider: str, opts: Any, files: VerifiedFiles) -> tuple[Any, str]:
    """The InferenceSession of the variant at ``path`` from its verified bytes (never the model folder's
    files, see VerifiedFiles.source), and where its weights come from ("memory" or "a private copy").
    The files' bytes are discarded once ORT holds them."""
    import onnxruntime as ort

    providers = [ORT_PROVIDER[provider]]
    if provider != "cpu":
        providers.append("CPUExecutionProvider")
    source = files.source(path.name)
    data: list[bytes] = []
    if isinstance(source, bytes) and files.external:
        names = list(files.external)
        data = [files.external[n] or b"" for n in names]
        opts.add_external_initializers_from_files_in_memory(names, data, [len(d) for d in data])
    weights_from = "memory" if isinstance(source, bytes) else "a private copy"
    try:
        session = ort.InferenceSession(source, sess_options=opts, providers=providers)
    except Exception as exc:
        raise ManifestError(f"onnxruntime cannot load {path}: {exc}") from None
    finally:
        del source, data
        files.discard()
    memory.return_freed_memory()
    return session, weights_from


def check_logits_output(session: Any, labels: int, path: Path) -> None:
    """A folder optimum wrote for another task has no (batch, labels) logits: say so instead of misreading it."""
    outputs = session.get_outputs()
    shape = outputs[0].shape if outputs else []
    width = shape[-1] if len(shape) == 2 else None
    if not outputs or outputs[0].name != "logits" or len(shape) != 2 or (isinstance(width, int) and width != labels):
        raise ManifestError(
            f"{path} is not a text-classification model with {labels} labels "
            f"(first output {outputs[0].name if outputs else None} {list(shape)}): "
            f"export it with `optimum-cli export onnx --task text-classification`"
        )


def is_runtime_error(exc: BaseException) -> bool:
    """Whether ONNX Runtime raised it (its errors are plain pybind11 classes of its own module)."""
    return type(exc).__module__.startswith("onnxruntime")


def runtime_message(exc: BaseException) -> str:
    """The first line of an ONNX Runtime error, bounded."""
    text = str(exc).strip()
    return (text.splitlines() or [type(exc).__name__])[0][:300]
