"""Build BERT sequence-classification checkpoints offline, for tests and benchmarks.

Random weights, a real WordPiece tokenizer, FinBERT's label order. Needs the export extra
(torch + transformers); never imported by the hot path.
"""

from __future__ import annotations

import re
from pathlib import Path

FINBERT_LABELS = {0: "positive", 1: "negative", 2: "neutral"}
_SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]

# Words the tiny vocabulary knows whole; anything else falls back to single characters.
_WORDS = """
the a an and or of to in on for with by at from as is are was were be been it its this that
company shares profit profits loss losses revenue sales earnings quarter quarterly year annual
rose fell surged plunged jumped dropped increased decreased grew declined cut raised beat missed
record strong weak outlook guidance forecast estimates analysts investors market stock stocks
price prices bank rates interest dividend buyback merger acquisition deal contract results
will publish thursday friday monday report reported expects expected sharply after before
net operating million billion percent euros dollars eur mn usd up down higher lower new
""".split()


def write_vocab(path: Path, words: list[str] | None = None) -> Path:
    """A small but real WordPiece vocabulary: specials, characters, ##characters and whole words."""
    chars = [chr(c) for c in range(ord("a"), ord("z") + 1)] + list("0123456789.,;:!?'\"-()%$&/")
    vocab = _SPECIAL + chars + ["##" + c for c in chars] + sorted(set(words or _WORDS) - set(chars))
    path.write_text("\n".join(vocab) + "\n")
    return path


def build_checkpoint(
    out: str | Path,
    size: str = "tiny",
    vocab_file: str | Path | None = None,
    seed: int = 0,
    max_position_embeddings: int | None = None,
) -> Path:
    """Save a random-weight BertForSequenceClassification + fast tokenizer to ``out``.

    size "tiny": 2 layers, hidden 32 (fast tests). size "base": bert-base shapes, the same
    compute as FinBERT (for speed measurements only, never accuracy).
    """
    import torch
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    vocab = Path(vocab_file) if vocab_file else write_vocab(out / "vocab.txt")
    if vocab.resolve() != (out / "vocab.txt").resolve():
        (out / "vocab.txt").write_text(vocab.read_text())
    tokenizer = BertTokenizerFast(vocab_file=str(out / "vocab.txt"), do_lower_case=True)
    n_vocab = len(tokenizer.get_vocab())
    shapes = {
        "tiny": dict(
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=64,
            max_position_embeddings=max_position_embeddings or 128,
        ),
        "base": dict(
            hidden_size=768,
            num_hidden_layers=12,
            num_attention_heads=12,
            intermediate_size=3072,
            max_position_embeddings=max_position_embeddings or 512,
        ),
    }[size]
    cfg = BertConfig(
        vocab_size=n_vocab,
        id2label=dict(FINBERT_LABELS),
        label2id={v: k for k, v in FINBERT_LABELS.items()},
        # A wider init than BERT's 0.02 makes the random classifier's outputs decisive,
        # so label comparisons in tests are not coin flips between near-equal scores.
        initializer_range=0.2 if size == "tiny" else 0.02,
        **shapes,
    )
    torch.manual_seed(seed)
    model = BertForSequenceClassification(cfg)
    model.eval()
    model.save_pretrained(out)
    tokenizer.model_max_length = cfg.max_position_embeddings
    tokenizer.save_pretrained(out)
    return out


def install_in_hf_cache(checkpoint: str | Path, hf_home: str | Path, repo_id: str, revision: str = "0" * 40) -> Path:
    """Lay a checkpoint out as the hub cache would under HF_HOME, so offline hub loading finds it."""
    import shutil

    hf_home = Path(hf_home)
    repo_dir = hf_home / "hub" / ("models--" + re.sub("/", "--", repo_id))
    snapshot = repo_dir / "snapshots" / revision
    snapshot.mkdir(parents=True, exist_ok=True)
    for item in Path(checkpoint).iterdir():
        if item.is_file():
            shutil.copy(item, snapshot / item.name)
    (repo_dir / "refs").mkdir(exist_ok=True)
    (repo_dir / "refs" / "main").write_text(revision)
    return snapshot
