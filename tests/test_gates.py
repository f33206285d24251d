"""A requested check that cannot be made never reads as a pass; what a model does not ship is said plainly.

The bundled finsent-mini ships only its int8 file (fp32's figures stay in the manifest): eval's
--max-drop cannot be measured on it, info lists fp32 apart, and bench refuses to time it.
"""

from __future__ import annotations

import csv
from pathlib import Path

import orjson
import pytest

from conftest import SHARED_DATA, run_sentictl
from sentictl import config
from sentictl.evaluate import unchecked_gates
from sentictl.exitcodes import CHECK_FAILED, FAILED

BUNDLED = config.bundled_model_dir()
needs_bundle = pytest.mark.skipif(not (BUNDLED / "manifest.json").is_file(), reason="bundled model not built")
TWEETS = SHARED_DATA / "tweets_train.csv"


@pytest.fixture(scope="module")
def labelled(tmp_path_factory) -> Path:
    """A few dozen labelled rows: the shared tweets when present, else hand-written headlines."""
    path = tmp_path_factory.mktemp("gates") / "labelled.csv"
    if TWEETS.is_file():
        with open(TWEETS, newline="", encoding="utf-8") as fh:
            rows = [(r["label"], r["text"]) for r in list(csv.DictReader(fh))[::200]]
    else:
        rows = [
            ("positive", "Profit rose 40% and the company raised its outlook."),
            ("negative", "The company cut its forecast after sales fell sharply."),
            ("neutral", "The annual meeting will be held on 3 May."),
        ] * 8
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["label", "text"])
        writer.writerows(rows)
    return path


def _lines(err: bytes, prefix: str) -> list[str]:
    return [line for line in err.decode().splitlines() if line.startswith(prefix)]


@needs_bundle
def test_max_drop_without_the_fp32_file_exits_4_with_the_reason(labelled, tmp_path):
    run = run_sentictl(
        "eval",
        "--data",
        str(labelled),
        "--variants",
        "fp32,int8",
        "--max-drop",
        "0.5",
        "--min-accuracy",
        "0.5",
        cwd=tmp_path,
    )
    assert run.returncode == CHECK_FAILED, run.stderr.decode()[-2000:]
    unchecked = _lines(run.stderr, "sentictl: gate not checked: ")
    assert len(unchecked) == 1, run.stderr.decode()  # one line names the variant, the reason and both gates
    assert "fp32 was skipped (its file is not shipped with this model" in unchecked[0]
    assert "--max-drop 0.5" in unchecked[0] and "--min-accuracy 0.5" in unchecked[0]
    assert b"Traceback" not in run.stderr
    assert b"| int8 |" in run.stdout  # the figures that could be measured are still reported


@needs_bundle
def test_max_drop_on_all_variants_of_the_bundle_is_unchecked_too(labelled, tmp_path):
    run = run_sentictl("eval", "--data", str(labelled), "--max-drop", "5", "--json", "-q", cwd=tmp_path)
    assert run.returncode == CHECK_FAILED
    gates = orjson.loads(run.stdout)["gates"]
    assert gates["passed"] is False and gates["failures"] == []
    assert len(gates["unchecked"]) == 1 and gates["unchecked"][0].startswith("fp32 was skipped")
    assert _lines(run.stderr, "sentictl: gate not checked: ") == [
        f"sentictl: gate not checked: {gates['unchecked'][0]}"
    ]


@needs_bundle
def test_gates_that_can_be_checked_still_pass_on_the_bundle(labelled, tmp_path):
    # --min-accuracy on "all": fp32 is not a variant this model can run, so int8 alone is expected.
    run = run_sentictl("eval", "--data", str(labelled), "--min-accuracy", "0", "--json", "-q", cwd=tmp_path)
    assert run.returncode == 0, run.stderr.decode()[-2000:]
    report = orjson.loads(run.stdout)
    assert report["gates"] == {"min_accuracy": 0.0, "max_drop": None, "failures": [], "unchecked": [], "passed": True}
    assert list(report["variants"]) == ["int8"] and "not shipped" in report["skipped"]["fp32"]
    # Without a gate nothing is asked, so nothing fails: fp32 is reported as skipped and the run passes.
    plain = run_sentictl("eval", "--data", str(labelled), "-q", cwd=tmp_path)
    assert plain.returncode == 0 and b"- fp32: skipped, its file is not shipped" in plain.stdout


