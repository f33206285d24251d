"""`sentictl eval`: the metric arithmetic on a hand-made case, label matching, gates, real data."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from conftest import SHARED_DATA
from sentictl.errors import InputError
from sentictl.evaluate import check_gates, confusion_matrix, metrics, read_labelled

LABELS = ["positive", "negative", "neutral"]
TWEETS = SHARED_DATA / "tweets_train.csv"


def test_hand_made_confusion_case():
    # gold\pred   pos neg neu
    #   positive    3   1   0     support 4
    #   negative    1   2   1     support 4
    #   neutral     0   0   2     support 2
    gold = [0, 0, 0, 0, 1, 1, 1, 1, 2, 2]
    pred = [0, 0, 0, 1, 0, 1, 1, 2, 2, 2]
    fp32 = [0, 0, 0, 1, 0, 1, 1, 1, 2, 0]  # differs from pred at positions 7 and 9
    m = metrics(gold, pred, LABELS, reference=fp32)
    assert m["confusion"]["matrix"] == [[3, 1, 0], [1, 2, 1], [0, 0, 2]]
    assert m["n"] == 10
    assert m["accuracy"] == pytest.approx(7 / 10)
    pc = m["per_class"]
    assert pc["positive"]["precision"] == pytest.approx(3 / 4) and pc["positive"]["recall"] == pytest.approx(3 / 4)
    assert pc["negative"]["precision"] == pytest.approx(2 / 3) and pc["negative"]["recall"] == pytest.approx(2 / 4)
    assert pc["neutral"]["precision"] == pytest.approx(2 / 3) and pc["neutral"]["recall"] == pytest.approx(1.0)
    f1 = [0.75, 2 * (2 / 3) * 0.5 / (2 / 3 + 0.5), 2 * (2 / 3) / (2 / 3 + 1)]
    assert pc["negative"]["f1"] == pytest.approx(f1[1])
    assert m["macro_f1"] == pytest.approx(sum(f1) / 3)
    assert [pc[lab]["support"] for lab in LABELS] == [4, 4, 2]
    assert m["agreement_vs_fp32"] == pytest.approx(8 / 10)


def test_a_class_never_seen_nor_predicted_is_left_out_of_macro_f1():
    m = metrics([0, 1, 1], [0, 1, 0], LABELS)
    assert m["per_class"]["neutral"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0, "predicted": 0}
    # positive: P 1/2 R 1 → F1 2/3; negative: P 1 R 1/2 → F1 2/3; neutral ignored.
    assert m["macro_f1"] == pytest.approx(2 / 3)


def test_never_predicted_class_counts_as_zero_not_nan():
    m = metrics([0, 2], [0, 0], LABELS)
    assert m["per_class"]["neutral"]["precision"] == 0.0
    assert m["per_class"]["neutral"]["f1"] == 0.0
    assert m["macro_f1"] == pytest.approx((2 * 0.5 * 1 / 1.5 + 0) / 2)


def test_confusion_matrix_rejects_mismatched_lengths():
    with pytest.raises(ValueError):
        confusion_matrix([0, 1], [0], 3)


def _write_csv(path: Path, rows, header=("label", "text")) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        w.writerows(rows)
    return path


def test_labels_match_by_name_ignoring_case_and_order(tmp_path):
    path = _write_csv(tmp_path / "d.csv", [("Neutral", "flat"), (" POSITIVE ", "up"), ("negative", "down")])
    texts, gold = read_labelled(path, LABELS)
    assert texts == ["flat", "up", "down"] and gold == [2, 0, 1]


def test_unknown_labels_are_listed(tmp_path):
    path = _write_csv(tmp_path / "d.csv", [("bullish", "a"), ("positive", "b"), ("bearish", "c"), ("bullish", "d")])
    with pytest.raises(InputError) as info:
        read_labelled(path, LABELS)
    message = str(info.value)
    assert "'bullish' (2×)" in message and "'bearish' (1×)" in message
    assert "positive, negative, neutral" in message


def test_missing_column_names_the_columns(tmp_path):
    path = _write_csv(tmp_path / "d.csv", [("positive", "a")], header=("sentiment", "headline"))
    with pytest.raises(InputError, match="no column 'text', 'label'.*sentiment, headline"):
        read_labelled(path, LABELS)
    texts, gold = read_labelled(path, LABELS, text_column="headline", label_column="sentiment")
    assert texts == ["a"] and gold == [0]


def test_delta_vs_fp32_is_variant_minus_fp32():
    """A variant more accurate than fp32 shows a positive Δ (it once printed -0.31 for +0.31)."""
    from sentictl.evaluate import format_report

    def variant(accuracy, drop):
        return {
            "accuracy": accuracy,
            "drop_points": drop,
            "macro_f1": accuracy,
            "agreement_vs_fp32": 0.99,
            "per_class": {"positive": {"precision": 1.0, "recall": accuracy}},
            "confusion": {"matrix": [[100]]},
        }

    report = {
        "labels": ["positive"],
        "texts": 100,
        "data": "d.csv",
        "gold_distribution": {"positive": 100},
        "skipped": {},
        "variants": {"fp32": variant(0.80, 0.0), "int8": variant(0.8031, -0.31), "fp16": variant(0.79, 1.0)},
    }
    text = format_report(report)
    rows = {
        line.split("|")[1].strip(): line.split("|")[4].strip()
        for line in text.splitlines()
        if line.startswith("| ") and line.split("|")[1].strip() in ("fp32", "int8", "fp16")
    }
    assert rows["int8"] == "+0.31" and rows["fp16"] == "-1.00"


def test_gates():
    report = {
        "variants": {"fp32": {"accuracy": 0.9, "drop_points": 0.0}, "int8": {"accuracy": 0.88, "drop_points": 2.0}}
    }
    assert check_gates(report) == []
    assert check_gates(report, min_accuracy=0.85, max_drop=2.0) == []
    assert check_gates(report, max_drop=1.5) == ["int8: 2.00 points below fp32 > --max-drop 1.5"]
    assert [f.split(":")[0] for f in check_gates(report, min_accuracy=0.89)] == ["int8"]


@pytest.fixture(scope="module")
def tweets_slice(tmp_path_factory) -> Path:
    """Every 40th row of the shared tweets (all three labels), renamed columns to test the options."""
    if not TWEETS.is_file():
        pytest.skip(f"{TWEETS} is not here")
    with open(TWEETS, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))[::40]
    path = tmp_path_factory.mktemp("eval") / "slice.csv"
    return _write_csv(path, [(r["label"], r["text"]) for r in rows], header=("sentiment", "body"))


def test_eval_cli_on_tweets_matches_the_engine(sentictl, tiny_model_dir, tweets_slice):
    proc = sentictl(
        "eval",
        "--model-dir",
        str(tiny_model_dir),
        "--data",
        str(tweets_slice),
        "--text-column",
        "body",
        "--label-column",
        "sentiment",
        "--json",
    )
    assert proc.returncode == 0, proc.stderr.decode()
    report = json.loads(proc.stdout)
    texts, gold = read_labelled(tweets_slice, LABELS, "body", "sentiment")
    assert report["texts"] == len(texts) > 200
    assert set(report["gold_distribution"]) == set(LABELS) and all(report["gold_distribution"].values())
    # By default only the variants this machine's providers run; the rest are skipped with a reason.
    assert set(report["variants"]) == {"fp32", "int8"}
    assert set(report["skipped"]) == {"fp16", "coreml"}

    from sentictl.engine.model import Model

    fp32_pred = Model(tiny_model_dir, provider="cpu", variant="fp32").predict_proba(texts)[0].argmax(1)
    int8_pred = Model(tiny_model_dir, provider="cpu", variant="int8").predict_proba(texts)[0].argmax(1)
    gold_arr = np.asarray(gold)
    fp32, int8 = report["variants"]["fp32"], report["variants"]["int8"]
    assert fp32["accuracy"] == pytest.approx(float((fp32_pred == gold_arr).mean()))
    assert int8["accuracy"] == pytest.approx(float((int8_pred == gold_arr).mean()))
    assert int8["agreement_vs_fp32"] == pytest.approx(float((int8_pred == fp32_pred).mean()))
    assert fp32["agreement_vs_fp32"] == 1.0
    assert int8["drop_points"] == pytest.approx((fp32["accuracy"] - int8["accuracy"]) * 100, abs=1e-3)
    matrix = np.asarray(int8["confusion"]["matrix"])
    assert matrix.sum() == len(texts) and np.trace(matrix) == round(int8["accuracy"] * len(texts))
    assert report["gates"]["passed"] is True


def test_eval_table_and_gates_exit_4(sentictl, tiny_model_dir, tweets_slice):
    args = [
        "eval",
        "--model-dir",
        str(tiny_model_dir),
        "--data",
        str(tweets_slice),
        "--text-column",
        "body",
        "--label-column",
        "sentiment",
        "--variants",
        "fp32,int8,fp16",
    ]
    proc = sentictl(*args, "--min-accuracy", "0.999")
    assert proc.returncode == 4
    out, err = proc.stdout.decode(), proc.stderr.decode()
    assert "| variant | accuracy | macro-F1 |" in out and "| fp16 |" in out  # named → run on cpu
    assert "confusion (int8; rows gold, columns predicted)" in out
    assert "gate missed: fp32: accuracy" in err and "Traceback" not in err
    ok = sentictl(*args, "--max-drop", "100", "--min-accuracy", "0", "-q")
    assert ok.returncode == 0, ok.stderr.decode()
    assert ok.stderr.decode() == ""


def test_eval_cli_unknown_labels_is_a_clean_error(sentictl, tiny_model_dir, tmp_path):
    path = _write_csv(tmp_path / "bad.csv", [("Bullish", "Shares jumped"), ("neutral", "Flat day")])
    proc = sentictl("eval", "--model-dir", str(tiny_model_dir), "--data", str(path))
    assert proc.returncode == 1
    err = proc.stderr.decode()
    assert "Error:" in err and "'Bullish' (1×)" in err and "Traceback" not in err


def test_eval_cli_unknown_variant(sentictl, tiny_model_dir, tmp_path):
    path = _write_csv(tmp_path / "d.csv", [("neutral", "Flat day")])
    proc = sentictl("eval", "--model-dir", str(tiny_model_dir), "--data", str(path), "--variants", "fp32,int4")
    assert proc.returncode == 1
    assert "no variant int4" in proc.stderr.decode()


def test_eval_on_a_model_without_its_fp32_file(sentictl, tiny_checkpoint, tweets_slice, tmp_path):
    """A bundle that ships only int8 (like finsent-mini) still evaluates; fp32 is reported as skipped."""
    out = tmp_path / "bundle"
    made = sentictl(
        "export", "--model", str(tiny_checkpoint), "--out", str(out), "--variants", "int8", "--keep", "int8"
    )
    assert made.returncode == 0, made.stderr.decode()[-2000:]
    cols = ["--text-column", "body", "--label-column", "sentiment"]
    run = sentictl("eval", "--model-dir", str(out), "--data", str(tweets_slice), *cols, "--json")
    assert run.returncode == 0, run.stderr.decode()[-2000:]
    report = json.loads(run.stdout)
    assert list(report["variants"]) == ["int8"]
    assert "not shipped" in report["skipped"]["fp32"]
    table = sentictl("eval", "--model-dir", str(out), "--data", str(tweets_slice), *cols)
    assert table.returncode == 0 and b"n/a" in table.stdout
    # A --max-drop gate needs fp32: asked for, it cannot pass unchecked (it used to exit 0 here).
    gated = sentictl("eval", "--model-dir", str(out), "--data", str(tweets_slice), *cols, "--max-drop", "100")
    assert gated.returncode == 4
    assert b"gate not checked: fp32 was skipped (its file is not shipped" in gated.stderr
