"""Peak memory (VmHWM) of `sentictl serve` after N requests from C clients, against bare ONNX Runtime.

    .venv/bin/python benchmarks/bench_memory.py                      # today's settings, serve + bare ORT
    .venv/bin/python benchmarks/bench_memory.py --knobs all --repeats 2
    .venv/bin/python benchmarks/bench_memory.py --knobs default,no-prepack --contenders ort

Two contenders, each a fresh process per measurement:

- serve: `sentictl serve --no-cache` on the model (its int8 variant by default), 32 keep-alive
  clients sending one headline per request until 320 requests are answered; then the server's
  VmHWM (peak resident set: anonymous + file-backed pages, from /proc/<pid>/status), its VmRSS,
  and the request rate of those 320 requests.
- ort: a bare Python process that imports numpy, tokenizers and onnxruntime, loads the same
  .onnx file, and runs the same 320 headlines the way serve's batcher would (groups of 32
  texts, sorted by length, split into runs of at most 1,024 tokens); its VmHWM after import,
  after load and after the runs, and its texts/s.

A *knob* changes how ONNX Runtime loads or runs the model (session options, allocator, the
model file's form, malloc settings); "a+b" combines knobs. Each knob is applied to both
contenders; for serve it is applied by a launcher that wraps onnxruntime.InferenceSession before
sentictl starts, so no product code changes to try one. `default` is serve as it ships and bare
ORT with ORT's own defaults (`no-mem-pattern+trim-after-load` is bare ORT set up as sentictl sets
it up; `mem-pattern+no-trim` is serve as it was before issue 13). Knobs that transform the model
file (external data, ORT format) need the export stack (onnx) and build it once under
benchmarks/_work/memory/. `--serve-args '--run-tokens 512'` passes options to serve, and
`--run-tokens` sets the bare contender's run budget.

Knobs and contenders are interleaved (every knob once per repeat), so a neighbour's load
shifts all alike; rates are noisy on a shared machine, peaks are not. Prints a markdown table
and writes benchmarks/results/memory.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
HEADLINES = REPO.parent / "shared" / "data" / "headlines.txt"
RESULTS = HERE / "results" / "memory.json"
TRANSFORMS = HERE / "_work" / "memory"
sys.path.insert(0, str(HERE))

# name → what the knob changes. "config": session config entries; "attrs": SessionOptions
# attributes; "load": "path" (default) or "bytes"; "transform": a rewritten model file;
# "env": the process environment; "env_arena": a shared CPU arena registered in the ORT env
# with the given arena extend strategy (0 next power of two, 1 same as requested).
KNOBS: dict[str, dict[str, Any]] = {
    "default": {},
    "no-prepack": {"config": {"session.disable_prepacking": "1"}},
    "no-arena": {"attrs": {"enable_cpu_mem_arena": False}},
    "no-mem-pattern": {"attrs": {"enable_mem_pattern": False}},
    "mem-pattern": {"attrs": {"enable_mem_pattern": True}},  # ORT's default, off in sentictl since issue 13
    # serve only: skip sentictl's malloc_trim after loading; "mem-pattern+no-trim" = serve before issue 13.
    "no-trim": {"sentictl_no_trim": True},
    # serve only: verified weights handed to ORT from memory (the fallback when no private folder can
    # be made) instead of from a private copy ORT maps (issue 18); ORT copies them while it loads.
    "in-memory-weights": {"sentictl_in_memory": True},
    "no-arena-no-pattern": {"attrs": {"enable_cpu_mem_arena": False, "enable_mem_pattern": False}},
    "init-device-alloc": {"config": {"session.use_device_allocator_for_initializers": "1"}},
    "env-arena-same-as-requested": {"config": {"session.use_env_allocators": "1"}, "env_arena": 1},
    "opt-extended": {"attrs": {"graph_optimization_level": "ORT_ENABLE_EXTENDED"}},
    "load-bytes": {"load": "bytes"},
    "external-data": {"transform": "external"},
    "ort-format": {"transform": "ort"},
    # From a path, ORT maps an .ort file and, with these entries, runs its initializers in place.
    # (From Python bytes it would crash: the binding's copy of the bytes does not outlive the call.)
    "ort-format-mapped": {
        "transform": "ort",
        "config": {"session.use_ort_model_bytes_directly": "1", "session.use_ort_model_bytes_for_initializers": "1"},
    },
    "malloc-arena-2": {"env": {"MALLOC_ARENA_MAX": "2"}},
    # glibc raises its mmap threshold each time a large block is freed, so weights freed after
    # pre-packing and arena blocks end up in heap memory that is never given back; a fixed
    # threshold keeps large blocks mmapped (returned on free), malloc_trim gives back the rest.
    "mmap-threshold": {"mallopt": {"M_MMAP_THRESHOLD": 128 * 1024}},
    "trim-after-load": {"trim_after_load": True},
    "env-mmap-threshold": {"env": {"MALLOC_MMAP_THRESHOLD_": str(128 * 1024)}},
}

_MALLOPT = {"M_TRIM_THRESHOLD": -1, "M_TOP_PAD": -2, "M_MMAP_THRESHOLD": -3, "M_ARENA_MAX": -8}


def knob_spec(name: str) -> dict[str, Any]:
    """A knob by name; "a+b" combines knobs (later ones win on the same key)."""
    out: dict[str, Any] = {}
    for part in name.split("+"):
        if part not in KNOBS:
            raise SystemExit(f"unknown knob {part!r}: choose from {', '.join(KNOBS)} (combine with +)")
        for key, value in KNOBS[part].items():
            out[key] = {**out[key], **value} if isinstance(value, dict) and key in out else value
    return out


def _libc_tune(knob: dict[str, Any]) -> None:
    import ctypes

    if not knob.get("mallopt"):
        return
    libc = ctypes.CDLL("libc.so.6")
    for key, value in knob["mallopt"].items():
        libc.mallopt(_MALLOPT[key], int(value))


def _trim(knob: dict[str, Any]) -> None:
    import ctypes

    if knob.get("trim_after_load"):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


_STATUS_FIELDS = ("VmHWM", "VmRSS", "RssAnon", "RssFile")


def proc_status(pid: int | str = "self") -> dict[str, float]:
    """VmHWM, VmRSS, RssAnon and RssFile of a process, in MB (10^6 bytes)."""
    out = {}
    text = Path(f"/proc/{pid}/status").read_text()
    for name in _STATUS_FIELDS:
        m = re.search(rf"^{name}:\s+(\d+) kB", text, re.MULTILINE)
        if m:
            out[name] = int(m.group(1)) * 1024 / 1e6
    return out


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (all its threads) so far: work, on a machine where wall time is noisy."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SENTICTL_") and k != "MALLOC_ARENA_MAX"}
    env.update(HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    env.update(extra or {})
    return env


# --------------------------------------------------------------------------- knobs applied in a child
def _options(knob: dict[str, Any], opts: Any) -> Any:
    import onnxruntime as ort

    for key, value in knob.get("config", {}).items():
        opts.add_session_config_entry(key, value)
    for key, value in knob.get("attrs", {}).items():
        if key == "graph_optimization_level":
            value = getattr(ort.GraphOptimizationLevel, value)
        setattr(opts, key, value)
    return opts


def _register_env_arena(strategy: int) -> None:
    import onnxruntime as ort

    info = ort.OrtMemoryInfo("Cpu", ort.OrtAllocatorType.ORT_ARENA_ALLOCATOR, 0, ort.OrtMemType.DEFAULT)
    # max_mem 0 (no cap), extend strategy, initial chunk and max dead bytes left to ORT (-1).
    ort.create_and_register_allocator(info, ort.OrtArenaCfg(0, strategy, -1, -1))


def _model_source(knob: dict[str, Any], path: str) -> str | bytes:
    transformed = knob.get("transformed", {}).get(os.path.realpath(path), path)
    if knob.get("load") == "bytes":
        return Path(transformed).read_bytes()
    return transformed


def install_knob(knob: dict[str, Any]) -> None:
    """Make every onnxruntime.InferenceSession this process creates use the knob (serve's launcher)."""
    import onnxruntime as ort

    _libc_tune(knob)
    if "env_arena" in knob:
        _register_env_arena(int(knob["env_arena"]))
    if knob.get("sentictl_in_memory"):
        import sentictl.engine.integrity as integrity

        integrity.private_dir = lambda: None
    if knob.get("sentictl_no_trim"):
        import sentictl.engine.memory as engine_memory

        if hasattr(engine_memory, "return_freed_memory"):
            engine_memory.return_freed_memory = lambda: None
    original = ort.InferenceSession.__init__

    def patched(self, path_or_bytes, sess_options=None, providers=None, provider_options=None, **kwargs):
        sess_options = _options(knob, sess_options or ort.SessionOptions())
        if isinstance(path_or_bytes, (str, os.PathLike)):
            path_or_bytes = _model_source(knob, os.path.abspath(str(path_or_bytes)))
        original(self, path_or_bytes, sess_options, providers, provider_options, **kwargs)
        _trim(knob)

    ort.InferenceSession.__init__ = patched


def child_serve(knob: dict[str, Any], argv: list[str]) -> None:
    """Run `sentictl <argv>` with the knob installed (the serve contender's launcher)."""
    install_knob(knob)
    from sentictl.cli import main

    sys.argv = ["sentictl", *argv]
    main()


def child_ort(
    knob: dict[str, Any],
    model_file: str,
    tokenizer_file: str,
    texts_file: str,
    threads: int,
    group: int,
    run_tokens: int,
) -> None:
    """Bare ORT: load the model and run the texts as serve's batcher would; print JSON."""
    stages = {}
    import numpy as np
    import onnxruntime as ort
    from tokenizers import Tokenizer

    stages["import"] = proc_status()
    _libc_tune(knob)
    if "env_arena" in knob:
        _register_env_arena(int(knob["env_arena"]))
    opts = _options(knob, ort.SessionOptions())
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")  # as serve runs it
    started = time.perf_counter()
    source = _model_source(knob, os.path.abspath(model_file))
    session = ort.InferenceSession(source, sess_options=opts, providers=["CPUExecutionProvider"])
    del source
    _trim(knob)
    load_s = time.perf_counter() - started
    stages["load"] = proc_status()
    tok = Tokenizer.from_file(tokenizer_file)
    tok.no_padding()
    tok.no_truncation()
    texts = [line for line in Path(texts_file).read_text().splitlines() if line]
    ids = [e.ids for e in tok.encode_batch(texts)]  # with [CLS]/[SEP]
    names = {i.name for i in session.get_inputs()}
    runs = []
    for start in range(0, len(ids), group):
        rows = sorted(ids[start : start + group], key=len)
        run: list[list[int]] = []
        for row in rows:
            if run and (len(run) + 1) * len(row) > run_tokens:
                runs.append(run)
                run = []
            run.append(row)
        runs.append(run)
    started, cpu = time.perf_counter(), time.process_time()
    for run in runs:
        width = max(len(r) for r in run)
        feed = {
            "input_ids": np.zeros((len(run), width), np.int64),
            "attention_mask": np.zeros((len(run), width), np.int64),
        }
        for r, row in enumerate(run):
            feed["input_ids"][r, : len(row)] = row
            feed["attention_mask"][r, : len(row)] = 1
        feed["token_type_ids"] = np.zeros_like(feed["input_ids"])
        session.run(None, {k: v for k, v in feed.items() if k in names})
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    stages["run"] = proc_status()
    print(
        json.dumps(
            {
                "stages": stages,
                "load_s": load_s,
                "run_s": seconds,
                "rate": len(texts) / seconds,
                "cpu_ms": 1000 * cpu / len(texts),
                "runs": len(runs),
            }
        )
    )


# --------------------------------------------------------------------------- model transforms (parent)
def _external(src: Path, dest: Path) -> None:
    """The model with its weights in one external file at aligned offsets, as `sentictl export` writes it
    (so ONNX Runtime can map it instead of copying it)."""
    import onnx

    from sentictl.export.external import externalize

    onnx.save(onnx.load(str(src)), str(dest))  # a single file first (an already external src is read in)
    externalize(dest)


def _ort_format(src: Path, dest: Path) -> None:
    """The model optimised for the CPU provider and saved in ORT format (flatbuffers)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.optimized_model_filepath = str(dest)
    opts.add_session_config_entry("session.save_model_format", "ORT")
    ort.InferenceSession(str(src), sess_options=opts, providers=["CPUExecutionProvider"])


def prepare(knob_name: str, model_file: Path) -> dict[str, Any]:
    """The knob with its transformed model file built (or reused) under benchmarks/_work/memory/."""
    knob = knob_spec(knob_name)
    kind = knob.get("transform")
    if not kind:
        return knob
    st = model_file.stat()
    folder = TRANSFORMS / f"{model_file.parent.name}-{model_file.stem}-{st.st_size}-{int(st.st_mtime)}"
    folder.mkdir(parents=True, exist_ok=True)
    dest = folder / (model_file.stem + (".ort" if kind == "ort" else "_ext.onnx"))
    if not dest.is_file():
        print(f"  building the {kind} form of {model_file.name} ...", file=sys.stderr, flush=True)
        (_ort_format if kind == "ort" else _external)(model_file, dest)
    knob["transformed"] = {os.path.realpath(model_file): str(dest)}
    return knob


# --------------------------------------------------------------------------- the two contenders
def measure_ort(
    knob_name: str,
    knob: dict[str, Any],
    model_dir: Path,
    model_file: Path,
    texts_file: Path,
    threads: int,
    group: int,
    run_tokens: int,
) -> dict[str, Any]:
    manifest = json.loads((model_dir / "manifest.json").read_text())
    cmd = [
        sys.executable,
        __file__,
        "--child-ort",
        json.dumps(knob),
        str(model_file),
        str(model_dir / manifest["tokenizer"]["file"]),
        str(texts_file),
        str(threads),
        str(group),
        str(run_tokens),
    ]
    proc = subprocess.run(cmd, capture_output=True, env=_env(knob.get("env")), text=True)
    if proc.returncode != 0:
        return {"error": proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else f"exit {proc.returncode}"}
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    return {
        "hwm_mb": out["stages"]["run"]["VmHWM"],
        "rss_mb": out["stages"]["run"]["VmRSS"],
        "rss_anon_mb": out["stages"]["run"].get("RssAnon"),
        "rss_file_mb": out["stages"]["run"].get("RssFile"),
        "hwm_after_import_mb": out["stages"]["import"]["VmHWM"],
        "hwm_after_load_mb": out["stages"]["load"]["VmHWM"],
        "rss_after_load_mb": out["stages"]["load"]["VmRSS"],
        "rss_file_after_load_mb": out["stages"]["load"].get("RssFile"),
        "load_s": out["load_s"],
        "rate": out["rate"],
        "cpu_ms": out["cpu_ms"],
    }


def measure_serve(
    knob_name: str,
    knob: dict[str, Any],
    model_dir: Path,
    variant: str | None,
    headlines: list[bytes],
    threads: int,
    clients: int,
    extra: list[str],
) -> dict[str, Any]:
    from bench_serve import Serve, drive

    launcher = [sys.executable, __file__, "--child-serve", json.dumps(knob), "--"]
    args = ["--no-cache", *(["--variant", variant] if variant else []), *extra]
    try:
        server = Serve(model_dir, threads, args, launcher=launcher, env=_env(knob.get("env")))
    except SystemExit as exc:
        return {"error": str(exc).strip().splitlines()[-1][:300]}
    try:
        before, cpu_before = proc_status(server.proc.pid), _cpu_seconds(server.proc.pid)
        res = drive(server.port, headlines, clients)
        after, cpu = proc_status(server.proc.pid), _cpu_seconds(server.proc.pid) - cpu_before
    finally:
        server.stop()
    return {
        "hwm_mb": after["VmHWM"],
        "rss_mb": after["VmRSS"],
        "rss_anon_mb": after.get("RssAnon"),
        "rss_file_mb": after.get("RssFile"),
        "hwm_before_requests_mb": before["VmHWM"],
        "rss_before_requests_mb": before["VmRSS"],
        "rss_anon_before_requests_mb": before.get("RssAnon"),
        "rate": res["rate"],
        "requests": res["requests"],
        "cpu_ms": 1000 * cpu / res["requests"],
    }


def _median(rows: list[dict[str, Any]], key: str) -> float | None:
    values = [r[key] for r in rows if r.get(key) is not None]
    return statistics.median(values) if values else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-dir", type=Path, default=None, help="default: the FinBERT-shaped benchmark model")
    parser.add_argument("--variant", default="int8")
    parser.add_argument("--knobs", default="default", help=f"comma list, or 'all': {', '.join(KNOBS)}")
    parser.add_argument("--contenders", default="serve,ort", help="comma list of serve, ort")
    parser.add_argument("--requests", type=int, default=320)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument(
        "--run-tokens",
        type=int,
        default=1024,
        help="ort contender: most tokens per ORT run (serve's engine default: 1,024)",
    )
    parser.add_argument("--serve-args", default="", help="extra `sentictl serve` arguments, e.g. '--run-tokens 512'")
    parser.add_argument("--target-mb", type=float, default=300.0)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    if args.model_dir is None:
        from make_models import ensure

        args.model_dir = ensure()
    manifest = json.loads((args.model_dir / "manifest.json").read_text())
    model_file = args.model_dir / manifest["variants"][args.variant]["file"]
    knob_names = list(KNOBS) if args.knobs == "all" else [k.strip() for k in args.knobs.split(",") if k.strip()]
    contenders = [c.strip() for c in args.contenders.split(",") if c.strip()]
    headlines = [line for line in HEADLINES.read_text().splitlines() if line.strip()]
    work = [headlines[i % len(headlines)].encode() for i in range(args.requests)]
    knobs = {name: prepare(name, model_file) for name in knob_names}
    rows: dict[tuple[str, str], list[dict[str, Any]]] = {}
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        texts_file = Path(tmp) / "texts.txt"
        texts_file.write_text("\n".join(w.decode() for w in work) + "\n")
        for r in range(args.repeats):
            for name in knob_names:
                for who in contenders:
                    print(f"repeat {r + 1}/{args.repeats}: {who}, {name} ...", file=sys.stderr, flush=True)
                    if who == "serve":
                        row = measure_serve(
                            name,
                            knobs[name],
                            args.model_dir,
                            args.variant,
                            work,
                            args.threads,
                            args.clients,
                            args.serve_args.split(),
                        )
                    else:
                        row = measure_ort(
                            name,
                            knobs[name],
                            args.model_dir,
                            model_file,
                            texts_file,
                            args.threads,
                            args.clients,
                            args.run_tokens,
                        )
                    print(f"    {row}", file=sys.stderr, flush=True)
                    rows.setdefault((who, name), []).append(row)

    table = []
    lines = [
        "| contender | knob | peak RSS (VmHWM) MB | RSS at end MB (anon + file) | texts/s | vs default rate | CPU ms/text |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for who in contenders:
        base_rate = _median(rows.get((who, "default"), []), "rate")
        for name in knob_names:
            got = rows[(who, name)]
            errors = [g["error"] for g in got if "error" in g]
            if errors:
                lines.append(f"| {who} | {name} | failed: {errors[0][:80]} | | | |")
                table.append({"contender": who, "knob": name, "error": errors[0]})
                continue
            hwm, rss, rate = _median(got, "hwm_mb"), _median(got, "rss_mb"), _median(got, "rate")
            anon, file_ = _median(got, "rss_anon_mb"), _median(got, "rss_file_mb")
            vs = f"{rate / base_rate:.2f}×" if base_rate and name != "default" else ""
            cpu_ms = _median(got, "cpu_ms")
            lines.append(
                f"| {who} | {name} | {hwm:.0f} | {rss:.0f} ({anon:.0f} + {file_:.0f}) | {rate:.1f} | {vs} | "
                f"{cpu_ms:.0f} |"
            )
            table.append(
                {
                    "contender": who,
                    "knob": name,
                    "hwm_mb": hwm,
                    "rss_mb": rss,
                    "rate": rate,
                    "cpu_ms": cpu_ms,
                    "rate_vs_default": rate / base_rate if base_rate else None,
                    "runs": got,
                }
            )
    serve_default = next(
        (t for t in table if t["contender"] == "serve" and t["knob"] == "default" and "hwm_mb" in t), None
    )
    headline = (
        f"`sentictl serve` ({args.variant}) peak RSS after {args.requests} requests from {args.clients} "
        f"clients: **{serve_default['hwm_mb']:.0f} MB** (target ≤ {args.target_mb:.0f} MB)"
        if serve_default
        else ""
    )
    result = {
        "model": str(
            args.model_dir.relative_to(REPO) if args.model_dir.resolve().is_relative_to(REPO) else args.model_dir.name
        ),
        "variant": args.variant,
        "model_file_mb": sum(
            p.stat().st_size for p in (model_file, model_file.with_name(model_file.name + ".data")) if p.is_file()
        )
        / 1e6,
        "external_data": model_file.with_name(model_file.name + ".data").is_file(),
        "requests": args.requests,
        "clients": args.clients,
        "threads": args.threads,
        "repeats": args.repeats,
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "load_avg_before": round(load_before, 2),
            "load_avg_after": round(os.getloadavg()[0], 2),
        },
        "target_mb": args.target_mb,
        "headline": headline,
        "rows": table,
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    md = ([headline, ""] if headline else []) + [
        f"Model file {model_file.name}{' + .data (external weights)' if result['external_data'] else ''}: "
        f"{result['model_file_mb']:.0f} MB; {args.requests} requests from "
        f"{args.clients} clients, --threads {args.threads}, median of {args.repeats}. serve = `sentictl serve "
        f"--no-cache` as it ships (+ the knob); ort = bare ONNX Runtime with its own defaults (+ the knob) "
        f"loading the same file and running the same texts. Peak = VmHWM (anonymous + file-backed pages). "
        f"CPU ms/text: the process's CPU time over the requests (serve) or the runs (ort) per text, steadier "
        f"than texts/s on a shared machine.",
        "",
        *lines,
    ]
    result["markdown"] = "\n".join(md)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(result["markdown"])
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--child-serve":
        child_serve(json.loads(sys.argv[2]), sys.argv[4:])
    elif len(sys.argv) > 2 and sys.argv[1] == "--child-ort":
        knob, model_file, tok, texts, threads, group, run_tokens = sys.argv[2:9]
        child_ort(json.loads(knob), model_file, tok, texts, int(threads), int(group), int(run_tokens))
    else:
        main()
