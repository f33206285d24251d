"""`sentictl score` as a user runs it: stdin, files, formats, bad input, exit codes, cache."""

from __future__ import annotations

import csv
import io

import orjson
import pytest
from click.testing import CliRunner

from sentictl.cli import cli


def lines(out: bytes) -> list[dict]:
    return [orjson.loads(line) for line in out.splitlines() if line.strip()]


@pytest.fixture
def score(sentictl, tiny_model_dir, cache_path):
    def run(*args, input=None, cache=True):
        extra = ["--cache", str(cache_path)] if cache else ["--no-cache"]
        return sentictl("score", "--model-dir", str(tiny_model_dir), *extra, *args, input=input)

    return run


def test_stdin_to_json_lines(score):
    run = score(input="Profit fell sharply and the company cut its outlook.\n")
    assert run.returncode == 0, run.stderr
    (result,) = lines(run.stdout)
    assert result["text"] == "Profit fell sharply and the company cut its outlook."
    assert result["label"] in ("positive", "negative", "neutral")
    assert set(result["scores"]) == {"positive", "negative", "neutral"}
    assert result["model"] == "tiny:int8" and result["cache_hit"] is False
    assert b"1 text scored" in run.stderr


def test_second_run_hits_the_cache(score):
    score(input="a\nb\n")
    run = score(input="b\na\nc\n")
    assert [r["cache_hit"] for r in lines(run.stdout)] == [True, True, False]
    assert b"2 cache hits" in run.stderr


def test_no_cache_neither_reads_nor_writes(score, cache_path):
    score(input="a\n", cache=False)
    assert not cache_path.exists()
    run = score(input="a\n")
    assert lines(run.stdout)[0]["cache_hit"] is False


def test_files_in_order_with_formats(score, tmp_path):
    txt = tmp_path / "in.txt"
    txt.write_text("first\nsecond\n")
    jsonl = tmp_path / "in.jsonl"
    jsonl.write_text('{"id": 1, "news": {"title": "third"}}\n{"id": 2, "news": {"title": "fourth"}}\n')
    run = score(str(txt), str(jsonl), "--field", "news.title")
    assert run.returncode == 0, run.stderr
    assert [r["text"] for r in lines(run.stdout)] == ["first", "second", "third", "fourth"]


def test_csv_column_in_and_csv_out(score, tmp_path):
    src = tmp_path / "in.csv"
    src.write_text('id,headline\n1,"Profit fell, sharply"\n2,"Shares ""surged"""\n')
    run = score(str(src), "--column", "headline", "--output", "csv")
    assert run.returncode == 0, run.stderr
    rows = list(csv.DictReader(io.StringIO(run.stdout.decode())))
    assert [r["text"] for r in rows] == ["Profit fell, sharply", 'Shares "surged"']
    assert set(rows[0]) >= {"label", "score", "positive", "negative", "neutral", "cache_hit"}


def test_missing_csv_column_is_a_clear_error(score, tmp_path):
    src = tmp_path / "in.csv"
    src.write_text("id,headline\n1,x\n")
    run = score(str(src))
    assert run.returncode == 1
    assert b"no column 'text'" in run.stderr and b"Traceback" not in run.stderr


def test_bad_records_reported_with_line_numbers_and_the_rest_scored(score):
    data = b"good one\n\n\xff\xfe broken\ngood two\n"
    run = score(input=data)
    assert run.returncode == 3
    assert [r["text"] for r in lines(run.stdout)] == ["good one", "good two"]
    errors = [orjson.loads(line) for line in run.stderr.splitlines() if line.startswith(b"{")]
    assert errors == [{"source": "-", "line": 3, "reason": "invalid_utf8", "error": "invalid UTF-8"}]
    assert b"1 empty skipped" in run.stderr and b"1 bad record" in run.stderr and b"1 bad records" not in run.stderr


def test_jsonl_bad_json_and_missing_field(score, tmp_path):
    src = tmp_path / "in.jsonl"
    src.write_bytes(b'{"text": "ok"}\n{not json\n{"title": "no text"}\n{"text": 5}\n{"text": "also ok"}\n')
    errors = tmp_path / "errors.jsonl"
    run = score(str(src), "--errors", str(errors))
    assert run.returncode == 3
    assert [r["text"] for r in lines(run.stdout)] == ["ok", "also ok"]
    reported = [orjson.loads(line) for line in errors.read_bytes().splitlines()]
    assert [(e["line"], e["error"].split(":")[0]) for e in reported] == [
        (2, "bad JSON"),
        (3, "missing field 'text'"),
        (4, "field 'text' is not a string"),
    ]
    assert not any(line.startswith(b"{") for line in run.stderr.splitlines())


def test_csv_invalid_utf8_row(score, tmp_path):
    src = tmp_path / "in.csv"
    src.write_bytes(b"text\nfine\nbad \xff row\nalso fine\n")
    run = score(str(src))
    assert run.returncode == 3
    assert [r["text"] for r in lines(run.stdout)] == ["fine", "also fine"]
    assert b'"line":3' in run.stderr


def test_text_over_max_chars_is_a_bad_record(score):
    run = score("--max-chars", "20", input="short\n" + "x" * 50 + "\n")
    assert run.returncode == 3
    assert [r["text"] for r in lines(run.stdout)] == ["short"]
    assert b"over the limit of 20" in run.stderr


def test_long_text_is_truncated_and_flagged(score):
    run = score(input=" ".join(["profit"] * 500) + "\n")
    assert run.returncode == 0
    assert lines(run.stdout)[0]["truncated"] is True


def test_missing_input_file_exits_1(score, tmp_path):
    run = score(str(tmp_path / "nope.txt"))
    assert run.returncode in (1, 2)
    assert b"Traceback" not in run.stderr


def test_missing_model_dir_exits_1_with_advice(sentictl, tmp_path):
    run = sentictl("score", "--model-dir", str(tmp_path / "none"), input="x\n")
    assert run.returncode == 1
    assert b"run `sentictl export` first" in run.stderr and b"Traceback" not in run.stderr


def test_env_fallback_for_model_dir_and_cache(sentictl, tiny_model_dir, cache_path):
    from conftest import sentictl_env

    env = sentictl_env(SENTICTL_MODEL_DIR=str(tiny_model_dir), SENTICTL_CACHE=str(cache_path))
    run = sentictl("score", input="Profit fell.\n", env=env)
    assert run.returncode == 0, run.stderr
    assert cache_path.exists()


def test_every_command_has_help():
    runner = CliRunner()

    def walk(group, path):
        for name, command in group.commands.items():
            result = runner.invoke(cli, [*path, name, "--help"], catch_exceptions=False)
            assert result.exit_code == 0, (path, name)
            assert command.help and len(command.help) > 20, name
            if hasattr(command, "commands"):
                walk(command, [*path, name])

    walk(cli, [])
    score_help = runner.invoke(cli, ["score", "--help"]).output
    for needle in ("Exit status", "SENTICTL_MODEL_DIR", "--errors", "Example"):
        assert needle in score_help
