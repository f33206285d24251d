#!/usr/bin/env bash
# The GPU path, measured in one go (issue 13, goal 5): build the FinBERT-shaped model where this
# runs, export fp32/int8/fp16 with sentictl, check fp16-on-CUDA parity against fp32 (labels and
# max |Δp|), and time `sentictl score --provider cuda` against CPU int8 and the PyTorch pipeline
# on the GPU. Prints a markdown block for benchmarks/RESULTS.md; whatever could not run is listed
# under "Not run" with the reason (no CUDA, no onnxruntime-gpu, a missing package), never skipped
# silently. Needs no network: the tokenizer's vocabulary comes from the bundled model.
#
#   bash benchmarks/gpu_check.sh                 # on a GPU machine (aim: under 5 minutes)
#   bash benchmarks/gpu_check.sh --cpu-only      # the same steps without CUDA ("not run: --cpu-only")
#   bash benchmarks/gpu_check.sh --quick         # tiny model and 40 texts: a smoke test of the script
#
# Options: --n N (texts, default 400), --texts FILE (default ../shared/data/headlines.txt, else the
# built-in parity sentences, numbered), --repeats R (timed rounds, default 2), --work DIR (default
# benchmarks/_work/gpu_check), --wheels DIR (install the *.whl in DIR first, see below),
# --budget SECONDS (default 280: later steps are skipped, and listed, once it is spent).
# Results: gpu_check.md and gpu_check.json in $OUT when set (the device tool), else in --work.
#
# Packages. `sentictl score` needs click, numpy, onnxruntime, orjson, platformdirs, tokenizers;
# `sentictl export` also optimum 2.1 + optimum-onnx, which need transformers < 4.58,
# tokenizers <= 0.23.0 and huggingface_hub < 1.0. A machine with a newer transformers (e.g. 5.x)
# can take these as wheels (no network needed there), downloaded where pip works:
#   pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl \
#     transformers==4.57.6 tokenizers==0.22.2 huggingface_hub==0.36.0 optimum==2.1.0 \
#     optimum-onnx==0.1.0 orjson platformdirs
# then `bash benchmarks/gpu_check.sh --wheels .whl` (they go to a private --target folder on
# PYTHONPATH, so the machine's own packages are left as they are). onnxruntime-gpu is ~250 MB:
# where it is not installed, ORT's CUDA provider is missing and the script measures PyTorch fp16
# on CUDA as the anchor instead, and says so.
set -euo pipefail
cd "$(dirname "$0")/.."

PY="${PYTHON:-}"
if [[ -z "$PY" ]]; then
  if [[ -x .venv/bin/python ]]; then PY=.venv/bin/python; else PY=python3; fi
fi
WHEELS=""
ARGS=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --wheels) WHEELS="$2"; shift 2 ;;
    --wheels=*) WHEELS="${1#--wheels=}"; shift ;;
    -h|--help) sed -n '2,30p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) ARGS+=("$1"); shift ;;
  esac
done
if [[ -n "$WHEELS" ]]; then
  SITE="${TMPDIR:-/tmp}/gpu_check_site"
  echo "installing $(ls "$WHEELS"/*.whl | wc -l) wheels from $WHEELS into $SITE" >&2
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" "$WHEELS"/*.whl
  export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
fi
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

exec "$PY" - "${ARGS[@]+"${ARGS[@]}"}" <<'PYEOF'
import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

STARTED = time.monotonic()
REPO = Path.cwd()
p = argparse.ArgumentParser(prog="gpu_check.sh")
p.add_argument("--cpu-only", action="store_true")
p.add_argument("--quick", action="store_true")
p.add_argument("--n", type=int, default=None)
p.add_argument("--repeats", type=int, default=2)
p.add_argument("--work", type=Path, default=REPO / "benchmarks" / "_work" / "gpu_check")
p.add_argument("--budget", type=float, default=280.0)
p.add_argument("--texts", type=Path, default=None, help="one text per line (default: ../shared/data/headlines.txt)")
args = p.parse_args()
n_texts = args.n or (40 if args.quick else 400)
size = "tiny" if args.quick else "base"
args.work.mkdir(parents=True, exist_ok=True)
out_dir = Path(os.environ["OUT"]) if os.environ.get("OUT") else args.work

