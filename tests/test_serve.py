"""`sentictl serve` as a user runs it: a real server subprocess on loopback, driven over HTTP."""

from __future__ import annotations

import asyncio
import json
import math
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from conftest import free_port, run_sentictl, sentictl_env

DEMO_TEXT = "Apple adjusted their targets downward."
DEMO_KEYS = {"label", "score", "text", "metadata", "scores"}


class Server:
    """A `sentictl serve` subprocess; stopped with SIGTERM like a process manager would."""

    def __init__(self, args: list[str], env: dict[str, str] | None = None, **popen):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "sentictl", "serve", "--port", str(self.port), *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env or sentictl_env(),
            **popen,
        )
        self.client = httpx.Client(base_url=self.url, timeout=30)

    def wait_healthy(self, timeout: float = 60.0) -> Server:
        """Bounded readiness poll on /health (200 = model loaded)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}: {self.proc.stderr.read().decode()}")
            try:
                if self.client.get("/health").status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        raise TimeoutError(f"/health did not answer 200 within {timeout} s")

    def stop(self, timeout: float = 30.0) -> tuple[int, str]:
        """SIGTERM, wait, and return (exit status, stderr)."""
        self.client.close()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            _, err = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            _, err = self.proc.communicate()
        return self.proc.returncode, err.decode(errors="replace")

    def metrics(self, headers: dict[str, str] | None = None) -> dict[str, float]:
        """The /metrics samples as {name{labels}: value}."""
        from prometheus_client.parser import text_string_to_metric_families

        text = self.client.get("/metrics", headers=headers).text
        out = {}
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                labels = ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items()))
                out[f"{s.name}{{{labels}}}" if labels else s.name] = s.value
        return out


@pytest.fixture(scope="module")
def cache_file(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("serve-cache") / "cache.sqlite"


@pytest.fixture(scope="module")
def server(tiny_model_dir, cache_file):
    """One shared server: a generous --max-wait-ms makes batch formation under concurrency certain."""
    s = Server(
        [
            "--model-dir",
            str(tiny_model_dir),
            "--cache",
            str(cache_file),
            "--max-wait-ms",
            "50",
            "--max-client-batch-size",
            "8",
        ]
    ).wait_healthy()
    yield s
    code, err = s.stop()
    assert code == 0, err


def _post_text(server: Server, text: str | bytes, **kwargs) -> httpx.Response:
    return server.client.post("/sentiment", content=text if isinstance(text, bytes) else text.encode(), **kwargs)


# ------------------------------------------------------------------------------ the demo contract
def test_demo_curl_call(server):
    """The original demo's exact call keeps working, with its response shape."""
    if shutil.which("curl"):
        out = subprocess.run(
            ["curl", "-sS", "-X", "POST", "-d", DEMO_TEXT, f"localhost:{server.port}/sentiment"],
            capture_output=True,
            timeout=30,
            check=True,
        ).stdout
        doc = json.loads(out)
    else:  # the same raw, form-encoded body curl -d sends
        doc = server.client.post(
            "/sentiment", content=DEMO_TEXT, headers={"content-type": "application/x-www-form-urlencoded"}
        ).json()
    assert set(doc) == DEMO_KEYS
    assert doc["text"] == DEMO_TEXT
    assert doc["label"] in {"positive", "negative", "neutral"}
    assert set(doc["metadata"]) == {"cache_hit"} and isinstance(doc["metadata"]["cache_hit"], bool)
    assert doc["score"] == max(doc["scores"].values())
    assert set(doc["scores"]) == {"positive", "negative", "neutral"}
    assert math.isclose(sum(doc["scores"].values()), 1.0, abs_tol=1e-4)


def test_second_identical_request_is_a_cache_hit(server):
    text = "Quarterly profit rose sharply after record sales."
    first = _post_text(server, text)
    second = _post_text(server, text)
    assert first.status_code == second.status_code == 200
    assert first.json()["metadata"]["cache_hit"] is False
    assert second.json()["metadata"]["cache_hit"] is True
    assert second.json()["scores"] == first.json()["scores"]
    # A hit never waits in the queue nor runs the model.
    assert float(second.headers["x-queue-time"]) == 0 and float(second.headers["x-inference-time"]) == 0
    for name in ("x-total-time", "x-queue-time", "x-inference-time"):
        assert float(first.headers[name]) >= 0
    assert float(first.headers["x-inference-time"]) > 0


