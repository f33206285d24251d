"""The engine: variant choice, batching, ordering, long texts, and no heavy imports."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from sentictl.engine import model as engine
from sentictl.engine.model import Model
from sentictl.errors import SentictlError

TEXTS = [
    "Shares surged after record quarterly earnings beat estimates.",
    "Profit fell.",
    "The company will publish its results on Thursday and analysts expect a strong quarter with higher revenue.",
    "Net sales decreased by 5 percent.",
    "Dividend raised",
    "The bank cut rates",
    "Operating profit rose to EUR 13.1 mn from EUR 8.7 mn in the corresponding period in 2007.",
]


def test_auto_picks_int8_on_cpu(tiny_model_dir):
    m = Model(tiny_model_dir)
    assert (m.provider, m.variant) == ("cpu", "int8")
    assert m.labels == ["positive", "negative", "neutral"]


def test_unavailable_provider_falls_back_to_cpu_with_one_warning(tiny_model_dir, capsys):
    if "cuda" in engine.available_providers():
        pytest.skip("CUDA is available here")
    m = Model(tiny_model_dir, provider="cuda")
    assert (m.provider, m.variant) == ("cpu", "int8")
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cuda is not available" in err[0] and "cpu" in err[0]


def test_choose_prefers_accelerator_variants(monkeypatch, tiny_model_dir):
    manifest = engine.read_manifest(tiny_model_dir)
    monkeypatch.setattr(engine, "available_providers", lambda: ["cuda", "cpu"])
    assert engine.choose(manifest, "auto") == ("cuda", "fp16")
    monkeypatch.setattr(engine, "available_providers", lambda: ["coreml", "cpu"])
    assert engine.choose(manifest, "auto") == ("coreml", "coreml")
    monkeypatch.setattr(engine, "available_providers", lambda: ["cpu"])
    assert engine.choose(manifest, "auto") == ("cpu", "int8")
    manifest["variants"]["int8"]["usable"] = False
    assert engine.choose(manifest, "auto") == ("cpu", "fp32")
    with pytest.raises(SentictlError, match="no 'bf16' variant"):
        engine.choose(manifest, "cpu", "bf16")


def test_results_keep_input_order(tiny_model_dir):
    m = Model(tiny_model_dir, variant="fp32")
    together = m.classify(TEXTS)
    assert [r["text"] for r in together] == TEXTS
    for r in together:
        assert set(r) == {"text", "label", "score", "scores", "model", "cache_hit"}
        assert r["label"] == max(r["scores"], key=r["scores"].get)
        assert abs(sum(r["scores"].values()) - 1) < 1e-4


@pytest.mark.parametrize("budget", [1, 40, 100_000])
def test_batched_equals_one_at_a_time(tiny_model_dir, budget):
    batched = Model(tiny_model_dir, variant="fp32", run_tokens=budget).predict_proba(TEXTS)[0]
    single = np.vstack([Model(tiny_model_dir, variant="fp32").predict_proba([t])[0] for t in TEXTS])
    np.testing.assert_allclose(batched, single, atol=1e-5)


def test_int8_batched_labels_match_single(tiny_model_dir):
    # Dynamic int8 quantizes activations per batch, so probabilities move slightly with the
    # batch's contents; the labels must not.
    m = Model(tiny_model_dir, variant="int8")
    batched = m.predict_proba(TEXTS)[0]
    single = np.vstack([m.predict_proba([t])[0] for t in TEXTS])
    assert (batched.argmax(1) == single.argmax(1)).all()
    assert np.abs(batched - single).max() < 0.05


def test_coreml_variant_static_shape_matches_fp32(tiny_model_dir):
    coreml = Model(tiny_model_dir, provider="cpu", variant="coreml")
    assert coreml.static_shape == [1, coreml.max_length]
    fp32 = Model(tiny_model_dir, variant="fp32")
    np.testing.assert_allclose(coreml.predict_proba(TEXTS)[0], fp32.predict_proba(TEXTS)[0], atol=1e-5)


def test_fp16_variant_runs_on_cpu(tiny_model_dir):
    fp16 = Model(tiny_model_dir, provider="cpu", variant="fp16")
    fp32 = Model(tiny_model_dir, variant="fp32")
    assert np.abs(fp16.predict_proba(TEXTS)[0] - fp32.predict_proba(TEXTS)[0]).max() < 1e-2


def test_truncate_flags_long_texts(tiny_model_dir):
    m = Model(tiny_model_dir, variant="fp32")
    long_text = " ".join(["profit rose"] * 200)
    short, long_ = m.classify(["profit rose", long_text])
    assert "truncated" not in short
    assert long_["truncated"] is True
    # Truncation keeps exactly the first max_length-2 word pieces.
    ids = m.encode([long_text])[0][: m.max_length - 2]
    cut = m.tokenizer.decode(ids)
    np.testing.assert_allclose(m.predict_proba([long_text])[0], m.predict_proba([cut])[0], atol=1e-5)


def test_chunk_mode_averages_sentences_by_length(tiny_model_dir):
    m = Model(tiny_model_dir, variant="fp32", long="chunk")
    first = "profit rose sharply after record earnings beat estimates. " * 10
    second = "the bank cut rates and shares fell. " * 12
    text = (first + second).strip()
    assert len(m.encode([text])[0]) > m.max_length - 2
    chunks = m._chunks(text, m.max_length - 2)
    assert len(chunks) >= 2 and all(len(c) <= m.max_length - 2 for c in chunks)
    # The aggregate is the token-weighted mean of the chunks' probabilities.
    plain = Model(tiny_model_dir, variant="fp32")
    probs = np.vstack([plain.predict_proba([plain.tokenizer.decode(c)])[0] for c in chunks])
    weights = np.array([len(c) for c in chunks], dtype=float)
    expected = (probs * weights[:, None]).sum(0) / weights.sum()
    got = m.predict_proba([text])[0][0]
    np.testing.assert_allclose(got, expected, atol=1e-4)
    assert "truncated" not in m.classify([text])[0]


def test_chunk_mode_splits_a_single_overlong_sentence(tiny_model_dir):
    m = Model(tiny_model_dir, variant="fp32", long="chunk")
    text = " ".join(["revenue"] * 400)  # no sentence boundary at all
    chunks = m._chunks(text, m.max_length - 2)
    assert sum(len(c) for c in chunks) == len(m.encode([text])[0])
    assert all(len(c) <= m.max_length - 2 for c in chunks)


def test_empty_input_gives_empty_output(tiny_model_dir):
    assert Model(tiny_model_dir).classify([]) == []


def test_fingerprint_depends_on_variant_and_weights(tiny_model_dir):
    manifest = engine.read_manifest(tiny_model_dir)
    assert engine.fingerprint(manifest, "int8") != engine.fingerprint(manifest, "fp32")
    changed = {
        **manifest,
        "variants": {**manifest["variants"], "int8": {**manifest["variants"]["int8"], "sha256": "0" * 64}},
    }
    assert engine.fingerprint(changed, "int8") != engine.fingerprint(manifest, "int8")
    assert Model(tiny_model_dir).cache_namespace != Model(tiny_model_dir, long="chunk").cache_namespace


def test_missing_model_dir_is_a_clear_error(tmp_path):
    with pytest.raises(SentictlError, match="run `sentictl export` first"):
        Model(tmp_path / "nope")


def test_score_path_imports_no_heavy_modules(tiny_model_dir, tmp_path):
    code = (
        "import sys, io\n"
        "from sentictl.cli import cli\n"
        "sys.stdin = io.TextIOWrapper(io.BytesIO(b'Profit fell sharply.\\n'))\n"
        f"try:\n    cli(['score', '--model-dir', r'{tiny_model_dir}', '--cache', r'{tmp_path / 'c.sqlite'}', '-q'])\n"
        "except SystemExit as e:\n    assert not e.code, e.code\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'transformers', 'optimum'))\n"
        "print('HEAVY', heavy, file=sys.stderr)\n"
        "assert not heavy, heavy\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=120)
    assert proc.returncode == 0, proc.stderr.decode()[-2000:]
    assert b'"label"' in proc.stdout
    assert b"HEAVY []" in proc.stderr