ran, not_run, rows, timings = [], [], [], []
report = {"date": time.strftime("%Y-%m-%d %H:%M:%S"), "mode": "cpu-only" if args.cpu_only else "gpu",
          "size": size, "texts": n_texts, "ran": ran, "not_run": not_run, "checks": rows, "timings": timings}


def left() -> float:
    return args.budget - (time.monotonic() - STARTED)


def step(msg: str) -> None:
    print(f"[{time.monotonic() - STARTED:6.1f} s] {msg}", file=sys.stderr, flush=True)


def skip(what: str, why: str) -> None:
    not_run.append({"what": what, "why": why})
    step(f"not run: {what}: {why}")


def sh(cmd, timeout=None, env=None, stdin=None):
    """Run a command; (wall seconds, stdout, stderr, exit status)."""
    t = time.perf_counter()
    try:
        proc = subprocess.run(cmd, input=stdin, capture_output=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return time.perf_counter() - t, b"", b"timed out", 124
    return time.perf_counter() - t, proc.stdout, proc.stderr, proc.returncode


def last_line(err: bytes) -> str:
    lines = [l for l in err.decode(errors="replace").strip().splitlines() if l.strip()]
    return lines[-1][:300] if lines else "no message"


# ------------------------------------------------------------------ 0. what this machine has
env_info = {"python": platform.python_version(), "cpus": os.cpu_count(), "machine": platform.machine()}
try:
    import torch
    env_info["torch"] = torch.__version__
    env_info["torch_cuda"] = bool(torch.cuda.is_available())
    if env_info["torch_cuda"]:
        env_info["gpu"] = torch.cuda.get_device_name(0)
except Exception as exc:  # no torch at all: nothing can be built here
    torch = None
    env_info["torch"] = f"missing ({exc.__class__.__name__})"
    env_info["torch_cuda"] = False
try:
    import onnxruntime as ort
    env_info["onnxruntime"] = ort.__version__
    env_info["ort_providers"] = ort.get_available_providers()
except Exception as exc:
    ort = None
    env_info["onnxruntime"] = f"missing ({exc})"
    env_info["ort_providers"] = []
from importlib import metadata

for name in ("transformers", "optimum", "optimum-onnx", "tokenizers", "onnxruntime-gpu"):
    try:
        env_info[name] = metadata.version(name)
    except metadata.PackageNotFoundError:
        env_info[name] = "not installed"
torch_cuda = env_info["torch_cuda"] and not args.cpu_only
ort_cuda = "CUDAExecutionProvider" in env_info["ort_providers"] and not args.cpu_only
why_no_torch_cuda = "--cpu-only" if args.cpu_only else "torch sees no CUDA device"
why_no_ort_cuda = ("--cpu-only" if args.cpu_only else
                   f"onnxruntime {env_info['onnxruntime']} has no CUDAExecutionProvider "
                   f"(providers: {', '.join(env_info['ort_providers']) or 'none'}); onnxruntime-gpu is not installed")
report["environment"] = env_info
step(f"environment: {json.dumps(env_info)}")
if torch is None or ort is None:
    skip("everything", "torch and onnxruntime are both required")

# ------------------------------------------------------------------ 1. the FinBERT-shaped checkpoint
ckpt = args.work / f"ckpt-{size}"
model_dir = args.work / f"model-{size}"
source = args.texts or next((f for f in (REPO.parent / "shared" / "data" / "headlines.txt",
                                          REPO / "shared" / "data" / "headlines.txt") if f.is_file()), None)
if source is not None:
    texts = [l for l in source.read_text(encoding="utf-8").splitlines() if l.strip()][:n_texts]
    report["text_source"] = f"from {source.name}"
else:
    # A device machine gets the repository only (../shared stays behind): the built-in parity
    # sentences, numbered so that every text is distinct (the engine de-duplicates repeats).
    base = [l for l in (REPO / "sentictl" / "data" / "parity.txt").read_text(encoding="utf-8").splitlines() if l.strip()]
    texts = [base[i % len(base)] + ("" if i < len(base) else f" ({i // len(base)})") for i in range(n_texts)]
    report["text_source"] = "sentictl/data/parity.txt, numbered (no headlines file here)"
n_texts = len(texts)
text_file = args.work / "texts.txt"
text_file.write_text("\n".join(texts) + "\n", encoding="utf-8")

if torch is not None and ort is not None:
    step(f"building the {size} checkpoint (random weights, the bundled model's 30,522-token uncased vocabulary)")
    t = time.perf_counter()
    try:
        sys.path.insert(0, str(REPO / "tests"))
        from support.checkpoints import build_checkpoint

        tok = json.loads((REPO / "sentictl" / "models" / "finsent-mini" / "tokenizer.json").read_text())
        vocab = sorted(tok["model"]["vocab"].items(), key=lambda kv: kv[1])
        vocab_file = args.work / "vocab.txt"
        vocab_file.write_text("\n".join(token for token, _ in vocab) + "\n", encoding="utf-8")
        if not (ckpt / "config.json").is_file():
            build_checkpoint(ckpt, size=size, vocab_file=vocab_file)
        ran.append(f"checkpoint: bert-{size} shape, {len(vocab):,} tokens ({time.perf_counter() - t:.1f} s)")
    except Exception as exc:
        skip("building the checkpoint", f"{exc.__class__.__name__}: {exc}")

# ------------------------------------------------------------------ 2. export with sentictl
exported = set()
if (ckpt / "config.json").is_file():
    step("sentictl export --variants fp32,int8,fp16")
    wall, out, err, rc = sh([sys.executable, "-m", "sentictl", "export", "--model", str(ckpt), "--out", str(model_dir),
                             "--variants", "fp32,int8,fp16", "--force"], timeout=max(30, left() - 60))
    if rc == 0:
        manifest = json.loads((model_dir / "manifest.json").read_text())
        exported = {v for v, e in manifest["variants"].items() if e.get("shipped", True)}
        sizes = ", ".join(f"{v} {(e.get('bytes', 0) + (e.get('data') or {}).get('bytes', 0)) / 1e6:.0f} MB"
                          for v, e in manifest["variants"].items() if e.get("shipped", True))
        ran.append(f"sentictl export fp32,int8,fp16: {sizes} ({wall:.0f} s)")
        rows.append(("`sentictl export` parity (50 built-in sentences, CPU provider)",
                     "; ".join(f"{v}: max \\|Δp\\| {e['parity']['max_abs_diff']:.1e}, labels {e['parity']['label_agreement']:.0%}"
                               for v, e in manifest["variants"].items() if e.get("parity"))))
    else:
        skip("sentictl export", f"exit {rc}: {last_line(err)}")

# ------------------------------------------------------------------ 3. parity: fp16 against fp32
PARITY = r'''
import json, sys
import numpy as np
from sentictl.engine.model import Model
model_dir, a, b, pa, pb = sys.argv[1:6]
texts = [l for l in open(sys.argv[6], encoding="utf-8").read().splitlines() if l]
A = Model(model_dir, provider=pa, variant=a).predict_proba(texts)[0]
B = Model(model_dir, provider=pb, variant=b).predict_proba(texts)[0]
print(json.dumps({"agree": float((A.argmax(1) == B.argmax(1)).mean()), "max_abs": float(np.abs(A - B).max()), "n": len(texts)}))
'''
TORCH_PARITY = r'''
import json, sys, torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer
ckpt, path = sys.argv[1], sys.argv[2]
texts = [l for l in open(path, encoding="utf-8").read().splitlines() if l]
tok = AutoTokenizer.from_pretrained(ckpt)
ref = AutoModelForSequenceClassification.from_pretrained(ckpt).eval()
try:
    half = AutoModelForSequenceClassification.from_pretrained(ckpt, dtype=torch.float16)
except TypeError:  # transformers before 4.56
    half = AutoModelForSequenceClassification.from_pretrained(ckpt, torch_dtype=torch.float16)
half = half.to("cuda").eval()
P, Q = [], []
with torch.inference_mode():
    for i in range(0, len(texts), 32):
        enc = tok(texts[i:i + 32], padding=True, truncation=True, return_tensors="pt")
        P.append(ref(**enc).logits.float().softmax(-1))
        Q.append(half(**{k: v.to("cuda") for k, v in enc.items()}).logits.float().softmax(-1).cpu())
P, Q = torch.cat(P), torch.cat(Q)
print(json.dumps({"agree": float((P.argmax(1) == Q.argmax(1)).float().mean()), "max_abs": float((P - Q).abs().max()), "n": len(texts)}))
'''


def parity(label: str, cmd: list[str]) -> None:
    wall, out, err, rc = sh(cmd, timeout=max(20, left() - 30))
    if rc != 0:
        skip(label, f"exit {rc}: {last_line(err)}")
        return
    r = json.loads(out.decode().strip().splitlines()[-1])
    rows.append((label, f"labels agree {r['agree']:.2%} of {r['n']} texts, max \\|Δp\\| {r['max_abs']:.1e}"))
    ran.append(label)


par_file = args.work / "parity_texts.txt"
par_file.write_text("\n".join(texts[: min(len(texts), 200)]) + "\n", encoding="utf-8")
if {"fp32", "int8"} <= exported:
    parity("ORT int8 (CPU) vs fp32 (CPU)",
           [sys.executable, "-c", PARITY, str(model_dir), "int8", "fp32", "cpu", "cpu", str(par_file)])
if "fp16" in exported:
    if ort_cuda:
        parity("ORT fp16 on CUDA vs fp32 (CPU)",
               [sys.executable, "-c", PARITY, str(model_dir), "fp16", "fp32", "cuda", "cpu", str(par_file)])
    else:
        skip("ORT fp16 on CUDA vs fp32", why_no_ort_cuda)
        # What can run without it: the same fp16 graph on ORT's CPU provider (not the CUDA kernels).
        parity("ORT fp16 graph on the CPU provider vs fp32 (CPU)",
               [sys.executable, "-c", PARITY, str(model_dir), "fp16", "fp32", "cpu", "cpu", str(par_file)])
if torch_cuda and (ckpt / "config.json").is_file():
    parity("PyTorch fp16 on CUDA vs PyTorch fp32 (CPU) (the anchor)",
           [sys.executable, "-c", TORCH_PARITY, str(ckpt), str(par_file)])
else:
    skip("PyTorch fp16 on CUDA vs fp32", why_no_torch_cuda)

# ------------------------------------------------------------------ 4. timings, whole processes
PIPE = r'''
import os, sys, time
import torch
from transformers import pipeline
ckpt, path, device, dtype = sys.argv[1:5]
t0 = time.perf_counter()
kwargs = dict(model=ckpt, tokenizer=ckpt, device=0 if device == "cuda" else -1)
try:
    clf = pipeline("text-classification", dtype=getattr(torch, dtype), **kwargs)
except TypeError:  # transformers before 4.56
    clf = pipeline("text-classification", torch_dtype=getattr(torch, dtype), **kwargs)
texts = [l for l in open(path, encoding="utf-8").read().splitlines() if l]
clf(texts[:32], batch_size=32, truncation=True)  # CUDA context and kernels: part of the load
t1 = time.perf_counter()
out = clf(texts, batch_size=32, truncation=True)
if device == "cuda":
    torch.cuda.synchronize()
t2 = time.perf_counter()
assert len(out) == len(texts)
print(f"infer_s={t2 - t1:.4f} load_s={t1 - t0:.4f}", file=sys.stderr)
'''
contenders = {}
if "fp16" in exported:
    if ort_cuda:
        contenders["`sentictl score --provider cuda` (fp16, ORT CUDA)"] = [
            sys.executable, "-m", "sentictl", "score", str(text_file), "--no-cache", "--no-progress",
            "--model-dir", str(model_dir), "--provider", "cuda", "--variant", "fp16"]
    else:
        skip("timing `sentictl score --provider cuda`", why_no_ort_cuda)
if "int8" in exported:
    contenders[f"`sentictl score` CPU int8 ({os.cpu_count()} threads)"] = [
        sys.executable, "-m", "sentictl", "score", str(text_file), "--no-cache", "--no-progress",
        "--model-dir", str(model_dir), "--provider", "cpu", "--variant", "int8"]
if (ckpt / "config.json").is_file():
    if torch_cuda:
        for dtype in ("float32", "float16"):
            contenders[f"PyTorch pipeline on CUDA, {dtype}, batch 32"] = [
                sys.executable, "-c", PIPE, str(ckpt), str(text_file), "cuda", dtype]
    else:
        skip("timing the PyTorch pipeline on the GPU", why_no_torch_cuda)
walls = {name: [] for name in contenders}
inner = {name: [] for name in contenders}
for r in range(args.repeats):
    for name, cmd in (contenders.items() if r % 2 == 0 else list(contenders.items())[::-1]):
        if left() < 15:
            skip(f"timing round {r + 1} of {name}", "the time budget (--budget) was spent")
            continue
        step(f"round {r + 1}/{args.repeats}: {name}")
        wall, out, err, rc = sh(cmd, timeout=max(10, left() - 5))
        if rc != 0:
            skip(f"timing {name}", f"exit {rc}: {last_line(err)}")
            continue
        walls[name].append(wall)
        text = err.decode(errors="replace")
        if "infer_s=" in text:
            inner[name].append(float(text.split("infer_s=")[1].split()[0]))
        elif " s (" in text:  # score's summary line: "... in 1.23 s (325 texts/s)"
            inner[name].append(float(text.rsplit(" in ", 1)[1].split(" s (")[0]))
for name, w in walls.items():
    if w:
        med, inf = statistics.median(w), (statistics.median(inner[name]) if inner[name] else None)
        timings.append({"contender": name, "wall_s": w, "median_wall_s": med, "texts_per_s": n_texts / med,
                        "inference_s": inf, "inference_texts_per_s": n_texts / inf if inf else None})
        ran.append(f"timing {name}")

# ------------------------------------------------------------------ 5. the markdown block
gpu = env_info.get("gpu") or "no GPU visible"
md = [f"### GPU check ({report['date']}, `benchmarks/gpu_check.sh{' --cpu-only' if args.cpu_only else ''}"
      f"{' --quick' if args.quick else ''}`)", "",
      f"Machine: {gpu}; {env_info['cpus']} CPUs; Python {env_info['python']}, torch {env_info['torch']}, "
      f"transformers {env_info['transformers']}, onnxruntime {env_info['onnxruntime']} "
      f"(providers: {', '.join(env_info['ort_providers']) or 'none'}). Model: FinBERT-shaped "
      f"(bert-{size} sizes, random weights: labels meaningless, speed and parity only); "
      f"{n_texts} texts ({report['text_source']}).", ""]
if rows:
    md += ["| check | result |", "|---|---|"] + [f"| {a} | {b} |" for a, b in rows] + [""]
if timings:
    md += [f"| whole process, {n_texts} texts (median of {args.repeats}) | wall | texts/s | inference only |",
           "|---|---:|---:|---:|"]
    for t in timings:
        inf = f"{t['inference_s']:.2f} s ({t['inference_texts_per_s']:,.0f} texts/s)" if t["inference_s"] else ""
        md.append(f"| {t['contender']} | {t['median_wall_s']:.2f} s | {t['texts_per_s']:,.1f} | {inf} |")
    md.append("")
md += ["Ran: " + "; ".join(ran) + "." if ran else "Ran: nothing.", ""]
if not_run:
    md += ["Not run:"] + [f"- {x['what']}: {x['why']}" for x in not_run]
md.append(f"\n(total {time.monotonic() - STARTED:.0f} s)")
text = "\n".join(md)
report["markdown"] = text
report["seconds"] = time.monotonic() - STARTED
out_dir.mkdir(parents=True, exist_ok=True)
(out_dir / "gpu_check.md").write_text(text + "\n", encoding="utf-8")
(out_dir / "gpu_check.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
print(text)
PYEOF