def test_json_text_and_texts(server):
    one = server.client.post("/sentiment", json={"text": "shares fell"})
    assert one.status_code == 200 and set(one.json()) == DEMO_KEYS and one.json()["text"] == "shares fell"
    texts = ["net loss widened", "dividend raised", "net loss widened", "outlook cut"]
    many = server.client.post("/sentiment", json={"texts": texts})
    assert many.status_code == 200
    body = many.json()
    assert [r["text"] for r in body] == texts
    assert body[0]["scores"] == body[2]["scores"]
    assert all(set(r) == DEMO_KEYS for r in body)


def test_raw_body_trailing_newline_matches_the_line(server):
    a = _post_text(server, "revenue grew in the quarter\n").json()
    assert a["text"] == "revenue grew in the quarter"


# ------------------------------------------------------------------------------ /predict (TEI)
def test_predict_tei_shapes(server):
    single = server.client.post("/predict", json={"inputs": "profit beat estimates"})
    assert single.status_code == 200
    preds = single.json()
    assert [p["label"] for p in preds] and {p["label"] for p in preds} == {"positive", "negative", "neutral"}
    assert [p["score"] for p in preds] == sorted((p["score"] for p in preds), reverse=True)
    assert math.isclose(sum(p["score"] for p in preds), 1.0, abs_tol=1e-4)

    batch = server.client.post("/predict", json={"inputs": [["a deal"], ["a loss"]], "raw_scores": True})
    assert batch.status_code == 200
    lists = batch.json()
    assert len(lists) == 2 and all(len(p) == 3 for p in lists)
    # raw scores are the logits: their softmax is the probabilities.
    probs = {p["label"]: p["score"] for p in server.client.post("/predict", json={"inputs": "a deal"}).json()}
    total = sum(math.exp(p["score"]) for p in lists[0])
    for p in lists[0]:
        assert math.isclose(math.exp(p["score"]) / total, probs[p["label"]], abs_tol=1e-5)


def test_predict_long_input_is_cut_unless_truncate_false(server):
    long_text = " ".join(["profit"] * 400)  # the tiny model's limit is 128 tokens
    refused = server.client.post("/predict", json={"inputs": long_text, "truncate": False})
    assert refused.status_code == 422
    assert (refused.json()["error_type"], refused.json()["reason"]) == ("Validation", "too_many_tokens")
    assert "128" in refused.json()["error"]
    for body in (
        {"inputs": long_text},
        {"inputs": long_text, "truncate": True},
        {"inputs": long_text, "truncate": None},
    ):
        cut = server.client.post("/predict", json=body)  # --auto-truncate is on by default, as in TEI
        assert cut.status_code == 200 and len(cut.json()) == 3
    raw = _post_text(server, long_text).json()
    assert raw["metadata"]["truncated"] is True


# ------------------------------------------------------------------------------ other routes
def test_health_info_metrics_openapi(server, tiny_model_dir):
    assert server.client.get("/health").json() == {"status": "ok"}
    info = server.client.get("/info").json()
    for key in ("model_id", "variant", "provider", "fingerprint", "max_length", "version"):
        assert info[key] not in (None, "")
    # Names, not locations: /info never shows where the server keeps its files.
    assert info["max_length"] == 128 and info["model_dir"] == tiny_model_dir.name
    metrics = server.client.get("/metrics")
    assert metrics.status_code == 200 and metrics.headers["content-type"].startswith("text/plain")
    for name in (
        "sentictl_requests_total",
        "sentictl_request_duration_seconds_bucket",
        "sentictl_batch_size_bucket",
        "sentictl_queue_depth",
        "sentictl_cache_hits_total",
        "sentictl_cache_misses_total",
    ):
        assert name in metrics.text
    schema = server.client.get("/openapi.json").json()
    assert schema["openapi"].startswith("3.")
    assert {
        "/sentiment",
        "/predict",
        "/",
        "/invocations",
        "/tokenize",
        "/decode",
        "/health",
        "/ping",
        "/info",
        "/metrics",
    } <= set(schema["paths"])


