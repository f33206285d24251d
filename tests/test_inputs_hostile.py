"""Hostile input files through `sentictl score`, each door (txt, jsonl, csv), as real subprocesses.

Every row is decided, not accidental: a file with a UTF-16/UTF-32 byte-order mark is read as the
text it holds (never scored as "\\x00S\\x00h..." garbage), a UTF-8 mark is dropped, a line of
NULs or control characters is `empty`, CRLF is a line ending, and a CSV that ends inside a quoted
field is a `bad_csv` record with the line the field starts on.
"""

from __future__ import annotations

import orjson
import pytest

from conftest import run_sentictl

A, B = "Profit rose sharply", "Shares fell after the warning"


def utf(text: str, encoding: str) -> bytes:
    """The text in an encoding, with its byte-order mark first."""
    return ("\ufeff" + text).encode(encoding)


def jsonl(*texts: str) -> str:
    return "".join(orjson.dumps({"text": t}).decode() + "\n" for t in texts)


def csv_text(*texts: str) -> str:
    return "id,text\n" + "".join(f'{i},"{t}"\n' for i, t in enumerate(texts, 1))


# (case, file name, bytes, texts scored in order, reports [(line, reason)], empty lines counted)
CASES = [
    # -- txt --------------------------------------------------------------------------------
    ("txt utf-16-le bom", "in.txt", utf(f"{A}\n{B}\n", "utf-16-le"), [A, B], [], 0),
    ("txt utf-16-be bom", "in.txt", utf(f"{A}\n{B}\n", "utf-16-be"), [A, B], [], 0),
    ("txt utf-32-le bom", "in.txt", utf(f"{A}\n{B}\n", "utf-32-le"), [A, B], [], 0),
    ("txt utf-32-be bom", "in.txt", utf(f"{A}\n{B}\n", "utf-32-be"), [A, B], [], 0),
    ("txt utf-16 crlf", "in.txt", utf(f"{A}\r\n{B}\r\n", "utf-16-le"), [A, B], [], 0),
    ("txt utf-16 without bom", "in.txt", f"{A}\n{B}\n".encode("utf-16-le"), [A, B], [], 0),
    (
        "txt utf-16 broken line",
        "in.txt",
        utf(f"{A}\n", "utf-16-le") + b"\x00\xd8" + f"\n{B}\n".encode("utf-16-le"),
        [A, B],
        [(2, "invalid_encoding")],
        0,
    ),
    ("txt utf-8 bom", "in.txt", utf(f"{A}\n{B}\n", "utf-8"), [A, B], [], 0),
    ("txt crlf", "in.txt", f"{A}\r\n{B}\r\n".encode(), [A, B], [], 0),
    ("txt nul lines", "in.txt", f"{A}\n".encode() + b"\x00\x00\x00\n" + f"{B}\n".encode(), [A, B], [], 1),
    ("txt starts with a nul line", "in.txt", b"\x00\x00\x00\n" + f"{A}\n".encode(), [A], [], 1),
    (
        "txt control chars only",
        "in.txt",
        f"{A}\n".encode() + b"\x01\x02\x1b\x7f\t\x0b\n" + f"{B}\n".encode(),
        [A, B],
        [],
        1,
    ),
    (
        "txt stray ff fe, not utf-16",
        "in.txt",
        b"\xff\xfe not utf-8\n" + f"{A}\n".encode(),
        [A],
        [(1, "invalid_utf8")],
        0,
    ),
    # -- jsonl ------------------------------------------------------------------------------
    ("jsonl utf-16-le bom", "in.jsonl", utf(jsonl(A, B), "utf-16-le"), [A, B], [], 0),
    ("jsonl utf-32-be bom", "in.jsonl", utf(jsonl(A, B), "utf-32-be"), [A, B], [], 0),
    ("jsonl utf-8 bom", "in.jsonl", utf(jsonl(A, B), "utf-8"), [A, B], [], 0),
    ("jsonl crlf", "in.jsonl", jsonl(A, B).replace("\n", "\r\n").encode(), [A, B], [], 0),
    ("jsonl nul line", "in.jsonl", jsonl(A).encode() + b"\x00\x00\n" + jsonl(B).encode(), [A, B], [], 1),
    ("jsonl control-char text", "in.jsonl", jsonl(A, "\x00\x01\u200b", B).encode(), [A, B], [], 1),
    # -- csv --------------------------------------------------------------------------------
    ("csv utf-16-le bom", "in.csv", utf(csv_text(A, B), "utf-16-le"), [A, B], [], 0),
    ("csv utf-32-le bom", "in.csv", utf(csv_text(A, B), "utf-32-le"), [A, B], [], 0),
    ("csv utf-8 bom", "in.csv", utf(csv_text(A, B), "utf-8"), [A, B], [], 0),
    ("csv crlf", "in.csv", csv_text(A, B).replace("\n", "\r\n").encode(), [A, B], [], 0),
    ("csv nul cell", "in.csv", csv_text(A).encode() + b'2,"\x00\x00"\n' + b'3,"' + B.encode() + b'"\n', [A, B], [], 1),
    (
        "csv unterminated quote at eof",
        "in.csv",
        csv_text(A, B).encode() + b'3,"no closing quote\n4,the rest of the file\n',
        [A, B],
        [(4, "bad_csv")],
        0,
    ),
    ("csv unterminated quote, no final newline", "in.csv", csv_text(A).encode() + b'2,"open', [A], [(3, "bad_csv")], 0),
]


