"""The public Python API, through public names only (``import sentictl``), against the bundled model."""

from __future__ import annotations

import concurrent.futures as cf
import dataclasses
import json
import multiprocessing as mp
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

import sentictl
from conftest import SHARED_DATA, run_sentictl, sentictl_env

TEXTS = ["Profit rose.", "", "Losses widened."]
HEAVY = ("torch", "transformers", "optimum")


@pytest.fixture
def here(tmp_path, monkeypatch):
    """A fresh current directory (no models/finbert), so load() picks the bundled model as the CLI would."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture(scope="module")
def clf():
    return sentictl.load(threads=1)


def headlines(n: int = 2000) -> list[str]:
    path = SHARED_DATA / "headlines.txt"
    if path.is_file():
        lines = path.read_text(encoding="utf-8").splitlines()[:n]
        if len(lines) == n:
            return lines
    return [
        f"Company {i} reports {'higher' if i % 3 else 'lower'} quarterly profit of {i % 97} million" for i in range(n)
    ]


def test_the_issue_example_works_as_written(here):
    clf = sentictl.load()
    assert (
        sentictl.load(sentictl.load().model_dir, variant="int8", provider="cpu", threads=1, cache=None).name == clf.name
    )
    results = clf.classify(["Profit rose.", "", "Losses widened."])
    assert [type(r) for r in results] == [sentictl.Result] * 3
    r = results[0]
    assert (r.text, r.label in clf.labels, r.score == max(r.scores.values())) == ("Profit rose.", True, True)
    assert list(r.scores) == clf.labels and abs(sum(r.scores.values()) - 1) < 1e-3
    assert (r.cache_hit, r.truncated, r.model, r.error) == (False, False, clf.name, None)
    assert results[1].error == "empty" and results[1].label is None and results[1].score is None
    assert results[2].text == "Losses widened." and results[2].ok
    info = clf.info()
    assert info["bundled"] is True and info["fingerprint"] == clf.fingerprint and info["cache"] is None


def test_result_is_a_frozen_dataclass(clf):
    (r,) = clf.classify(["Shares surged after record earnings."])
    assert dataclasses.is_dataclass(r)
    assert {f.name for f in dataclasses.fields(r)} == {
        "text",
        "label",
        "score",
        "scores",
        "model",
        "cache_hit",
        "truncated",
        "error",
        "message",
    }
    with pytest.raises(dataclasses.FrozenInstanceError):
        r.label = "neutral"  # type: ignore[misc]
    assert r.ok and r.message is None


def test_bad_texts_carry_reason_codes_and_never_raise(here):
    clf = sentictl.load(threads=1, max_chars=30)
    texts = ["fine text here", "", " \t\x00", "x" * 31, None, 42, b"bytes", "fine text here\n", "\ufeffBOM text"]
    results = clf.classify(texts)
    assert [r.error for r in results] == [
        None,
        "empty",
        "empty",
        "too_long",
        "empty",
        "not_string",
        "not_string",
        None,
        None,
    ]
    assert all(r.message for r in results if not r.ok)
    assert all(r.label is None and r.score is None and not r.scores and not r.cache_hit for r in results if not r.ok)
    # One text, one answer: the same normalisation as every door.
    assert results[7] == results[0] and results[8].text == "BOM text"


def test_results_come_in_input_order_beyond_one_chunk(clf):
    texts = headlines(1100)
    forward = clf.classify(texts)
    backward = clf.classify(list(reversed(texts)))
    assert [r.text for r in forward] == [t.rstrip("\r\n") for t in texts]
    assert forward == list(reversed(backward))


def test_one_classifier_serves_several_threads(clf, tmp_path):
    texts = headlines(600)
    alone = clf.classify(texts)
    with cf.ThreadPoolExecutor(4) as pool:  # concurrent inference on one session
        parts = list(pool.map(clf.classify, [texts[i::4] for i in range(4)] * 2))
    assert parts == [alone[i % 4 :: 4] for i in range(8)]
    with sentictl.load(threads=1, cache=tmp_path / "c.sqlite") as cached, cf.ThreadPoolExecutor(4) as pool:
        parts = list(pool.map(cached.classify, [texts[i::4] for i in range(4)] * 2))  # ... and one cache
    assert [[dataclasses.replace(r, cache_hit=False) for r in part] for part in parts] == [
        alone[i % 4 :: 4] for i in range(8)
    ]


def test_a_single_string_is_refused(clf):
    with pytest.raises(TypeError, match=r"classify\(\[text\]\)"):
        clf.classify("Profit rose.")  # type: ignore[arg-type]


def test_as_dict_is_what_score_writes(clf, here):
    texts = ["Profit rose sharply.", "Losses widened in the third quarter.", "Revenue was flat."]
    proc = run_sentictl("score", "--no-cache", "-q", input="\n".join(texts) + "\n", cwd=here)
    assert proc.returncode == 0, proc.stderr
    assert [orjson.loads(line) for line in proc.stdout.splitlines()] == [r.as_dict() for r in clf.classify(texts)]


def test_truncated_is_reported(clf):
    (r,) = clf.classify([" ".join(["profit"] * 2000)])
    assert r.ok and r.truncated and r.as_dict()["truncated"] is True


def test_cache_path_shares_entries_with_score(here, cache_path):
    texts = ["Profit rose sharply.", "Losses widened in the third quarter."]
    proc = run_sentictl("score", "--cache", str(cache_path), "-q", input="\n".join(texts) + "\n", cwd=here)
    assert proc.returncode == 0, proc.stderr
    by_cli = [orjson.loads(line) for line in proc.stdout.splitlines()]
    with sentictl.load(cache=cache_path, threads=1) as clf:
        assert clf.cache_path == cache_path
        results = clf.classify([*texts, "Revenue was flat."])
    assert [r.cache_hit for r in results] == [True, True, False]
    assert [{**r.as_dict(), "cache_hit": False} for r in results[:2]] == by_cli
    # ... and the other way round: what the API stored, score finds.
    proc = run_sentictl("score", "--cache", str(cache_path), "-q", input="Revenue was flat.\n", cwd=here)
    assert orjson.loads(proc.stdout)["cache_hit"] is True


def test_default_cache_is_the_clis(here, monkeypatch, tmp_path):
    monkeypatch.setenv("SENTICTL_CACHE", str(tmp_path / "shared.sqlite"))
    clf = sentictl.load(cache=sentictl.DEFAULT_CACHE, threads=1)
    assert clf.cache_path == tmp_path / "shared.sqlite"
    assert clf.classify(["Profit rose."])[0].cache_hit is False
    assert clf.classify(["Profit rose."])[0].cache_hit is True
    clf.close()
    assert sentictl.load(threads=1).cache_path is None  # the API's default: no cache


def test_info_is_what_sentictl_info_shows(here):
    proc = run_sentictl("info", cwd=here)
    assert proc.returncode == 0, proc.stderr
    shown = json.loads(proc.stdout)
    info = sentictl.load().info()
    assert info.pop("cache") is None
    shown.pop("cache")
    assert info == shown
    verified = sentictl.load().info(verify=True)
    assert verified["verified"] is True and verified["problems"] == []


def test_model_choice_follows_the_environment(here, monkeypatch, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(sentictl.load().model_dir, copy)
    monkeypatch.setenv("SENTICTL_MODEL_DIR", str(copy))
    clf = sentictl.load()
    assert clf.model_dir == copy and clf.info()["chosen"]["reason"] == "set by SENTICTL_MODEL_DIR"


def test_model_problems_raise_typed_errors(here):
    with pytest.raises(sentictl.SentictlError):
        sentictl.load(here / "missing")
    with pytest.raises(sentictl.SentictlError, match="variant"):
        sentictl.load(variant="fp16")
    for bad in ({"threads": 0}, {"max_chars": 0}, {"provider": "tpu"}, {"long": "wrap"}):
        with pytest.raises(ValueError):
            sentictl.load(**bad)  # type: ignore[arg-type]


def test_classify_columns(clf):
    columns = clf.classify_columns(["Sales fell 10%.", None, float("nan"), ""])
    assert list(columns) == ["label", "score", *clf.labels, "error"]
    assert columns["error"] == [None, "empty", "empty", "empty"]
    (r,) = clf.classify(["Sales fell 10%."])
    assert (columns["label"][0], columns["score"][0]) == (r.label, r.score)
    assert [columns[label][0] for label in clf.labels] == list(r.scores.values())
    assert all(columns[label][1:] == [None] * 3 for label in clf.labels)


def test_pickle_round_trip(clf):
    again = pickle.loads(pickle.dumps(clf))
    assert isinstance(again, sentictl.Classifier)
    assert (again.fingerprint, again.name, again.threads, again.variant) == (clf.fingerprint, clf.name, 1, clf.variant)
    assert again.classify(TEXTS) == clf.classify(TEXTS)
    # Once per process: the next task carrying the same classifier reuses the loaded model.
    assert pickle.loads(pickle.dumps(clf)) is again
    # The bundled model travels by name (its path differs between installs), and stays so.
    assert pickle.loads(pickle.dumps(again)) is again


def test_a_reopened_classifier_that_was_closed_is_not_reused(tmp_path):
    with sentictl.load(threads=1, cache=tmp_path / "c.sqlite") as clf:
        shipped = pickle.dumps(clf)
    with pickle.loads(shipped) as first:
        first.classify(["Profit rose."])
    second = pickle.loads(shipped)
    assert second is not first and second.classify(["Profit rose."])[0].cache_hit


def test_unpickling_refuses_a_folder_that_holds_another_model(tmp_path):
    folder = tmp_path / "model"
    shutil.copytree(sentictl.load().model_dir, folder)
    with sentictl.load(folder, threads=1, cache=tmp_path / "c.sqlite") as clf:
        shipped = pickle.dumps(clf)
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["source"]["revision"] = "another-revision"
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(sentictl.ModelMismatch, match="another model") as caught:
        pickle.loads(shipped)
    assert isinstance(caught.value, sentictl.SentictlError)


def test_a_spawn_pool_of_two_gives_the_answers_of_one_process(clf):
    texts = headlines(2000)
    chunks = [texts[i : i + 250] for i in range(0, len(texts), 250)]
    with cf.ProcessPoolExecutor(2, mp_context=mp.get_context("spawn")) as pool:
        pooled = [r for part in pool.map(sentictl.Classifier.classify, [clf] * len(chunks), chunks) for r in part]
    assert len(pooled) == 2000 and pooled == clf.classify(texts)


def _python(code: str, *flags: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *flags, "-c", code], cwd=cwd, env=sentictl_env(), capture_output=True, timeout=120
    )


def test_import_and_load_pull_in_no_heavy_stack(here):
    proc = _python(
        "import sentictl; clf = sentictl.load(); clf.classify(['Profit rose.']); clf.info()",
        "-X",
        "importtime",
        cwd=here,
    )
    assert proc.returncode == 0, proc.stderr
    imported = {
        line.split("|")[-1].strip().split(".")[0]
        for line in proc.stderr.decode().splitlines()
        if line.startswith("import time:")
    }
    assert "onnxruntime" in imported  # the report is real
    assert not imported & set(HEAVY)
    proc = _python(
        "import sys, sentictl; print(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('onnxruntime', 'numpy', 'tokenizers')))",
        cwd=here,
    )
    assert proc.stdout.strip() == b"[]"  # `import sentictl` alone loads no engine


def test_loading_and_classifying_print_nothing(here, tmp_path):
    # The bundled model (whose CLI notice suggests `sentictl export`), an unavailable provider, a
    # cache that cannot be created: the CLI would say each on stderr; a library says nothing.
    (tmp_path / "file").write_text("")
    unusable = str(tmp_path / "file" / "cache.sqlite")
    code = (
        "import sentictl, onnxruntime as ort\n"
        "cuda = 'CUDAExecutionProvider' in ort.get_available_providers()\n"
        f"clf = sentictl.load(provider='cpu' if cuda else 'cuda', cache={unusable!r})\n"
        "print(len(clf.classify(['Profit rose.', ''])))\n"
    )
    proc = _python(code, cwd=here)
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, b"2\n", b"")
    # The notices went to the `sentictl` logger, for a program that configures logging.
    logged = _python(
        "import logging\nlogging.basicConfig(format='%(name)s %(levelname)s %(message)s')\n" + code, cwd=here
    )
    assert logged.returncode == 0 and b"sentictl WARNING the result cache" in logged.stderr, logged.stderr


def test_the_cli_still_says_its_notices(here, tmp_path):
    # The notices route to logging only inside the API: the CLI's stderr lines are unchanged.
    (tmp_path / "file").write_text("")
    proc = run_sentictl("score", "--cache", str(tmp_path / "file" / "c.sqlite"), input="Profit rose.\n", cwd=here)
    assert proc.returncode == 0
    err = proc.stderr.decode()
    assert "sentictl: using the bundled" in err and "sentictl: the result cache" in err
