"""A model that fails on some texts (issue 18, item 4): the failing record is found and reported as
``inference_error``, the rest of its batch is scored; nothing crashes, nothing loops.

The model is a real export whose tokenizer knows words past the embedding table (the checkpoint's
vocabulary was grown after training), as happens when a tokenizer from another checkpoint is put
beside a graph: ONNX Runtime's Gather fails on exactly the texts holding those words.
"""

from __future__ import annotations

import subprocess
import sys

import orjson
import pytest

from conftest import sentictl_env

POISON = "zebrafinch"


@pytest.fixture(scope="module")
def poisoned_model(tmp_path_factory):
    from transformers import BertTokenizerFast

    from sentictl.export import run_export
    from support.checkpoints import _WORDS, build_checkpoint, write_vocab

    ckpt = build_checkpoint(tmp_path_factory.mktemp("ckpt") / "grown-vocab")
    # The same vocabulary plus one word: its id is one past the embedding table's last row.
    write_vocab(ckpt / "vocab.txt", [*_WORDS, POISON])
    tok = BertTokenizerFast(vocab_file=str(ckpt / "vocab.txt"), do_lower_case=True)
    tok.model_max_length = 128
    tok.save_pretrained(ckpt)
    out = tmp_path_factory.mktemp("models") / "grown-vocab"
    run_export(str(ckpt), out=out, variants="int8", quiet=True)
    return out


def test_score_reports_the_poison_record_and_scores_the_rest(poisoned_model):
    texts = [f"profit rose {i}" for i in range(20)]
    texts[13] = f"the {POISON} rose"
    run = subprocess.run(
        [sys.executable, "-m", "sentictl", "score", "--no-cache", "--model-dir", str(poisoned_model)],
        input="\n".join(texts).encode() + b"\n",
        capture_output=True,
        env=sentictl_env(),
        timeout=300,
    )
    assert b"Traceback" not in run.stderr, run.stderr.decode()
    assert run.returncode == 3
    scored = [orjson.loads(line)["text"] for line in run.stdout.splitlines()]
    assert scored == texts[:13] + texts[14:]
    (bad,) = [orjson.loads(line) for line in run.stderr.splitlines() if line.startswith(b"{")]
    assert bad["reason"] == "inference_error" and bad["line"] == 14
    assert b"19 texts scored" in run.stderr and b"1 bad record" in run.stderr


def test_engine_classify_each_isolates_every_poison_text(poisoned_model):
    from sentictl.engine import BadRecord, Engine
    from sentictl.engine.model import Model

    engine = Engine(Model(poisoned_model, threads=1))
    texts = ["profit rose", f"{POISON} fell", "losses widened", f"a {POISON}", "profit rose"]
    got = engine.classify_each(texts)
    assert [isinstance(g, BadRecord) for g in got] == [False, True, False, True, False]
    assert got[0] == got[4] and got[2]["text"] == "losses widened"
    assert {g.reason for g in got if isinstance(g, BadRecord)} == {"inference_error"}


def test_bridge_sends_the_poison_record_to_the_dlq_and_delivers_the_rest(kafka_bootstrap, poisoned_model, topic_name):
    from conftest import run_sentictl
    from test_bridge import Reader, bridge_args, committed, create_topic, done_counts, produce

    src, out, dlq, group = topic_name("in"), topic_name("out"), topic_name("dlq"), topic_name("g")
    create_topic(kafka_bootstrap, src, 1)
    values = [f"profit rose {i}".encode() for i in range(20)]
    values[7] = f"the {POISON} rose".encode()
    ends = produce(kafka_bootstrap, src, values, partition_of=lambda i: 0)

    run = run_sentictl(
        *bridge_args(
            kafka_bootstrap,
            poisoned_model,
            src,
            out,
            group,
            "--dlq",
            dlq,
            "--batch-size",
            "20",
            "--max-messages",
            "20",
            "--no-cache",
        ),
        timeout=120,
    )
    stderr = run.stderr.decode()
    assert run.returncode == 0, stderr
    assert "Traceback" not in stderr
    counts = done_counts(stderr)
    assert counts["produced"] == 19 and counts["dlq"] == 1 and counts["bad"] == 1

    reader = Reader(kafka_bootstrap)
    good = reader.read([out], expect=19)
    (dead,) = reader.read([dlq], expect=1)
    reader.close()
    assert sorted(orjson.loads(r.value)["text"] for r in good) == sorted(
        v.decode() for i, v in enumerate(values) if i != 7
    )
    headers = dict(dead.headers)
    assert headers["sentictl-error"] == b"inference_error" and headers["sentictl-source-offset"] == b"7"
    assert dead.value == values[7]
    assert committed(kafka_bootstrap, group, src) == ends


def test_the_grown_vocabulary_is_said_once_at_load(poisoned_model):
    run = subprocess.run(
        [sys.executable, "-m", "sentictl", "score", "--no-cache", "--model-dir", str(poisoned_model)],
        input=b"profit rose\n",
        capture_output=True,
        env=sentictl_env(),
        timeout=300,
    )
    assert run.returncode == 0
    assert run.stderr.decode().count("more than the model's embedding table holds") == 1


@pytest.fixture
def foreign_copy(tiny_model_dir, tmp_path):
    """The tiny export as an optimum folder (no manifest.json), files writable."""
    import shutil

    folder = tmp_path / "optimum"
    shutil.copytree(tiny_model_dir, folder)
    for path in folder.iterdir():
        path.chmod(0o644)
    (folder / "manifest.json").unlink()
    return folder


def test_a_pad_id_past_the_embedding_table_is_a_start_up_error(foreign_copy):
    cfg = orjson.loads((foreign_copy / "config.json").read_bytes())
    (foreign_copy / "config.json").write_bytes(orjson.dumps({**cfg, "pad_token_id": 5000}))
    for door in (["score", "--no-cache"], ["serve", "--no-cache", "--port", "0"]):
        run = subprocess.run(
            [sys.executable, "-m", "sentictl", *door, "--model-dir", str(foreign_copy)],
            input=b"profit rose\nlosses widened sharply\n",
            capture_output=True,
            env=sentictl_env(),
            timeout=120,
        )
        err = run.stderr.decode()
        assert run.returncode == 1 and "Traceback" not in err, err
        (line,) = [x for x in err.splitlines() if x.startswith("Error:")]
        assert "fails on a padded batch of two texts" in line and "pad token id 5000" in line


def test_a_folder_that_declares_no_max_length_gets_the_one_its_graph_runs(foreign_copy):
    cfg = orjson.loads((foreign_copy / "config.json").read_bytes())
    del cfg["max_position_embeddings"]
    (foreign_copy / "config.json").write_bytes(orjson.dumps(cfg))
    tok_cfg = orjson.loads((foreign_copy / "tokenizer_config.json").read_bytes())
    tok_cfg.pop("model_max_length", None)
    (foreign_copy / "tokenizer_config.json").write_bytes(orjson.dumps(tok_cfg))
    long_text = " ".join(["profit rose sharply"] * 100)  # 300 words: past the graph's 128 positions
    run = subprocess.run(
        [sys.executable, "-m", "sentictl", "score", "--no-cache", "--model-dir", str(foreign_copy)],
        input=f"{long_text}\nlosses widened\n".encode(),
        capture_output=True,
        env=sentictl_env(),
        timeout=120,
    )
    err = run.stderr.decode()
    assert run.returncode == 0, err
    assert "fails on 512 tokens: using 128" in err
    first, second = [orjson.loads(line) for line in run.stdout.splitlines()]
    assert first["truncated"] is True and second["text"] == "losses widened"
