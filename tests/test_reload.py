"""Zero-downtime model swap (issue 18): serve and bridge reload their model folder on SIGHUP (serve also
on POST /admin/reload with --api-key), load and verify it beside the running model, and switch
between batches; a folder that fails leaves the running model serving.

Synchronisation is on observable things only: /info's fingerprint, /metrics counters, the
x-model-fingerprint header of each answer, Kafka offsets and record counts.
"""

from __future__ import annotations

import shutil
import signal
import threading
import time
from pathlib import Path

import httpx
import pytest

from conftest import run_sentictl
from sentictl.engine import model as engine
from test_serve import Server

TEXTS = [f"Quarter {i}: revenue {'rose' if i % 2 else 'fell'} {i} percent after the merger." for i in range(24)]


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, Path]:
    from support.checkpoints import build_checkpoint

    return {
        name: build_checkpoint(tmp_path_factory.mktemp(f"ckpt-{name}") / "tiny", seed=seed)
        for name, seed in (("a", 0), ("b", 1))
    }


@pytest.fixture(scope="module")
def exports(checkpoints, tmp_path_factory) -> dict[str, Path]:
    from sentictl.export import run_export

    out = {}
    for name, ckpt in checkpoints.items():
        out[name] = tmp_path_factory.mktemp(f"export-{name}") / "tiny"
        run_export(str(ckpt), out=out[name], variants="int8", quiet=True)
    return out


def _reference(model_dir: Path) -> tuple[str, dict[str, dict[str, float]]]:
    m = engine.Model(model_dir, provider="cpu", variant="int8")
    return m.fingerprint, {r["text"]: r["scores"] for r in m.classify(TEXTS)}