def test_concurrent_requests_form_batches_and_each_caller_gets_its_own(server):
    before = server.metrics()
    n = 48
    texts = [f"company {i} reported quarterly profit of {i} million euros" for i in range(n)]

    async def fire():
        limits = httpx.Limits(max_connections=n, max_keepalive_connections=n)
        async with httpx.AsyncClient(base_url=server.url, timeout=60, limits=limits) as client:
            return await asyncio.gather(*(client.post("/sentiment", content=t.encode()) for t in texts))

    responses = asyncio.run(fire())
    assert [r.status_code for r in responses] == [200] * n
    assert [r.json()["text"] for r in responses] == texts
    assert all(r.json()["metadata"]["cache_hit"] is False for r in responses)
    after = server.metrics()
    batches = after["sentictl_batch_size_count"] - before["sentictl_batch_size_count"]
    texts_run = after["sentictl_batch_size_sum"] - before["sentictl_batch_size_sum"]
    singles = after['sentictl_batch_size_bucket{le="1.0"}'] - before['sentictl_batch_size_bucket{le="1.0"}']
    assert texts_run == n
    assert batches < n and singles < batches  # at least one batch held more than one request
    assert after["sentictl_queue_depth"] == 0


def test_cache_is_shared_with_score(server, tiny_model_dir, cache_file):
    # score first, then the server answers from the same file...
    scored = run_sentictl(
        "score",
        "--model-dir",
        str(tiny_model_dir),
        "--cache",
        str(cache_file),
        "-q",
        input="analysts expect weak guidance\n",
    )
    assert scored.returncode == 0, scored.stderr
    assert json.loads(scored.stdout)["cache_hit"] is False
    hit = _post_text(server, "analysts expect weak guidance").json()
    assert hit["metadata"]["cache_hit"] is True
    assert hit["scores"] == json.loads(scored.stdout)["scores"]
    # ...and the other way round.
    fresh = _post_text(server, "the bank cut interest rates").json()
    assert fresh["metadata"]["cache_hit"] is False
    again = run_sentictl(
        "score",
        "--model-dir",
        str(tiny_model_dir),
        "--cache",
        str(cache_file),
        "-q",
        input="the bank cut interest rates\n",
    )
    assert json.loads(again.stdout)["cache_hit"] is True


# ------------------------------------------------------------------------------ bad input
def test_bad_input_is_4xx_with_json_errors(server):
    """TEI's error types and statuses on every route: nothing to classify is Empty (400)."""
    cases = [
        (dict(content=b""), 400, "Empty"),
        (dict(content=b"  \n"), 400, "Empty"),
        (dict(content=b"\xff\xfe bad bytes"), 400, "Validation"),
        (dict(content=b'{"text": ', headers={"content-type": "application/json"}), 400, "Validation"),
        (dict(json={"text": ""}), 400, "Empty"),
        (dict(json={"texts": []}), 400, "Empty"),
        (dict(json={"texts": ["ok", ""]}), 400, "Empty"),
        (dict(json={"texts": "not a list"}), 422, "Validation"),
        (dict(json={"text": 5}), 422, "Validation"),
        (dict(json={"other": "x"}), 422, "Validation"),
        (dict(json=["x"]), 422, "Validation"),
        (dict(json={"text": "a", "texts": ["b"]}), 422, "Validation"),
    ]
    for kwargs, status, kind in cases:
        r = server.client.post("/sentiment", **kwargs)
        assert (r.status_code, r.json()["error_type"]) == (status, kind), (kwargs, r.text)
        assert r.json()["error"]
    for body, status, kind in (
        ({"inputs": []}, 400, "Empty"),
        ({"inputs": ""}, 400, "Empty"),
        ({"inputs": 3}, 422, "Validation"),
        ({"x": 1}, 422, "Validation"),
        ({"inputs": "a", "truncate": "yes"}, 422, "Validation"),
    ):
        r = server.client.post("/predict", json=body)
        assert (r.status_code, r.json()["error_type"]) == (status, kind), body
    assert (
        server.client.post("/predict", content=b"{nope", headers={"content-type": "application/json"}).status_code
        == 400
    )


def test_too_many_texts_names_the_limit(server):
    r = server.client.post("/sentiment", json={"texts": [f"t{i}" for i in range(9)]})
    assert r.status_code == 413 and "8" in r.json()["error"] and "--max-client-batch-size" in r.json()["error"]
    r = server.client.post("/predict", json={"inputs": [[f"t{i}"] for i in range(9)]})
    assert r.status_code == 413 and "8" in r.json()["error"]
    assert (r.json()["error_type"], r.json()["reason"]) == ("Validation", "too_many_inputs")


