"""The child side of a benchmark: one measurement job per fresh interpreter.

A child gets its job as JSON on stdin and writes its result as JSON to ``job["result_path"]``;
it imports only what its contender needs, so one contender's imports cannot inflate another's
start-up or peak memory.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

from .stats import BUDGET, summarize


def worker() -> None:
    """Entry point of a measurement child: a JSON job on stdin, the result to job['result_path']."""
    from ..errors import SentictlError

    job = json.loads(sys.stdin.read())
    kind = job["kind"]
    try:
        result = {"tokenize": _tokenize_job, "infer": _infer_job, "cache": _cache_job, "pipeline": _pipeline_job}[kind](
            job
        )
    except SentictlError as exc:
        # The message is written for a person; the parent reports it as is (not a traceback's last line).
        result = {"error": (str(exc).splitlines() or [type(exc).__name__])[0]}
    Path(job["result_path"]).write_text(json.dumps(result))


def _chunks(texts: list[str], size: int) -> list[list[str]]:
    return [texts[i : i + size] for i in range(0, len(texts), size)]


def _measure(fn: Any, texts: list[str], size: int | str, repeats: int, warmup: int) -> dict[str, Any]:
    """Call fn on consecutive chunks of ``size`` texts (or all at once for BUDGET), timing each call."""
    calls = [texts] if size == BUDGET else _chunks(texts, int(size))
    for _ in range(warmup):
        # A few calls warm ORT's arena and the CPU caches; a full pass would only cost time.
        for chunk in calls[: max(1, min(len(calls), 4))]:
            fn(chunk)
    latencies: list[float] = []
    passes: list[float] = []
    for _ in range(repeats):
        started = time.perf_counter()
        for chunk in calls:
            t0 = time.perf_counter()
            fn(chunk)
            latencies.append(time.perf_counter() - t0)
        passes.append(time.perf_counter() - started)
    return summarize(latencies, passes, len(texts))


def padding_engine(engine: Any, texts: list[str], size: int | str) -> float:
    """Real tokens ÷ padded tokens when the engine batches ``texts`` in calls of ``size``."""
    real = padded = 0
    for chunk in [texts] if size == BUDGET else _chunks(texts, int(size)):
        r, p = engine.padding(chunk)
        real, padded = real + r, padded + p
    return real / padded if padded else 1.0


def _tokenize_job(job: dict[str, Any]) -> dict[str, Any]:
    from tokenizers import Tokenizer

    from ..engine.model import read_manifest

    manifest = read_manifest(Path(job["model_dir"]))
    tok = Tokenizer.from_file(str(Path(job["model_dir"]) / manifest["tokenizer"]["file"]))
    tok.no_padding()
    tok.no_truncation()
    texts = job["texts"]

    def encode(chunk: list[str]) -> None:
        tok.encode_batch(chunk, add_special_tokens=False)

    rows = [{"batch_size": b, **_measure(encode, texts, b, job["repeats"], job["warmup"])} for b in job["batch_sizes"]]
    lengths = [len(e.ids) + 2 for e in tok.encode_batch(texts, add_special_tokens=False)]
    return {
        "rows": rows,
        "notes": [f"texts: mean {sum(lengths) / len(lengths):.1f} tokens, max {max(lengths)} (with [CLS]/[SEP])"],
    }


def _load(job: dict[str, Any], cache: Any = None) -> Any:
    """The engine of the job's model (and cache): what every door runs."""
    from ..engine import Engine
    from ..engine.model import Model

    model = Model(
        job["model_dir"],
        provider=job["provider"],
        variant=job["variant"],
        threads=job["threads"],
        long=job["long"],
        run_tokens=job["run_tokens"],
    )
    return Engine(model, cache)


def _infer_job(job: dict[str, Any]) -> dict[str, Any]:
    t0 = time.perf_counter()
    engine = _load(job)
    load_s = time.perf_counter() - t0
    texts = job["texts"]
    info = engine.info()
    rows = []
    for b in list(job["batch_sizes"]) + [BUDGET]:
        row = {"batch_size": b, **_measure(engine.classify, texts, b, job["repeats"], job["warmup"])}
        row["padding_efficiency"] = padding_engine(engine, texts, b)
        row["provider"] = info["provider"]
        rows.append(row)
    return {"rows": rows, "notes": [f"{info['variant']} on {info['provider']}: model load {load_s:.2f} s"]}


def _cache_job(job: dict[str, Any]) -> dict[str, Any]:
    from ..engine import ResultCache

    texts = job["texts"]
    cache = ResultCache(Path(job["tmp"]) / "cache.sqlite")
    engine = _load(job, cache)
    try:
        engine.classify(texts)  # fill: every later call is a hit

        def lookup(chunk: list[str]) -> None:
            engine.classify(chunk)

        rows = [
            {"batch_size": b, **_measure(lookup, texts, b, job["repeats"], job["warmup"])} for b in job["batch_sizes"]
        ]
        hits = cache.hits
    finally:
        cache.close()
    return {"rows": rows, "notes": [f"cache-hit path: {hits} hits served from SQLite without inference"]}


def _pipeline_job(job: dict[str, Any]) -> dict[str, Any]:
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, pipeline

    torch.set_num_threads(int(job["threads"]))
    ckpt = job["checkpoint"]
    kwargs = {"local_files_only": True}
    t0 = time.perf_counter()
    try:
        tokenizer = AutoTokenizer.from_pretrained(ckpt, **kwargs)  # type: ignore[no-untyped-call]
        hf_model = AutoModelForSequenceClassification.from_pretrained(ckpt, **kwargs)
    except Exception as exc:  # offline and not in the HF cache: skip with a note, not a failure
        return {"rows": [], "notes": [f"baseline skipped: cannot load {ckpt} offline ({type(exc).__name__})"]}
    pipe = pipeline("text-classification", model=hf_model, tokenizer=tokenizer, device=-1)
    load_s = time.perf_counter() - t0
    texts = job["texts"]
    lengths = [len(ids) for ids in tokenizer(texts, truncation=True, max_length=job["max_length"])["input_ids"]]
    rows = []
    with torch.inference_mode():
        for b in job["batch_sizes"]:

            def run(chunk: list[str], b: int = b) -> None:
                pipe(chunk, batch_size=b, truncation=True, max_length=job["max_length"])

            row = {"batch_size": b, **_measure(run, texts, b, job["repeats"], job["warmup"])}
            # The pipeline pads each batch to its longest text, in input order.
            real = padded = 0
            for start in range(0, len(lengths), b):
                part = lengths[start : start + b]
                real += sum(part)
                padded += max(part) * len(part)
            row["padding_efficiency"] = real / padded
            rows.append(row)
    return {
        "rows": rows,
        "notes": [f"hf-pipeline: torch {torch.__version__}, {torch.get_num_threads()} threads, load {load_s:.2f} s"],
    }
