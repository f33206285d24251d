"""A text's label and probabilities do not depend on its batch-mates, the run budget or the order.

Every variant `export` ships by default (fp32, int8) and the bundled model are scored on a few
hundred texts with run budgets of 256 and 8192 tokens and in a shuffled order; labels must be
identical and probabilities within 1e-3. The per-tensor int8 recipe (one activation range per run)
fails the same check, which shows that the check can see the fault it guards against.
"""

from __future__ import annotations

import csv
import random

import numpy as np
import pytest

from conftest import SHARED_DATA
from sentictl import config
from sentictl.engine.model import Model

TOLERANCE = 1e-3
BUNDLED = config.bundled_model_dir()


def _texts(n: int = 400) -> list[str]:
    heads = SHARED_DATA / "headlines.txt"
    tweets = SHARED_DATA / "tweets_train.csv"
    if heads.is_file() and tweets.is_file():
        lines = [t for t in heads.read_text(encoding="utf-8").splitlines() if t.strip()][: n // 2]
        with open(tweets, newline="", encoding="utf-8") as fh:
            lines += [r["text"] for r in csv.DictReader(fh)][: n - len(lines)]
        return lines
    # Without the shared data: varied lengths and a few extreme texts are what matter.
    rng = random.Random(0)
    words = "profit fell shares surged the company cut outlook record quarterly earnings beat estimates $ % 2024 !!!".split()
    return [" ".join(rng.choice(words) for _ in range(rng.randint(1, 60))) for _ in range(n)]


def spread(model_dir, variant: str, texts: list[str]) -> tuple[int, float]:
    """(texts whose label changed, max |Δp|) across budgets 256 and 8192 and a shuffled order."""

    def probs(budget: int, order: list[int]) -> np.ndarray:
        model = Model(model_dir, provider="cpu", variant=variant, run_tokens=budget)
        out = np.empty((len(texts), len(model.labels)))
        out[order] = model.predict_proba([texts[i] for i in order])[0]
        return out

    natural = list(range(len(texts)))
    shuffled = natural[:]
    random.Random(13).shuffle(shuffled)
    runs = [probs(256, natural), probs(8192, natural), probs(1024, shuffled)]
    base = runs[0]
    flips = np.zeros(len(texts), dtype=bool)
    worst = 0.0
    for other in runs[1:]:
        flips |= other.argmax(1) != base.argmax(1)
        worst = max(worst, float(np.abs(other - base).max()))
    return int(flips.sum()), worst


@pytest.fixture(scope="module")
def texts() -> list[str]:
    return _texts()


@pytest.mark.parametrize("variant", ["fp32", "int8"])
def test_default_variants_do_not_depend_on_the_batch(tiny_model_dir, texts, variant):
    flips, worst = spread(tiny_model_dir, variant, texts)
    assert (flips, worst <= TOLERANCE) == (0, True), f"{variant}: {flips} labels changed, max |Δp| {worst:.2e}"


@pytest.mark.skipif(not (BUNDLED / "manifest.json").is_file(), reason="bundled model not built")
def test_bundled_model_does_not_depend_on_the_batch(texts):
    flips, worst = spread(BUNDLED, "int8", texts)
    assert (flips, worst <= TOLERANCE) == (0, True), f"bundled: {flips} labels changed, max |Δp| {worst:.2e}"


def test_per_tensor_recipe_fails_the_same_check(tiny_checkpoint, tmp_path_factory, texts):
    """The old recipe's results move with the batch: the check above would catch a regression."""
    from sentictl.export import TensorInt8, run_export

    out = tmp_path_factory.mktemp("tensor") / "tiny-tensor"
    run_export(str(tiny_checkpoint), out=out, variants="int8", int8=TensorInt8(fp32_layers=()), quiet=True)
    _, worst = spread(out, "int8", texts)
    assert worst > TOLERANCE