def test_body_over_limit_is_413(server):
    big = b"x" * ((1 << 20) + 1)
    r = server.client.post("/sentiment", content=big)
    assert r.status_code == 413 and (r.json()["error_type"], r.json()["reason"]) == ("Validation", "body_too_large")

    def chunks():  # no Content-Length: the limit must hold while streaming too
        for _ in range(20):
            yield b"y" * 65536

    r = server.client.post("/sentiment", content=chunks())
    assert r.status_code == 413


def test_wrong_method_and_unknown_route(server):
    r = server.client.get("/sentiment")
    assert r.status_code == 405 and (r.json()["error_type"], r.json()["reason"]) == ("Validation", "method_not_allowed")
    assert server.client.put("/predict", json={}).status_code == 405
    assert server.client.post("/health").status_code == 405
    r = server.client.get("/nope")
    assert r.status_code == 404 and (r.json()["error_type"], r.json()["reason"]) == ("Validation", "not_found")
    counts = server.metrics()
    assert counts['sentictl_requests_total{route="/sentiment",status="405"}'] >= 1
    assert counts['sentictl_requests_total{route="other",status="404"}'] >= 1


def test_refused_records_carry_their_reason_code(server):
    """The engine's record rules over HTTP: each refusal names its reason beside error and error_type."""
    json_ct = {"content-type": "application/json"}
    cases = [
        ("/sentiment", dict(content=b"   \n"), 400, "Empty", "empty"),
        ("/sentiment", dict(content=b"\x00"), 400, "Empty", "empty"),
        ("/sentiment", dict(json={"text": " \t "}), 400, "Empty", "empty"),
        ("/sentiment", dict(json={"text": "\x00\x00"}), 400, "Empty", "empty"),
        ("/sentiment", dict(json={"texts": ["fine", "\ufeff\n"]}), 400, "Empty", "empty"),
        ("/predict", dict(json={"inputs": [["fine"], [""]]}), 400, "Empty", "empty"),
        ("/predict", dict(json={"inputs": ["", " "]}), 400, "Empty", "empty"),  # a pair is empty when both are
        ("/sentiment", dict(content=b"\xff\xfe bad bytes"), 400, "Validation", "invalid_utf8"),
        ("/sentiment", dict(content=b'{"text": "\xff"}', headers=json_ct), 400, "Validation", "invalid_utf8"),
        ("/sentiment", dict(content=b'{"text": ', headers=json_ct), 400, "Validation", "bad_json"),
        ("/predict", dict(content=b"{nope", headers=json_ct), 400, "Validation", "bad_json"),
        ("/sentiment", dict(json={"texts": ["ok", 5]}), 422, "Validation", "not_string"),
        ("/sentiment", dict(json={"text": None}), 422, "Validation", "not_string"),
        ("/predict", dict(json={"inputs": ["ok", {"a": 1}]}), 422, "Validation", "not_string"),
        ("/predict", dict(json={"inputs": 3}), 422, "Validation", "not_string"),
    ]
    for path, kwargs, status, error_type, reason in cases:
        r = server.client.post(path, **kwargs)
        body = r.json()
        got = (r.status_code, body.get("error_type"), body.get("reason"))
        assert got == (status, error_type, reason), (path, kwargs, r.text)
        assert body["error"]
    where = server.client.post("/sentiment", json={"texts": ["fine", "fine too", " "]}).json()["error"]
    assert where.startswith("texts[2]: ")


def test_one_cache_entry_whatever_the_door_adds(server):
    """A trailing CRLF and a leading BOM are the same text: the one cache entry answers all of them."""
    text = "the board approved a special dividend"
    first = _post_text(server, text).json()
    assert first["metadata"]["cache_hit"] is False
    crlf = _post_text(server, text + "\r\n").json()
    bom = server.client.post("/sentiment", json={"text": "\ufeff" + text}).json()
    listed = server.client.post("/sentiment", json={"texts": [text + "\n", "\ufeff" + text + "\r"]}).json()
    for r in (crlf, bom, *listed):
        assert r["text"] == text and r["metadata"]["cache_hit"] is True and r["scores"] == first["scores"]