def test_min_accuracy_on_a_named_variant_that_did_not_run():
    report = {
        "variants": {"fp32": {"accuracy": 0.9}},
        "expected": ["fp32", "int8"],
        "skipped": {"int8": "InvalidGraph: no kernel"},
    }
    assert unchecked_gates(report, min_accuracy=0.5) == [
        "int8 was skipped (InvalidGraph: no kernel), so --min-accuracy 0.5 could not be checked"
    ]
    assert unchecked_gates(report, min_accuracy=0.5, max_drop=1.0) == [
        "int8 was skipped (InvalidGraph: no kernel), so --min-accuracy 0.5 and --max-drop 1.0 could not be checked"
    ]
    assert unchecked_gates(report) == []


def test_unchecked_gates_unit():
    no_fp32 = {"variants": {"int8": {"accuracy": 0.9}}, "expected": ["int8"], "skipped": {"fp32": "gone"}}
    assert unchecked_gates(no_fp32, max_drop=1.0) == [
        "fp32 was skipped (gone), so --max-drop 1.0 (measured against fp32) could not be checked"
    ]
    assert unchecked_gates(no_fp32, min_accuracy=0.5) == []
    nothing = {"variants": {}, "expected": [], "skipped": {"fp16": "built for cuda"}}
    assert unchecked_gates(nothing, min_accuracy=0.5) == [
        "--min-accuracy 0.5 could not be checked: no variant was evaluated"
    ]


def test_eval_help_no_longer_promises_fp32():
    text = run_sentictl("eval", "--help").stdout.decode()
    assert "fp32 is always run" not in text
    assert "could not be checked" in " ".join(text.split())


@needs_bundle
def test_info_lists_what_is_shipped_and_says_what_is_not(tmp_path):
    info = orjson.loads(run_sentictl("info", cwd=tmp_path).stdout)
    assert list(info["variants"]) == ["int8"]  # only what can run here
    assert list(info["not_shipped"]) == ["fp32"]
    reason = info["not_shipped"]["fp32"]
    assert reason.startswith("model.onnx (") and "is not in this folder" in reason and "export figures" in reason


def test_info_of_a_full_export_has_nothing_missing(tiny_model_dir):
    info = orjson.loads(run_sentictl("info", "--model-dir", str(tiny_model_dir)).stdout)
    assert info["not_shipped"] == {} and set(info["variants"]) == {"fp32", "int8", "fp16", "coreml"}


@needs_bundle
def test_bench_refuses_a_variant_that_is_not_shipped_in_plain_words(tmp_path):
    run = run_sentictl(
        "bench", "--variants", "fp32,int8", "--baseline", "none", "--out", str(tmp_path / "b"), cwd=tmp_path
    )
    assert run.returncode == FAILED
    err = run.stderr.decode()
    assert "cannot bench fp32: its file is not shipped with this model" in err and "--variants int8" in err
    assert "sentictl.errors" not in err and "Traceback" not in err
    assert not (tmp_path / "b").exists()  # refused before anything was written


@needs_bundle
def test_bench_variant_choice_leaves_out_what_is_not_shipped():
    from sentictl.bench import pick_variants
    from sentictl.engine.model import read_manifest

    manifest = read_manifest(BUNDLED)
    assert pick_variants(manifest, "all", "auto") == ["int8"]
    assert pick_variants(manifest, "auto", "auto") == ["int8"]
    assert pick_variants(manifest, "auto", "cuda") == ["int8"]  # nothing built for cuda: not fp32 it lacks


def test_a_failing_bench_job_reports_the_message_not_the_class_path(tiny_model_dir):
    from sentictl.bench import run_job, thread_env

    job = {
        "kind": "infer",
        "model_dir": str(tiny_model_dir),
        "variant": "int4",
        "texts": ["Profit rose."],
        "batch_sizes": [1],
        "threads": 1,
        "repeats": 1,
        "warmup": 0,
        "provider": "cpu",
        "long": "truncate",
        "run_tokens": 1024,
    }
    result = run_job(job, thread_env(1))
    assert "int4" in result["error"] and "sentictl.errors" not in result["error"]


@needs_bundle
def test_score_names_a_variant_that_is_not_shipped_in_plain_words(tmp_path):
    run = run_sentictl("score", "--variant", "fp32", "--no-cache", input="Profit rose.\n", cwd=tmp_path)
    assert run.returncode == FAILED
    err = run.stderr.decode()
    assert "the fp32 variant's file is not shipped with this model" in err and "use --variant int8" in err
    assert "Traceback" not in err
