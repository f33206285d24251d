"""`sentictl serve` as a text-embeddings-inference (TEI) server: TEI's request forms, answers, error
types and flags over real HTTP, ``huggingface_hub.InferenceClient``, and schemathesis driven by TEI's
own published OpenAPI document (tests/tei/openapi.json, see tests/tei/NOTICE.md)."""

from __future__ import annotations

import math
import sqlite3
from pathlib import Path

import pytest

from conftest import sentictl_env
from test_serve import Server

TEI_OPENAPI = Path(__file__).parent / "tei" / "openapi.json"
LABELS = {"positive", "negative", "neutral"}
ERROR_TYPES = {"Unhealthy", "Backend", "Overloaded", "Validation", "Tokenizer", "Empty"}
LONG = " ".join(["profit"] * 200) + " but losses widened sharply"  # over the tiny model's 128 tokens


@pytest.fixture(scope="module")
def cache_file(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("tei-cache") / "cache.sqlite"


@pytest.fixture(scope="module")
def tei(tiny_model_dir, cache_file):
    """A server on the fp32 variant (its logits match PyTorch's), with a batch limit of 8."""
    s = Server(
        [
            "--model-dir",
            str(tiny_model_dir),
            "--variant",
            "fp32",
            "--cache",
            str(cache_file),
            "--max-client-batch-size",
            "8",
        ]
    ).wait_healthy()
    yield s
    code, err = s.stop()
    assert code == 0, err


def _post(server: Server, path: str, body) -> tuple[int, object]:
    r = server.client.post(path, json=body)
    assert r.headers["content-type"] == "application/json", r.headers
    return r.status_code, r.json()


def _scores(predictions: list[dict]) -> dict[str, float]:
    return {p["label"]: p["score"] for p in predictions}


def _softmax(scores: dict[str, float]) -> dict[str, float]:
    total = sum(math.exp(v) for v in scores.values())
    return {k: math.exp(v) / total for k, v in scores.items()}


def _entries(cache_file: Path) -> int:
    conn = sqlite3.connect(cache_file)
    try:
        return conn.execute('SELECT COUNT(*) FROM "results"').fetchone()[0]
    finally:
        conn.close()


# ------------------------------------------------------------------------------ request forms
def test_teis_input_forms_give_teis_answer_shapes(tei):
    status, single = _post(tei, "/predict", {"inputs": "Shares jumped after the results."})
    assert status == 200 and {p["label"] for p in single} == LABELS
    assert [p["score"] for p in single] == sorted((p["score"] for p in single), reverse=True)
    assert math.isclose(sum(p["score"] for p in single), 1.0, abs_tol=1e-4)
    # A flat list of one text is that text; of two, one sentence pair (one answer, not two).
    assert _post(tei, "/predict", {"inputs": ["Shares jumped after the results."]}) == (200, single)
    status, pair = _post(tei, "/predict", {"inputs": ["Shares jumped.", "Losses widened."]})
    assert status == 200 and isinstance(pair[0], dict) and {p["label"] for p in pair} == LABELS
    # A batch is a list of lists, answered as a list of lists in input order.
    status, batch = _post(
        tei,
        "/predict",
        {"inputs": [["Shares jumped after the results."], ["Shares jumped.", "Losses widened."], ["Losses widened."]]},
    )
    assert status == 200 and len(batch) == 3 and all(isinstance(b, list) and len(b) == 3 for b in batch)
    assert _scores(batch[0]) == _scores(single) and _scores(batch[1]) == _scores(pair)
    assert _scores(batch[1]) != _scores(batch[2])  # the pair is not its second text alone
    # TEI answers the same at POST / and /invocations (SageMaker), and ignores fields it does not know.
    for path in ("/", "/invocations"):
        body = {"inputs": "Shares jumped after the results.", "parameters": {"top_k": 1}}
        assert _post(tei, path, body) == (200, single)


def test_a_flat_list_of_three_texts_is_refused_with_the_batch_form(tei):
    status, body = _post(tei, "/predict", {"inputs": ["Shares jumped.", "Losses widened.", "Guidance cut."]})
    assert status == 422 and body["error_type"] == "Validation"
    assert '[["first text"], ["second text"]' in body["error"] and "pair" in body["error"]
    status, body = _post(tei, "/predict", {"inputs": [["a"], ["b", "c", "d"]]})
    assert status == 422 and body["error"].startswith("inputs[1]: ")
    for bad in (3, [3], [["a"], "b"], ["a", ["b"]], {"text": "a"}):
        status, body = _post(tei, "/predict", {"inputs": bad})
        assert status == 422 and body["error_type"] == "Validation", bad
        assert "a pair of strings [string, string]" in body["error"], body  # TEI's own words


def test_raw_scores_are_the_logits(tei, tiny_model_dir, cache_file):
    text = "The bank raised its dividend."
    _, probs = _post(tei, "/predict", {"inputs": text})
    _, raw = _post(tei, "/predict", {"inputs": text, "raw_scores": True})
    assert [p["score"] for p in raw] == sorted((p["score"] for p in raw), reverse=True)
    assert not math.isclose(sum(math.exp(p["score"]) for p in raw), 1.0, abs_tol=1e-3)  # not log-probabilities
    for label, p in _softmax(_scores(raw)).items():
        assert math.isclose(p, _scores(probs)[label], abs_tol=1e-5)

    # A result cached without logits (by an older sentictl) is inferred again, not answered without them.
    from sentictl.engine.cache import ResultCache
    from sentictl.engine.model import load

    namespace = load(str(tiny_model_dir), quiet=True, variant="fp32").cache_namespace
    old = "An entry written before logits were kept."
    cache = ResultCache(cache_file)
    try:
        cache.put_many(
            namespace,
            [
                (
                    old,
                    {
                        "text": old,
                        "label": "neutral",
                        "score": 1.0,
                        "model": "old",
                        "scores": {"positive": 0.0, "negative": 0.0, "neutral": 1.0},
                    },
                )
            ],
        )
    finally:
        cache.close()
    assert _scores(_post(tei, "/predict", {"inputs": old})[1]) == {"neutral": 1.0, "positive": 0.0, "negative": 0.0}
    status, fresh = _post(tei, "/predict", {"inputs": old, "raw_scores": True})
    assert status == 200 and {p["label"] for p in fresh} == LABELS and _scores(fresh) != {"neutral": 1.0}


def test_pairs_and_truncation_sides_are_encoded_as_the_tokenizer_and_pytorch_do(tei, tiny_checkpoint):
    """Pairs ([CLS] a [SEP] b [SEP], second segment's type ids), longest-first truncation and the
    left side: the raw scores equal the PyTorch checkpoint's logits on transformers' encoding."""
    torch = pytest.importorskip("torch")
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model = AutoModelForSequenceClassification.from_pretrained(tiny_checkpoint).eval()
    cases = [
        ({"inputs": ["Shares jumped.", "Losses widened."]}, ("Shares jumped.", "Losses widened."), "right"),
        ({"inputs": [LONG, "Guidance was cut."]}, (LONG, "Guidance was cut."), "right"),
        ({"inputs": [LONG, LONG + " again"]}, (LONG, LONG + " again"), "right"),
        ({"inputs": LONG, "truncation_direction": "Left"}, (LONG,), "left"),
        ({"inputs": [LONG, "Guidance was cut."], "truncation_direction": "left"}, (LONG, "Guidance was cut."), "left"),
        ({"inputs": LONG}, (LONG,), "right"),
    ]
    for body, texts, side in cases:
        tokenizer = AutoTokenizer.from_pretrained(tiny_checkpoint, truncation_side=side)
        encoded = tokenizer(*texts, truncation="longest_first", max_length=128, return_tensors="pt")
        with torch.no_grad():
            logits = model(**encoded).logits[0].tolist()
        expected = {model.config.id2label[i]: v for i, v in enumerate(logits)}
        status, raw = _post(tei, "/predict", {**body, "raw_scores": True})
        assert status == 200, raw
        for label, value in _scores(raw).items():
            assert math.isclose(value, expected[label], abs_tol=1e-3), (body, _scores(raw), expected)
    # Cutting the start or the end of a long text gives different answers.
    left = _post(tei, "/predict", {"inputs": LONG, "truncation_direction": "Left", "raw_scores": True})[1]
    right = _post(tei, "/predict", {"inputs": LONG, "truncation_direction": "Right", "raw_scores": True})[1]
    assert _scores(left) != _scores(right)


def test_pairs_and_left_cut_texts_are_cached_in_their_own_key_space(tei, cache_file):
    first, second = "Dividend raised.", "Outlook cut."
    looks_like_a_pair = f'["{first}","{second}"]'  # the text a pair's key is made of, sent as one text
    before = _entries(cache_file)
    hits = tei.metrics()["sentictl_cache_hits_total"]
    as_text = _post(tei, "/predict", {"inputs": looks_like_a_pair})[1]
    as_pair = _post(tei, "/predict", {"inputs": [first, second]})[1]
    as_left = _post(tei, "/predict", {"inputs": looks_like_a_pair, "truncation_direction": "Left"})[1]
    assert _entries(cache_file) == before + 3
    assert _scores(as_text) != _scores(as_pair)
    # Each is answered from its own entry the second time, and /sentiment shares the plain text's.
    assert _post(tei, "/predict", {"inputs": [first, second]})[1] == as_pair
    assert _post(tei, "/predict", {"inputs": looks_like_a_pair, "truncation_direction": "Left"})[1] == as_left
    demo = tei.client.post("/sentiment", json={"text": looks_like_a_pair}).json()
    assert demo["metadata"]["cache_hit"] is True and demo["scores"] == _scores(as_text)
    assert _entries(cache_file) == before + 3
    assert tei.metrics()["sentictl_cache_hits_total"] == hits + 3


def test_truncate_per_request_with_auto_truncate_on_by_default(tei):
    assert _post(tei, "/predict", {"inputs": LONG})[0] == 200
    assert _post(tei, "/predict", {"inputs": LONG, "truncate": True})[0] == 200
    assert _post(tei, "/predict", {"inputs": LONG, "truncate": None})[0] == 200
    for body in (
        {"inputs": LONG, "truncate": False},
        {"inputs": [["fine"], [LONG]], "truncate": False},
        {"inputs": ["fine", LONG], "truncate": False},
    ):
        status, error = _post(tei, "/predict", body)
        # TEI refuses an input over the model's limit it may not cut with 422 Validation.
        assert (status, error["error_type"], error["reason"]) == (422, "Validation", "too_many_tokens"), body
        assert "128" in error["error"] and "truncate" in error["error"]
    assert _post(tei, "/predict", {"inputs": "short enough", "truncate": False})[0] == 200


# ------------------------------------------------------------------------------ the other TEI routes
def test_health_routes(tei):
    for path in ("/health", "/", "/ping"):
        r = tei.client.get(path)
        assert r.status_code == 200, path
        assert tei.client.head(path).status_code == 200


def test_info_has_teis_fields_with_the_real_values(tei, tiny_checkpoint, tiny_model_dir):
    info = tei.client.get("/info").json()
    assert info["model_id"] == info["served_model_name"] == tiny_checkpoint.name  # a name, never a path
    assert info["model_dtype"] == "float32" and info["model_sha"] is None
    assert info["model_type"] == {
        "classifier": {
            "id2label": {"0": "positive", "1": "negative", "2": "neutral"},
            "label2id": {"positive": 0, "negative": 1, "neutral": 2},
        }
    }
    assert (info["max_input_length"], info["max_client_batch_size"], info["auto_truncate"]) == (128, 8, True)
    assert info["max_batch_tokens"] == 8192 and info["run_tokens"] == 1024
    assert info["max_concurrent_requests"] >= 1 and info["tokenization_workers"] >= 1
    assert info["max_batch_requests"] >= 1 and info["version"]
    assert info["model_dir"] == tiny_model_dir.name and info["variant"] == "fp32"  # sentictl's own, kept


def test_tokenize_and_decode(tei):
    text = "Héllo profit"
    status, [tokens] = _post(tei, "/tokenize", {"inputs": text})
    assert status == 200
    assert tokens[0] == {"id": tokens[0]["id"], "text": "[CLS]", "special": True, "start": None, "stop": None}
    assert tokens[-1]["text"] == "[SEP]" and tokens[-1]["special"] is True
    raw = text.encode()
    for t in tokens[1:-1]:
        assert t["special"] is False and raw[t["start"] : t["stop"]].decode() == t["text"]  # byte offsets, as TEI
    assert [t["text"] for t in tokens if t["text"] in ("é", "profit")] == ["é", "profit"]
    assert next(t for t in tokens if t["text"] == "profit")["start"] == len("Héllo ".encode())
    status, plain = _post(tei, "/tokenize", {"inputs": [text, " "], "add_special_tokens": False})
    assert status == 200 and plain[0] == tokens[1:-1] and plain[1] == []

    ids = [t["id"] for t in tokens]
    assert _post(tei, "/decode", {"ids": ids}) == (200, ["hello profit"])  # lower-cased, accents stripped
    status, texts = _post(tei, "/decode", {"ids": [ids, ids[1:2]], "skip_special_tokens": False})
    assert status == 200 and texts[0].startswith("[CLS] ") and texts[0].endswith(" [SEP]") and len(texts) == 2

    for path, body, status, error_type in (
        ("/tokenize", {"inputs": ""}, 400, "Empty"),
        ("/tokenize", {"inputs": []}, 400, "Empty"),
        ("/tokenize", {"inputs": ["x"] * 9}, 413, "Validation"),
        ("/tokenize", {"inputs": "x", "prompt_name": "query"}, 422, "Validation"),
        ("/tokenize", {"inputs": 5}, 422, "Validation"),
        ("/decode", {"ids": []}, 400, "Empty"),
        ("/decode", {"ids": [[1], []]}, 400, "Empty"),
        ("/decode", {"ids": [[1]] * 9}, 413, "Validation"),
        ("/decode", {"ids": [-1]}, 422, "Tokenizer"),  # no token has it: the tokenizer's error, as TEI
        ("/decode", {"ids": "1 2"}, 422, "Validation"),
    ):
        got, error = _post(tei, path, body)
        assert (got, error["error_type"]) == (status, error_type), (path, body, error)


def test_decode_refuses_ids_outside_the_vocabulary_with_teis_tokenizer_error(tei, tiny_model_dir):
    """An id that names no token is 422 Tokenizer with TEI's error body, not 200 [""] (issue 17, item 4)."""
    from tokenizers import Tokenizer

    size = Tokenizer.from_file(str(tiny_model_dir / "tokenizer.json")).get_vocab_size(with_added_tokens=True)
    status, [last] = _post(tei, "/decode", {"ids": [size - 1], "skip_special_tokens": False})
    assert status == 200 and last  # the vocabulary's last id is a token
    for body, where, bad in (
        ({"ids": [size]}, "ids[0]", size),
        ({"ids": [101, size + 1000]}, "ids[1]", size + 1000),
        ({"ids": [[101, 102], [101, size]]}, "ids[1][1]", size),
        ({"ids": [-1]}, "ids[0]", -1),
        ({"ids": [[5], [7, -3]], "skip_special_tokens": False}, "ids[1][1]", -3),
        ({"ids": [2**32]}, "ids[0]", 2**32),
        ({"ids": [2**63]}, "ids[0]", 2**63),
    ):
        status, error = _post(tei, "/decode", body)
        assert status == 422 and set(error) == {"error", "error_type"}, (body, error)
        assert error["error_type"] == "Tokenizer", (body, error)
        assert error["error"].startswith(f"{where}: {bad} is not a token id") and f"0 to {size - 1}" in error["error"]


def test_every_error_names_one_of_teis_types(tei):
    """The same table on every route, /sentiment included (Empty 400, Validation 422/413)."""
    cases = [
        ("POST", "/sentiment", {"content": b""}, 400, "Empty"),
        ("POST", "/sentiment", {"json": {"texts": ["x"] * 9}}, 413, "Validation"),
        ("POST", "/sentiment", {"json": {"text": 5}}, 422, "Validation"),
        ("POST", "/predict", {"json": {"inputs": " "}}, 400, "Empty"),
        ("POST", "/predict", {"json": {"inputs": [["x"]] * 9}}, 413, "Validation"),
        ("POST", "/predict", {"content": b"{", "headers": {"content-type": "application/json"}}, 400, "Validation"),
        ("POST", "/", {"json": {"inputs": ""}}, 400, "Empty"),
        ("POST", "/invocations", {"json": {}}, 422, "Validation"),
        ("GET", "/nope", {}, 404, "Validation"),
        ("PUT", "/", {}, 405, "Validation"),
    ]
    for method, path, kwargs, status, error_type in cases:
        r = tei.client.request(method, path, **kwargs)
        body = r.json()
        assert (r.status_code, body["error_type"]) == (status, error_type), (method, path, body)
        assert body["error_type"] in ERROR_TYPES and body["error"]


# ------------------------------------------------------------------------------ TEI's clients and document
@pytest.fixture
def hub_online(monkeypatch):
    """The tests run offline (HF_HUB_OFFLINE=1), which huggingface_hub's client also applies to a local
    base_url, and bakes into the HTTP session it caches per thread: lift it, with fresh sessions, for
    one test (loopback only), and drop the online session afterwards."""
    import huggingface_hub
    from huggingface_hub.utils import reset_sessions

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    reset_sessions()
    yield
    reset_sessions()


def test_huggingface_hub_inference_client(tei, hub_online):
    from huggingface_hub import InferenceClient

    text = "Quarterly revenue beat analysts' estimates."
    best = _post(tei, "/predict", {"inputs": text})[1][0]
    answer = InferenceClient(base_url=tei.url).text_classification(text)
    # The client reads TEI's answer (a flat list for one text) as TEI's clients do: the best label first.
    first = answer[0] if isinstance(answer, list) else answer
    assert (first.label, first.score) == (best["label"], pytest.approx(best["score"]))


def test_teis_published_openapi_finds_no_failure(tei):
    """schemathesis, driven by TEI's own docs/openapi.json: no server error, documented statuses,
    content types and response bodies that TEI's schemas accept (invalid requests: no server error,
    documented statuses). Deterministic: derandomized, a fixed number of examples per operation."""
    import schemathesis
    from schemathesis import GenerationMode

    schema = schemathesis.openapi.from_path(str(TEI_OPENAPI))
    wanted = {"POST /predict", "GET /info", "GET /health", "POST /tokenize", "POST /decode"}
    operations = [op for op in (result.ok() for result in schema.get_all_operations()) if op.label in wanted]
    assert {op.label for op in operations} == wanted
    failures: list[tuple] = []
    statuses: dict[str, set[int]] = {}
    for op in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE) if op.body else (GenerationMode.POSITIVE,):
            _drive(tei, op, mode, failures, statuses.setdefault(op.label, set()))
    assert failures == []
    assert 200 in statuses["POST /predict"] and 200 in statuses["POST /tokenize"] and statuses["GET /info"] == {200}