def _wait_for(condition, what: str, timeout: float = 120.0, proc=None):
    """Poll an observable condition with a deadline."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"process exited ({proc.returncode}) while waiting for {what}")
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def _fingerprint(server: Server) -> str:
    return server.client.get("/info").json()["fingerprint"]


def _close(expected: dict[str, float], answer: list[dict]) -> bool:
    got = {p["label"]: p["score"] for p in answer}
    return got.keys() == expected.keys() and all(abs(got[k] - expected[k]) < 1e-4 for k in expected)


class Clients:
    """N threads, each sending /predict requests one after another until stopped; every answer kept."""

    def __init__(self, url: str, n: int = 8):
        self.url = url
        self.answers: list[list[tuple[int, str | None, str, object]]] = [[] for _ in range(n)]
        self.errors: list[str] = []
        self._stop = threading.Event()
        self.threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(n)]

    def _run(self, i: int) -> None:
        with httpx.Client(base_url=self.url, timeout=60) as client:
            k = i
            while not self._stop.is_set():
                text = TEXTS[k % len(TEXTS)]
                k += 1
                try:
                    r = client.post("/predict", json={"inputs": text})
                    self.answers[i].append(
                        (
                            r.status_code,
                            r.headers.get("x-model-fingerprint"),
                            text,
                            r.json() if r.status_code == 200 else r.text,
                        )
                    )
                except httpx.HTTPError as exc:  # a failed request: counted, never retried
                    self.errors.append(f"{type(exc).__name__}: {exc}")

    def start(self) -> Clients:
        for t in self.threads:
            t.start()
        return self

    def count(self) -> int:
        return sum(len(a) for a in self.answers)

    def stop(self) -> None:
        self._stop.set()
        for t in self.threads:
            t.join(timeout=60)


def test_sighup_swaps_the_model_under_8_clients(checkpoints, exports, tmp_path):
    served = tmp_path / "served"
    shutil.copytree(exports["a"], served)
    fp_a, ref_a = _reference(served)
    server = Server(
        [
            "--model-dir",
            str(served),
            "--variant",
            "int8",
            "--cache",
            str(tmp_path / "cache.sqlite"),
            "--max-wait-ms",
            "2",
        ]
    ).wait_healthy()
    clients = Clients(server.url).start()
    try:
        assert _fingerprint(server) == fp_a
        _wait_for(lambda: clients.count() >= 40, "answers before the swap")
        # A new release exported over the served folder (a new folder renamed into place) ...
        run = run_sentictl(
            "export",
            "--model",
            str(checkpoints["b"]),
            "--out",
            str(served),
            "--variants",
            "int8",
            "--force",
            timeout=600,
        )
        assert run.returncode == 0, run.stderr.decode()
        fp_b, ref_b = _reference(served)
        assert fp_b != fp_a
        before = clients.count()
        assert _fingerprint(server) == fp_a  # ... changes nothing until the server is told
        server.proc.send_signal(signal.SIGHUP)
        _wait_for(lambda: _fingerprint(server) == fp_b, "/info to show the new fingerprint", proc=server.proc)
        switched = clients.count()
        _wait_for(
            lambda: all(any(fp == fp_b for _, fp, _, _ in a) for a in clients.answers),
            "every client to get answers of the new model",
        )
        _wait_for(lambda: clients.count() >= switched + 40, "answers after the swap")
    finally:
        clients.stop()
    metrics = server.metrics()
    code, err = server.stop()
    assert code == 0, err

    assert clients.errors == []
    answers = [x for a in clients.answers for x in a]
    assert [x for x in answers if x[0] != 200] == []  # 0 failed requests
    refs = {fp_a: ref_a, fp_b: ref_b}
    for _status, fp, text, body in answers:
        assert fp in refs, fp
        assert _close(refs[fp][text], body), (fp, text, body)  # computed by the model its header names
    for a in clients.answers:  # the switch is atomic: once a client saw the new model, never the old again
        fps = [fp for _, fp, _, _ in a]
        assert fp_b in fps and fps == sorted(fps, key=lambda f: f == fp_b)
    assert before > 0 and switched >= before
    assert metrics.get(f'sentictl_model_info{{fingerprint="{fp_b}",name="served",variant="int8"}}') == 1, metrics
    assert not any(fp_a in key for key in metrics)
    assert metrics["sentictl_reloads_total"] == 1 and metrics["sentictl_reload_failures_total"] == 0
    assert f"reloaded: served:int8 {fp_a} → {fp_b}" in err, err


def test_a_folder_that_fails_to_verify_leaves_the_old_model_serving(exports, tmp_path):
    served = tmp_path / "served"
    shutil.copytree(exports["a"], served)
    fp_a, ref_a = _reference(served)
    server = Server(["--model-dir", str(served), "--variant", "int8", "--no-cache"]).wait_healthy()
    try:
        (served / "model_int8.onnx.data").chmod(0o644)
        shutil.copyfile(exports["b"] / "model_int8.onnx.data", served / "model_int8.onnx.data")
        server.proc.send_signal(signal.SIGHUP)
        _wait_for(
            lambda: server.metrics().get("sentictl_reload_failures_total") == 1, "the reload to fail", proc=server.proc
        )
        assert _fingerprint(server) == fp_a
        r = server.client.post("/predict", json={"inputs": TEXTS[0]})
        assert r.status_code == 200 and r.headers["x-model-fingerprint"] == fp_a
        assert _close(ref_a[TEXTS[0]], r.json())
        assert server.metrics()["sentictl_reloads_total"] == 0
    finally:
        code, err = server.stop()
    assert code == 0, err
    failed = [line for line in err.splitlines() if "reload failed" in line]
    assert len(failed) == 1 and f"still serving tiny:int8 ({fp_a})" in failed[0], err
    assert "does not match the sha256" in failed[0] and "Traceback" not in err, err


def test_admin_reload_needs_the_api_key(exports, tmp_path):
    served = tmp_path / "served"
    shutil.copytree(exports["a"], served)
    fp_a, _ = _reference(served)
    server = Server(
        ["--model-dir", str(served), "--variant", "int8", "--no-cache", "--api-key", "s3cret"]
    ).wait_healthy()
    auth = {"authorization": "Bearer s3cret"}
    try:
        assert server.client.post("/admin/reload").status_code == 401
        assert server.client.post("/admin/reload", headers={"authorization": "Bearer wrong"}).status_code == 401
        shutil.rmtree(served)
        shutil.copytree(exports["b"], served)
        fp_b, ref_b = _reference(served)
        r = server.client.post("/admin/reload", headers=auth)
        assert r.status_code == 200, r.text
        assert r.json()["status"] == "reloaded" and r.json()["fingerprint"] == fp_b and r.json()["previous"] == fp_a
        assert server.client.get("/info", headers=auth).json()["fingerprint"] == fp_b
        answer = server.client.post("/predict", json={"inputs": TEXTS[1]}, headers=auth)
        assert answer.headers["x-model-fingerprint"] == fp_b and _close(ref_b[TEXTS[1]], answer.json())
        # A folder that cannot load: 424 with the reason; the model that was serving still is.
        (served / "tokenizer.json").chmod(0o644)
        (served / "tokenizer.json").write_text("{}")
        r = server.client.post("/admin/reload", headers=auth)
        assert r.status_code == 424 and "still serving" in r.json()["error"], r.text
        assert server.client.get("/info", headers=auth).json()["fingerprint"] == fp_b
    finally:
        code, err = server.stop()
    assert code == 0, err


def test_admin_reload_is_404_without_an_api_key(exports, tmp_path):
    server = Server(["--model-dir", str(exports["a"]), "--variant", "int8", "--no-cache"]).wait_healthy()
    try:
        r = server.client.post("/admin/reload")
        assert r.status_code == 404 and "--api-key" in r.json()["error"], r.text
        assert server.metrics()["sentictl_reloads_total"] == 0
    finally:
        code, err = server.stop()
    assert code == 0, err


# ----------------------------------------------------------------------------- bridge
def test_bridge_sighup_mid_stream_loses_and_duplicates_nothing(
    kafka_bootstrap, checkpoints, exports, topic_name, tmp_path
):
    """SIGHUP lands mid-stream by construction: queued while the bridge is frozen with a backlog waiting."""
    import collections
    import urllib.request

    import orjson

    from conftest import free_port
    from test_bridge import Reader, bridge_args, committed, create_topic, finish, produce, start_bridge, wait_until

    served = tmp_path / "served"
    shutil.copytree(exports["a"], served)
    src, out, group = topic_name("in"), topic_name("out"), topic_name("g")
    create_topic(kafka_bootstrap, src, 2)
    create_topic(kafka_bootstrap, out, 2)
    first, backlog, after = 200, 1500, 200
    n = first + backlog + after
    values = [f"deal {i}: profit {'rose' if i % 3 else 'fell'} {i % 17} percent".encode() for i in range(n)]
    port = free_port()
    log = tmp_path / "bridge.log"
    args = bridge_args(
        kafka_bootstrap,
        served,
        src,
        out,
        group,
        "--variant",
        "int8",
        "--batch-size",
        "20",
        "--no-cache",
        "--session-timeout-ms",
        "10000",
        "--metrics-port",
        str(port),
    )
    fp_a = engine.Model(served, provider="cpu", variant="int8").fingerprint
    produce(kafka_bootstrap, src, values[:first])
    proc = start_bridge(args, log)
    reader = Reader(kafka_bootstrap)

    def metric(name: str) -> float:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
        return next((float(line.split()[-1]) for line in text.splitlines() if line.startswith(name + " ")), -1.0)

    try:
        wait_until(lambda: reader.count([out]) >= first, 90, f"{first} results", proc, log)
        wait_until(lambda: metric("sentictl_bridge_consumed_total") >= first, 20, "the metrics", proc, log)
        run = run_sentictl(
            "export",
            "--model",
            str(checkpoints["b"]),
            "--out",
            str(served),
            "--variants",
            "int8",
            "--force",
            timeout=600,
        )
        assert run.returncode == 0, run.stderr.decode()
        fp_b = engine.Model(served, provider="cpu", variant="int8").fingerprint
        proc.send_signal(signal.SIGSTOP)
        try:
            produce(kafka_bootstrap, src, values[first : first + backlog])
            proc.send_signal(signal.SIGHUP)  # pending until the bridge runs again, with a backlog in front of it
        finally:
            proc.send_signal(signal.SIGCONT)
        wait_until(lambda: metric("sentictl_bridge_reloads_total") == 1, 60, "the reload", proc, log)
        produce(kafka_bootstrap, src, values[first + backlog :])
        wait_until(lambda: metric("sentictl_bridge_consumed_total") >= n, 90, f"{n} records consumed", proc, log)
        proc.send_signal(signal.SIGTERM)
        stderr = finish(proc, log, timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, stderr
    assert f"reloaded: served:int8 {fp_a} → {fp_b}" in stderr, stderr
    records = reader.read([out], expect=n)
    reader.close()
    got = collections.Counter(orjson.loads(r.value)["text"] for r in records)
    assert got == collections.Counter(v.decode() for v in values)  # 0 lost, 0 duplicated
    assert sum(v or 0 for v in committed(kafka_bootstrap, group, src).values()) == n

    refs = {
        fp: {
            r["text"]: r["scores"]
            for r in engine.Model(d, provider="cpu", variant="int8").classify([v.decode() for v in values])
        }
        for fp, d in ((fp_a, exports["a"]), (fp_b, served))
    }
    seen = collections.Counter()
    for r in records:
        fp = dict(r.headers)["sentictl-model"].decode()
        body = orjson.loads(r.value)
        assert fp in refs, fp
        expected = refs[fp][body["text"]]
        assert all(abs(body["scores"][k] - expected[k]) < 1e-4 for k in expected), (fp, body)
        seen[fp] += 1
    assert seen[fp_a] >= first and seen[fp_b] >= after, seen