def test_openapi_is_generated_from_the_request_models(server):
    """The request bodies in /openapi.json are the pydantic models that validate them, limits included."""
    schema = server.client.get("/openapi.json").json()
    components = schema["components"]["schemas"]

    def resolve(node):
        return components[node["$ref"].rsplit("/", 1)[1]] if "$ref" in node else node

    sentiment = schema["paths"]["/sentiment"]["post"]["requestBody"]["content"]
    assert sentiment["text/plain"]["schema"]["type"] == "string"
    shapes = [resolve(s) for s in sentiment["application/json"]["schema"]["anyOf"]]
    assert {s["title"] for s in shapes} == {"SentimentText", "SentimentTexts"}
    texts = next(s for s in shapes if "texts" in s["properties"])["properties"]["texts"]
    assert texts["type"] == "array" and texts["items"] == {"type": "string"}
    assert (texts["minItems"], texts["maxItems"]) == (1, 8)  # --max-client-batch-size 8
    assert all(s["additionalProperties"] is False for s in shapes)

    for path in ("/predict", "/", "/invocations"):
        predict = resolve(schema["paths"][path]["post"]["requestBody"]["content"]["application/json"]["schema"])
        assert predict["required"] == ["inputs"]
        text, flat, batch = predict["properties"]["inputs"]["oneOf"]  # TEI's PredictInput: text, pair, batch
        assert text["type"] == "string"
        assert (flat["type"], flat["minItems"], flat["maxItems"], flat["items"]) == ("array", 1, 2, {"type": "string"})
        assert batch["maxItems"] == 8 and (batch["items"]["minItems"], batch["items"]["maxItems"]) == (1, 2)
        assert predict["properties"]["raw_scores"]["type"] == "boolean"
        assert {"type": "boolean"} in predict["properties"]["truncate"]["anyOf"]
        assert set(predict["properties"]["truncation_direction"]["enum"]) >= {"Left", "Right"}

    error = components["ErrorResponse"]
    assert set(error["required"]) == {"error", "error_type"} and "reason" in error["properties"]
    assert set(error["properties"]["error_type"]["enum"]) == {
        "Unhealthy",
        "Backend",
        "Overloaded",
        "Validation",
        "Tokenizer",
        "Empty",
    }
    responses = schema["paths"]["/sentiment"]["post"]["responses"]
    for status in ("400", "413", "422", "424", "429", "503"):
        schema_ref = responses[status]["content"]["application/json"]["schema"]
        assert schema_ref == {"$ref": "#/components/schemas/ErrorResponse"}
    assert {"400", "413", "422"} <= set(schema["paths"]["/tokenize"]["post"]["responses"])
    assert "security" not in schema["paths"]["/sentiment"]["post"]  # no --token: no auth documented
    # The docs UIs stay off; the document itself is the contract.
    assert server.client.get("/docs").status_code == 404 and server.client.get("/redoc").status_code == 404


def test_http_errors_have_one_status_each():
    """Every HTTP error type gets its status from the one table; the framework's own errors keep the shape."""
    from fastapi.exceptions import RequestValidationError

    from sentictl import errors
    from sentictl.serve.responses import invalid

    kinds = {cls for cls in vars(errors).values() if isinstance(cls, type) and issubclass(cls, errors.HttpError)}
    assert {errors.http_status(cls) for cls in kinds} == {400, 401, 404, 405, 408, 413, 422, 424, 429, 500, 503}
    # Every error type is one of TEI's, and TEI's types keep TEI's statuses.
    assert {cls.error_type for cls in kinds} == set(errors.ERROR_TYPES)
    tei = {
        errors.EmptyInput: 400,
        errors.ValidationFailed: 422,
        errors.TokenizerFailed: 422,
        errors.Overloaded: 429,
        errors.BackendError: 424,
        errors.Unhealthy: 503,
    }
    assert {cls: errors.http_status(cls) for cls in tei} == tei
    assert errors.InputTooLarge("x").status == 413 and errors.InputTooLarge("x").error_type == "Validation"
    assert errors.error_for_status(404) is errors.NotFound and errors.error_for_status(418) is errors.BadRequest
    assert errors.error_for_status(400) is errors.BadRequest

    # FastAPI's own validation errors (body locations, union tags) become the same errors.
    fastapi_errors = RequestValidationError(
        [
            {
                "type": "string_type",
                "loc": ("body", "inputs", "texts", 2),
                "msg": "Input should be a valid string",
                "input": 1,
            }
        ]
    ).errors()
    error = invalid(fastapi_errors)
    assert (error.status, error.body()) == (
        422,
        {"error": "inputs[2]: Input should be a valid string", "error_type": "Validation", "reason": "not_string"},
    )
    bad_json = invalid(
        [
            {
                "type": "json_invalid",
                "loc": ("body", 3),
                "msg": "JSON decode error",
                "input": {},
                "ctx": {"error": "Expecting value"},
            }
        ]
    )
    assert (bad_json.status, bad_json.reason) == (400, "bad_json")