def _drive(server: Server, op, mode, failures: list[tuple], statuses: set[int], examples: int = 25) -> None:
    """Send one operation's generated requests and gather every check that fails."""
    from hypothesis import HealthCheck, given, settings
    from schemathesis import GenerationMode
    from schemathesis.checks import not_a_server_error
    from schemathesis.core.failures import FailureGroup
    from schemathesis.specs.openapi.checks import (
        content_type_conformance,
        response_schema_conformance,
        status_code_conformance,
    )

    checks = [not_a_server_error, status_code_conformance]
    if mode == GenerationMode.POSITIVE:
        checks += [content_type_conformance, response_schema_conformance]

    @given(case=op.as_strategy(generation_mode=mode))
    @settings(
        max_examples=examples, deadline=None, derandomize=True, database=None, suppress_health_check=list(HealthCheck)
    )
    def check(case):
        response = case.call(base_url=server.url)
        statuses.add(response.status_code)
        try:
            case.validate_response(response, checks=checks)
        except (AssertionError, FailureGroup) as exc:  # gather them all rather than stop at the first
            failures.append(
                (op.label, mode.value, case.body, response.status_code, response.text[:200], str(exc)[:300])
            )

    check()


# ------------------------------------------------------------------------------ flags
def test_teis_flag_names_and_what_info_reports(tiny_model_dir):
    s = Server(
        [
            "--model-dir",
            str(tiny_model_dir),
            "--no-cache",
            "--hostname",
            "127.0.0.1",
            "--no-auto-truncate",
            "--max-concurrent-requests",
            "7",
            "--max-client-batch-size",
            "3",
            "--payload-limit",
            "4096",
            "--max-batch-tokens",
            "2048",
            "--api-key",
            "s3cret",
        ]
    ).wait_healthy()
    try:
        auth = {"authorization": "Bearer s3cret"}
        assert s.client.post("/predict", json={"inputs": "x"}).status_code == 401
        info = s.client.get("/info", headers=auth).json()
        assert (
            info["auto_truncate"],
            info["max_concurrent_requests"],
            info["max_client_batch_size"],
            info["max_body_bytes"],
            info["max_batch_tokens"],
        ) == (False, 7, 3, 4096, 2048)
        # --no-auto-truncate: a request without "truncate" has a long input refused, one with it cut.
        r = s.client.post("/predict", json={"inputs": LONG}, headers=auth)
        assert r.status_code == 422 and r.json()["reason"] == "too_many_tokens"
        assert s.client.post("/predict", json={"inputs": LONG, "truncate": True}, headers=auth).status_code == 200
        assert s.client.post("/sentiment", content=LONG.encode(), headers=auth).json()["metadata"]["truncated"] is True
        r = s.client.post("/predict", json={"inputs": [["a"]] * 4}, headers=auth)
        assert r.status_code == 413 and "--max-client-batch-size" in r.json()["error"]
        assert s.client.post("/predict", content=b"x" * 5000, headers=auth).status_code == 413
    finally:
        code, err = s.stop()
    assert code == 0, err


def test_max_batch_tokens_variable_and_the_api_key_through_the_client(tiny_model_dir, hub_online):
    from huggingface_hub import InferenceClient

    s = Server(
        ["--model-dir", str(tiny_model_dir), "--no-cache"],
        env=sentictl_env(SENTICTL_SERVE_MAX_BATCH_TOKENS="4096", SENTICTL_TOKEN="k3y"),
    ).wait_healthy()
    try:
        assert s.client.get("/info", headers={"authorization": "Bearer k3y"}).json()["max_batch_tokens"] == 4096
        answer = InferenceClient(base_url=s.url, api_key="k3y").text_classification("Profit rose.")
        first = answer[0] if isinstance(answer, list) else answer
        assert first.label in LABELS
    finally:
        code, err = s.stop()
    assert code == 0, err
    assert "deprecated" not in err
