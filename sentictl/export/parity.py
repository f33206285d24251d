"""How far each built variant is from the checkpoint: parity on built-in sentences, optional evaluation."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..engine.model import Model
from ..errors import SentictlError

PARITY_LIMIT = 1e-4
# data/ belongs to the sentictl package, one level above this subpackage.
PARITY_FILE = Path(__file__).resolve().parent.parent / "data" / "parity.txt"


def parity_sentences() -> list[str]:
    """The built-in financial sentences every export is checked on."""
    return [s for s in PARITY_FILE.read_text().splitlines() if s.strip()]


def _torch_probs(checkpoint: Path, tokenizer: Any, texts: Sequence[str], length: int) -> np.ndarray:
    import torch
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(checkpoint)
    model.eval()
    out = []
    with torch.inference_mode():
        for start in range(0, len(texts), 16):
            enc = tokenizer(
                list(texts[start : start + 16]), padding=True, truncation=True, max_length=length, return_tensors="pt"
            )
            out.append(torch.softmax(model(**enc).logits.float(), dim=-1).numpy())
    return np.concatenate(out).astype(np.float64)


def _load_variant(work: Path, variant: str) -> Model:
    return Model(work, provider="cpu", variant=variant, threads=None)


def check_parity(
    work: Path, checkpoint: Path, tokenizer: Any, length: int, variants: dict[str, dict[str, Any]]
) -> dict[str, Any]:
    """fp32 against PyTorch, every other variant against fp32; figures go into each variant's entry."""
    texts = parity_sentences()
    reference = _torch_probs(checkpoint, tokenizer, texts, length)
    fp32, _ = _load_variant(work, "fp32").predict_proba(texts)
    diff = float(np.abs(fp32 - reference).max())
    variants["fp32"]["parity"] = {
        "vs": "pytorch",
        "max_abs_diff": diff,
        "label_agreement": float((fp32.argmax(1) == reference.argmax(1)).mean()),
    }
    for name in variants:
        if name == "fp32":
            continue
        try:
            probs, _ = _load_variant(work, name).predict_proba(texts)
        except SentictlError as exc:
            variants[name]["parity"] = {"vs": "fp32", "error": f"not run on the cpu provider: {exc}"[:300]}
            continue
        variants[name]["parity"] = {
            "vs": "fp32",
            "max_abs_diff": float(np.abs(probs - fp32).max()),
            "label_agreement": float((probs.argmax(1) == fp32.argmax(1)).mean()),
        }
    return {"sentences": len(texts), "fp32_vs_pytorch_max_abs_diff": diff, "limit": PARITY_LIMIT}


def evaluate_variants(
    work: Path,
    texts: list[str],
    gold: list[int],
    variants: dict[str, dict[str, Any]],
    max_drop: float,
    labels: list[str],
) -> dict[str, Any]:
    """Accuracy and macro F1 of every variant on labelled texts; marks the ones that lose too much."""
    from ..evaluate import metrics

    gold_arr = np.asarray(gold)
    preds: dict[str, np.ndarray] = {}
    for name in variants:
        try:
            probs, _ = _load_variant(work, name).predict_proba(texts)
        except SentictlError as exc:
            variants[name]["eval"] = {"error": f"not run on the cpu provider: {exc}"[:300]}
            continue
        preds[name] = probs.argmax(1)
    accuracy = {name: float((pred == gold_arr).mean()) for name, pred in preds.items()}
    for name, pred in preds.items():
        variants[name]["eval"] = {
            "accuracy": accuracy[name],
            "macro_f1": metrics(gold, pred, labels)["macro_f1"],
            "drop_points": round((accuracy["fp32"] - accuracy[name]) * 100, 3),
            "label_agreement_vs_fp32": float((pred == preds["fp32"]).mean()),
        }
    mark_unusable(variants, accuracy, max_drop)
    return {"texts": len(texts), "max_drop_points": max_drop}


def mark_unusable(variants: dict[str, dict[str, Any]], accuracy: dict[str, float], max_drop: float) -> None:
    """Flag variants that lose more than max_drop accuracy points against fp32 (auto skips them)."""
    for name, acc in accuracy.items():
        drop = (accuracy["fp32"] - acc) * 100
        if name != "fp32" and drop > max_drop:
            variants[name]["usable"] = False
            variants[name]["unusable_reason"] = f"loses {drop:.2f} accuracy points vs fp32 (limit {max_drop})"