# ------------------------------------------------------------------------------ property-based
def test_openapi_property_based_no_5xx(server):
    """schemathesis drives every operation of /openapi.json with valid and invalid data: never a 5xx."""
    import schemathesis
    from hypothesis import HealthCheck, given, settings
    from schemathesis import GenerationMode
    from schemathesis.checks import not_a_server_error
    from schemathesis.specs.openapi.checks import (
        content_type_conformance,
        response_schema_conformance,
        status_code_conformance,
    )

    schema = schemathesis.openapi.from_url(f"{server.url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {op.label for op in operations} >= {
        "POST /sentiment",
        "POST /predict",
        "POST /",
        "POST /invocations",
        "POST /tokenize",
        "POST /decode",
        "GET /health",
        "GET /",
        "GET /ping",
        "GET /info",
        "GET /metrics",
    }
    conformance = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
    statuses: list[int] = []
    for op in operations:
        # An operation without a body or parameters has no invalid form to generate.
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE) if op.body else (GenerationMode.POSITIVE,):
            positive = mode == GenerationMode.POSITIVE

            @given(case=op.as_strategy(generation_mode=mode))
            @settings(
                max_examples=8, deadline=None, derandomize=True, database=None, suppress_health_check=list(HealthCheck)
            )
            def check(case):
                response = case.call(base_url=server.url)
                statuses.append(response.status_code)
                assert response.status_code < 500, (case.method, case.path, case.body, response.text)
                if positive:  # noqa: B023 - check() runs within this iteration
                    case.validate_response(response, checks=conformance)

            check()
    assert statuses and max(statuses) < 500


