"""TSV files and JSON arrays, read as users' tools write them; and the exit-status table."""

from __future__ import annotations

import orjson
import pytest

from sentictl.exitcodes import BAD_RECORDS, CHECK_FAILED, USAGE


def lines(out: bytes) -> list[dict]:
    return [orjson.loads(line) for line in out.splitlines() if line.strip()]


def reports(err: bytes) -> list[dict]:
    return [orjson.loads(line) for line in err.splitlines() if line.startswith(b"{")]


@pytest.fixture
def score(sentictl, tiny_model_dir):
    def run(*args, input=None, env=None):
        return sentictl("score", "--model-dir", str(tiny_model_dir), "--no-cache", *args, input=input, env=env)

    return run


def test_tsv_by_extension_reads_the_named_column(score, tmp_path):
    src = tmp_path / "export.tsv"
    # A comma inside a TSV field is text, not a separator; a quoted field may hold a tab.
    src.write_text('id\ttext\tsource\n1\tShares jumped, analysts said\twire\n2\t"Losses\twidened"\tblog\n')
    run = score(str(src), "--column", "text")
    assert run.returncode == 0, run.stderr
    assert [r["text"] for r in lines(run.stdout)] == ["Shares jumped, analysts said", "Losses\twidened"]


def test_tsv_from_stdin_needs_format_and_a_hint_names_it(score):
    data = "text\tid\nProfit rose\t1\n"
    run = score("--format", "tsv", input=data)
    assert run.returncode == 0, run.stderr
    assert [r["text"] for r in lines(run.stdout)] == ["Profit rose"]
    wrong = score("--format", "csv", input=data)
    assert wrong.returncode == 1
    assert b"--format tsv" in wrong.stderr and b"Traceback" not in wrong.stderr


def test_tsv_bad_row_is_reported_and_the_rest_scored(score, tmp_path):
    src = tmp_path / "x.tsv"
    src.write_bytes(b"text\tn\nfine\t1\nbad \xff row\t2\n\t3\nalso fine\t4\n")
    run = score(str(src))
    assert run.returncode == BAD_RECORDS
    assert [r["text"] for r in lines(run.stdout)] == ["fine", "also fine"]
    assert [(r["line"], r["reason"]) for r in reports(run.stderr)] == [(3, "invalid_utf8")]
    assert b"1 empty skipped" in run.stderr  # blank cells are counted, as blank lines are


def test_json_array_of_strings_and_of_objects(score, tmp_path):
    strings = tmp_path / "a.json"
    strings.write_text('  [\n  "Shares jumped",\n  "Losses widened"\n]\n')
    run = score(str(strings))
    assert run.returncode == 0, run.stderr
    assert [r["text"] for r in lines(run.stdout)] == ["Shares jumped", "Losses widened"]

    objects = tmp_path / "b.json"
    objects.write_bytes(
        orjson.dumps(
            [{"item": {"title": "Profit rose"}}, {"item": {"title": "Costs fell"}}], option=orjson.OPT_INDENT_2
        )
    )
    run = score(str(objects), "--field", "item.title")
    assert run.returncode == 0, run.stderr
    assert [r["text"] for r in lines(run.stdout)] == ["Profit rose", "Costs fell"]


def test_json_array_bad_items_are_reported_by_item_number(score, tmp_path):
    src = tmp_path / "mixed.json"
    src.write_text('["first", 5, {"text": "third"}, {"title": "no text"}, {"text": 7}, "", null, "last"]')
    run = score(str(src))
    assert run.returncode == BAD_RECORDS
    assert [r["text"] for r in lines(run.stdout)] == ["first", "third", "last"]
    assert [(r["line"], r["reason"]) for r in reports(run.stderr)] == [
        (2, "not_string"),
        (4, "missing_field"),
        (5, "not_string"),
        (7, "not_string"),
    ]
    assert b"1 empty skipped" in run.stderr


def test_broken_json_array_keeps_what_came_before(score, tmp_path):
    src = tmp_path / "cut.json"
    src.write_text('["one", "two", "thr')
    run = score(str(src))
    assert run.returncode == BAD_RECORDS
    assert [r["text"] for r in lines(run.stdout)] == ["one", "two"]
    (report,) = reports(run.stderr)
    assert report["reason"] == "bad_json" and report["line"] == 3 and "after item 2" in report["error"]
    assert b"Traceback" not in run.stderr


def test_json_file_holding_json_lines_still_works(score, tmp_path):
    src = tmp_path / "lines.json"
    src.write_text('{"text": "Shares jumped"}\n{"text": "Losses widened"}\n')
    run = score(str(src))
    assert run.returncode == 0, run.stderr
    assert [r["text"] for r in lines(run.stdout)] == ["Shares jumped", "Losses widened"]


def test_json_array_in_utf16_and_from_stdin(score, tmp_path):
    src = tmp_path / "u16.json"
    src.write_bytes('["Shares jumped", "Ümsatz stieg"]'.encode("utf-16"))
    run = score(str(src))
    assert run.returncode == 0, run.stderr
    assert [r["text"] for r in lines(run.stdout)] == ["Shares jumped", "Ümsatz stieg"]
    run = score("--format", "json", input='["from stdin"]')
    assert [r["text"] for r in lines(run.stdout)] == ["from stdin"]


def test_same_text_same_result_whatever_the_format(score, tmp_path):
    text = "Revenue grew 12% as margins widened"
    (tmp_path / "t.txt").write_text(text + "\n")
    (tmp_path / "t.tsv").write_text(f"text\n{text}\n")
    (tmp_path / "t.json").write_text(orjson.dumps([text]).decode())
    outs = [lines(score(str(tmp_path / name)).stdout)[0] for name in ("t.txt", "t.tsv", "t.json")]
    assert outs[0] == outs[1] == outs[2]


def test_output_format_from_the_environment(score):
    run = score(input="Shares jumped\n", env={"SENTICTL_OUTPUT": "csv"})
    assert run.returncode == 0, run.stderr
    assert run.stdout.splitlines()[0].startswith(b"text,label,score")


def test_exit_status_table(score, sentictl, tiny_model_dir, tmp_path):
    """0 done, 1 could not start, 2 usage, 3 some bad records, 4 a check failed: never confused."""
    assert score(input="fine\n").returncode == 0
    assert score("--model-dir", str(tmp_path / "missing"), input="fine\n").returncode == 1
    assert score("--no-such-option").returncode == USAGE
    assert score(input=b"fine\n\xff\n").returncode == BAD_RECORDS
    data = tmp_path / "d.csv"
    data.write_text("label,text\nneutral,Flat day\npositive,Shares jumped\n")
    gate = sentictl(
        "eval",
        "--model-dir",
        str(tiny_model_dir),
        "--data",
        str(data),
        "--variants",
        "fp32",
        "--min-accuracy",
        "1.0",
        "-q",
    )
    assert gate.returncode in (0, CHECK_FAILED) and b"Traceback" not in gate.stderr
    if b"gate missed" in gate.stderr:
        assert gate.returncode == CHECK_FAILED
    for command in ("score", "eval", "bench", "serve", "bridge", "export", "info"):
        help_text = sentictl(command, "--help").stdout.decode()
        assert "Exit status" in help_text, command