@pytest.fixture
def score_file(tmp_path, tiny_model_dir):
    def run(name: str, data: bytes, via_stdin: bool = False):
        path = tmp_path / name
        path.write_bytes(data)
        fmt = ["--format", name.rsplit(".", 1)[1]] if via_stdin else []
        args = ["score", "--model-dir", str(tiny_model_dir), "--no-cache", *fmt, "-" if via_stdin else str(path)]
        result = run_sentictl(*args, input=data if via_stdin else None)
        stderr = result.stderr.decode()
        assert "Traceback" not in stderr, stderr
        texts = [orjson.loads(line)["text"] for line in result.stdout.splitlines() if line.strip()]
        reports = [orjson.loads(line) for line in result.stderr.splitlines() if line.startswith(b"{")]
        assert all(r["source"] == ("-" if via_stdin else str(path)) and r["error"] for r in reports), reports
        summary = next(line for line in stderr.splitlines() if " scored, " in line)
        empty = int(summary.split(" empty skipped")[0].rsplit(", ", 1)[1]) if "empty skipped" in summary else 0
        return result.returncode, texts, reports, empty

    return run


def check(outcome, texts, reports, empty):
    code, got_texts, got_reports, got_empty = outcome
    assert got_texts == texts
    assert [(r["line"], r["reason"]) for r in got_reports] == reports
    assert got_empty == empty
    assert code == (3 if reports else 0), "3: some records were bad; 0: every record scored or blank"


@pytest.mark.parametrize("case, name, data, texts, reports, empty", CASES, ids=[c[0] for c in CASES])
def test_hostile_file(score_file, case, name, data, texts, reports, empty):
    check(score_file(name, data), texts, reports, empty)


# stdin cannot seek back over the bytes looked at to tell the encoding: the same verdicts anyway.
STDIN = (
    "txt utf-16-le bom",
    "txt utf-32-be bom",
    "txt utf-8 bom",
    "txt stray ff fe, not utf-16",
    "txt starts with a nul line",
    "jsonl utf-16-le bom",
    "csv utf-16-le bom",
    "csv unterminated quote at eof",
)


@pytest.mark.parametrize(
    "case, name, data, texts, reports, empty",
    [c for c in CASES if c[0] in STDIN],
    ids=[c[0] for c in CASES if c[0] in STDIN],
)
def test_hostile_stdin(score_file, case, name, data, texts, reports, empty):
    check(score_file(name, data, via_stdin=True), texts, reports, empty)


def test_unterminated_quote_report_names_where_the_field_starts(score_file):
    _, _, reports, _ = score_file("in.csv", csv_text(A).encode() + b'2,"open\nmore\n')
    assert reports == [
        {
            "source": reports[0]["source"],
            "line": 3,
            "reason": "bad_csv",
            "error": "bad CSV: the file ends inside the quoted field that starts on line 3",
        }
    ]


def test_a_large_utf16_file_streams_past_the_sniffed_head(score_file):
    # Over the 64 KiB looked at to confirm the encoding: the rest is decoded the same way.
    lines = [f"{A} {i}" for i in range(4000)]
    code, texts, reports, _ = score_file("big.txt", utf("\n".join(lines) + "\n", "utf-16-le"))
    assert code == 0 and reports == [] and texts == lines