# ------------------------------------------------------------------------------ dedicated servers
def test_token_required_when_set(tiny_model_dir, tmp_path):
    s = Server(
        ["--model-dir", str(tiny_model_dir), "--no-cache"], env=sentictl_env(SENTICTL_TOKEN="s3cret")
    ).wait_healthy()
    try:
        good = {"authorization": "Bearer s3cret"}
        for method, path, kwargs in (
            ("POST", "/sentiment", {"content": b"shares rose"}),
            ("POST", "/predict", {"json": {"inputs": "shares rose"}}),
            ("POST", "/", {"json": {"inputs": "shares rose"}}),
            ("POST", "/invocations", {"json": {"inputs": "shares rose"}}),
            ("POST", "/tokenize", {"json": {"inputs": "shares rose"}}),
            ("POST", "/decode", {"json": {"ids": [5, 6]}}),
            ("GET", "/info", {}),
            ("GET", "/metrics", {}),
        ):
            assert s.client.request(method, path, **kwargs).status_code == 401, path
            bad = s.client.request(method, path, headers={"authorization": "Bearer wrong"}, **kwargs)
            assert bad.status_code == 401
            assert (bad.json()["error_type"], bad.json()["reason"]) == ("Validation", "unauthorized")
            assert s.client.request(method, path, headers=good, **kwargs).status_code == 200, path
            assert bad.headers["www-authenticate"] == "Bearer"
        for path in ("/health", "/", "/ping"):
            assert s.client.get(path).status_code == 200  # probes need no token
        doc = s.client.get("/openapi.json").json()  # nor does the API's description, which documents the token
        assert doc["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
        assert doc["paths"]["/sentiment"]["post"]["security"] == [{"HTTPBearer": []}]
        assert "security" not in doc["paths"]["/health"]["get"]
    finally:
        code, err = s.stop()
    assert code == 0, err


def test_text_over_max_chars_is_413_too_long(tiny_model_dir):
    s = Server(["--model-dir", str(tiny_model_dir), "--no-cache", "--max-chars", "12"]).wait_healthy()
    try:
        long_text = "shares rose sharply"  # 19 characters
        for path, kwargs in (
            ("/sentiment", {"content": long_text.encode()}),
            ("/sentiment", {"json": {"text": long_text}}),
            ("/sentiment", {"json": {"texts": ["fine", long_text]}}),
            ("/predict", {"json": {"inputs": long_text}}),
            ("/predict", {"json": {"inputs": [["fine"], [long_text]], "truncate": True}}),
            ("/predict", {"json": {"inputs": ["fine", long_text]}}),
        ):  # a pair
            r = s.client.post(path, **kwargs)
            body = r.json()
            got = (r.status_code, body["error_type"], body["reason"])
            assert got == (413, "Validation", "too_long"), (path, kwargs)
            assert "12" in body["error"] and "--max-chars" in body["error"]
        # The limit counts the normalised text: a line ending or BOM does not push it over.
        assert s.client.post("/sentiment", content="\ufeffshares rose\r\n".encode()).status_code == 200
        assert s.client.get("/info").json()["max_chars"] == 12
    finally:
        code, err = s.stop()
    assert code == 0, err


def test_a_lone_request_is_admitted_whatever_its_size(tiny_model_dir):
    """429 means the server is full, never that one request is larger than a limit a retry cannot change."""
    s = Server(["--model-dir", str(tiny_model_dir), "--no-cache", "--max-concurrent-requests", "1"]).wait_healthy()
    try:
        r = s.client.post("/sentiment", json={"texts": ["text a", "text b", "text c"]})
        assert r.status_code == 200 and len(r.json()) == 3
        r = s.client.post("/predict", json={"inputs": [["text d"], ["text e", "its pair"]]})
        assert r.status_code == 200 and len(r.json()) == 2
        assert s.client.get("/info").json()["max_concurrent_requests"] == 1
    finally:
        code, err = s.stop()
    assert code == 0, err


def test_sigterm_drains_in_flight_requests_and_exits_0(tiny_model_dir):
    s = Server(["--model-dir", str(tiny_model_dir), "--no-cache", "--max-wait-ms", "1500"]).wait_healthy()
    result = {}

    def request():
        with httpx.Client(timeout=30) as c:
            result["response"] = c.post(f"{s.url}/sentiment", content=b"merger talks collapsed")

    t = threading.Thread(target=request)
    t.start()
    deadline = time.monotonic() + 20
    while s.metrics().get("sentictl_queue_depth", 0) < 1:  # the request is waiting for its batch
        assert time.monotonic() < deadline, "the request never reached the queue"
        time.sleep(0.02)
    s.proc.send_signal(signal.SIGTERM)
    t.join(30)
    code, err = s.stop()
    assert result["response"].status_code == 200
    assert result["response"].json()["text"] == "merger talks collapsed"
    assert code == 0, err
    assert "Traceback" not in err


def test_health_is_503_until_the_model_is_loaded(tiny_model_dir):
    """In-process uvicorn with a loader we hold back: /health and /sentiment answer 503, then 200."""
    import uvicorn

    from sentictl.engine.model import load
    from sentictl.serve import ServeSettings, create_app

    gate = threading.Event()

    def slow_load():
        gate.wait(30)
        return load(str(tiny_model_dir), quiet=True)

    port = free_port()
    app = create_app(ServeSettings(port=port), slow_load, None)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error", lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 20
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            while True:
                try:
                    health = client.get("/health")
                    break
                except httpx.TransportError:
                    assert time.monotonic() < deadline
                    time.sleep(0.05)
            assert health.status_code == 503
            assert health.json()["error_type"] == "Unhealthy" and health.json()["status"] == "loading"
            early = client.post("/sentiment", content=b"shares rose")
            assert early.status_code == 503 and early.json()["error_type"] == "Unhealthy"
            gate.set()
            while client.get("/health").status_code != 200:
                assert time.monotonic() < deadline
                time.sleep(0.05)
            assert client.post("/sentiment", content=b"shares rose").status_code == 200
    finally:
        gate.set()
        server.should_exit = True
        thread.join(15)


def test_bad_model_dir_fails_before_listening(tmp_path):
    r = run_sentictl("serve", "--model-dir", str(tmp_path / "missing"), "--port", str(free_port()))
    assert r.returncode == 1
    assert b"Error: no model in" in r.stderr and b"Traceback" not in r.stderr


def test_port_in_use_is_a_clean_error(tiny_model_dir):
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        r = run_sentictl("serve", "--model-dir", str(tiny_model_dir), "--no-cache", "--port", str(port))
    assert r.returncode == 1 and b"Traceback" not in r.stderr
    assert b"address already in use" in r.stderr.lower() or b"could not listen" in r.stderr


def test_help_shows_env_fallbacks():
    r = run_sentictl("serve", "--help")
    assert r.returncode == 0
    out = r.stdout.decode()
    for env in (
        "SENTICTL_PORT",
        "SENTICTL_HOST",
        "SENTICTL_MAX_WAIT_MS",
        "SENTICTL_SERVE_MAX_BATCH_TOKENS",
        "SENTICTL_RUN_TOKENS",
        "SENTICTL_AUTO_TRUNCATE",
        "SENTICTL_MAX_CLIENT_BATCH_SIZE",
        "SENTICTL_MAX_CHARS",
        "SENTICTL_MAX_BODY_BYTES",
        "SENTICTL_TOKEN",
        "SENTICTL_PUBLISH",
        "SENTICTL_KAFKA_BOOTSTRAP",
        "SENTICTL_KAFKA_SASL_PASSWORD",
        "SENTICTL_KAFKA_SSL_CAFILE",
        "SENTICTL_THREADS",
        "SENTICTL_PROVIDER",
        "SENTICTL_MODEL_DIR",
    ):
        assert env in out, env
    assert "curl -X POST" in out
    for route in (
        "POST /sentiment",
        "POST /predict",
        "POST /tokenize",
        "POST /decode",
        "GET  /health",
        "/openapi.json",
        "/invocations",
        "/ping",
    ):
        assert route in out, route


def test_publish_needs_bootstrap(tiny_model_dir):
    r = run_sentictl("serve", "--model-dir", str(tiny_model_dir), "--publish", "{label}-news")
    assert r.returncode == 1 and b"--bootstrap" in r.stderr and b"Traceback" not in r.stderr
    r = run_sentictl(
        "serve", "--model-dir", str(tiny_model_dir), "--publish", "{sentiment}-news", "--bootstrap", "127.0.0.1:1"
    )
    assert r.returncode == 1 and b"{label}" in r.stderr


def test_publish_takes_the_shared_kafka_settings(tiny_model_dir):
    # The shared validation (the same as bridge's) runs before the port opens.
    r = run_sentictl(
        "serve",
        "--model-dir",
        str(tiny_model_dir),
        "--publish",
        "{label}-news",
        env=sentictl_env(SENTICTL_KAFKA_BOOTSTRAP="127.0.0.1:1", SENTICTL_KAFKA_SASL_MECHANISM="PLAIN"),
    )
    assert r.returncode == 1 and b"SASL" in r.stderr and b"Traceback" not in r.stderr


def test_length_groups_keep_every_index_and_cut_padding():
    from sentictl.engine import Engine
    from sentictl.engine.batching import length_groups

    lengths = [40, 12, 63, 15, 33, 34, 20, 50, 18, 36, 28, 61, 16, 35, 44, 22, 30, 17, 58, 25, 12, 12]

    def cost(groups, overhead):
        return sum(overhead + len(g) * max(lengths[i] for i in g) for g in groups)

    groups = length_groups(lengths, overhead=64)
    assert sorted(i for g in groups for i in g) == list(range(len(lengths)))
    assert 1 < len(groups) < len(lengths)
    assert cost(groups, 64) < cost([list(range(len(lengths)))], 64)  # better than one padded batch
    assert cost(groups, 64) <= cost([[i] for i in range(len(lengths))], 64)  # and than no batching
    assert len(length_groups(lengths, overhead=10**6)) == 1  # runs so dear that one batch wins
    # Runs free: no padding at all, every group holds a single length.
    assert all(len({lengths[i] for i in g}) == 1 for g in length_groups(lengths, overhead=0))

    from sentictl.engine.model import Encoded
    from sentictl.engine.records import Input

    class Echo:
        cache_namespace = "ns"
        provider = "cpu"
        static_shape = None
        long = "truncate"
        calls: list = []

        def run(self, encoded):
            self.calls.append([e.input.text for e in encoded])
            return [{"text": e.input.text} for e in encoded]

    # The engine runs an arrival-order batch in those groups and answers in input order.
    texts = [f"t{i}" for i in range(len(lengths))]
    echo = Echo()
    encoded = [Encoded(Input(t), [[0] * n], [[0] * n], [1.0], False) for t, n in zip(texts, lengths)]
    out = Engine(echo).infer(encoded, arrival_order=True)
    assert [r["text"] for r in out] == texts
    assert len(echo.calls) == len(length_groups(lengths))
    assert sorted(t for call in echo.calls for t in call) == sorted(texts)
