"""`sentictl serve` against hostile HTTP clients: half-sent requests, connection floods, leaky answers.

Real server subprocesses on loopback. Every wait is bounded (a socket timeout or a deadline) and
ends on something the server does: an answer, a closed connection, a /metrics sample. Timeouts
are short where the test waits for them and long where a test must not race them.
"""

from __future__ import annotations

import http.client
import json
import select
import socket
import subprocess
import sys
import time

import httpx
import pytest

from conftest import sentictl_env
from test_serve import Server

resource = pytest.importorskip("resource")  # RLIMIT_NOFILE: POSIX only

NOFILE = 256  # the server's descriptor limit in the flood test (soft = hard: it cannot raise it)
FLOOD = 300  # slow connections opened against it: more than the limit allows
SYNC_EVERY = 20  # flood connections opened between two round trips to the server
PARTIAL = b"POST /sentiment HTTP/1.1\r\nHost: x\r\n"  # headers that never finish
WAIT_S = 60.0  # the bound on every wait for the server; never reached when things work


def _low_nofile() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (NOFILE, NOFILE))


def _connect(server: Server) -> socket.socket:
    return socket.create_connection(("127.0.0.1", server.port), timeout=WAIT_S)


def _read_to_eof(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (a reset counts as closed)."""
    chunks = []
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks)


def _error(answer: bytes) -> tuple[int, dict]:
    """Status and JSON body of a raw HTTP answer."""
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), json.loads(body)


def _busy(server: Server, body: bytes = b"shares rose sharply") -> tuple[socket.socket, bytes]:
    """A /sentiment request in progress: headers sent, the route reading its body (it asked with 100 Continue)."""
    sock = _connect(server)
    sock.sendall(
        b"POST /sentiment HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: %d\r\n\r\n" % len(body)
    )
    answer = b""
    while b"\r\n\r\n" not in answer:
        chunk = sock.recv(4096)
        assert chunk, f"closed before 100 Continue: {answer!r}"
        answer += chunk
    assert answer.startswith(b"HTTP/1.1 100 "), answer
    return sock, body


def _finish(sock: socket.socket, body: bytes) -> int:
    """Send the body of a _busy request; the status of its answer."""
    sock.sendall(body)
    response = http.client.HTTPResponse(sock)
    response.begin()
    response.read()
    return response.status


def _metric(server: Server, name: str) -> float:
    """One /metrics sample, on a connection of its own (a kept-alive one may be closed to make room)."""
    from prometheus_client.parser import text_string_to_metric_families

    deadline = time.monotonic() + WAIT_S
    while True:
        try:
            text = httpx.get(f"{server.url}/metrics", timeout=WAIT_S).text
            break
        except httpx.TransportError:
            assert time.monotonic() < deadline, "/metrics did not answer"
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items()))
            if (f"{s.name}{{{labels}}}" if labels else s.name) == name:
                return s.value
    raise KeyError(name)


def _wait_metric(server: Server, name: str, at_least: float) -> float:
    deadline = time.monotonic() + WAIT_S
    while (value := _metric(server, name)) < at_least:
        assert time.monotonic() < deadline, f"{name} stayed at {value}, expected {at_least}"
        time.sleep(0.05)
    return value


def _stopped_cleanly(server: Server) -> str:
    code, err = server.stop()
    assert code == 0, err
    assert "Too many open files" not in err and "Traceback" not in err, err
    return err


SHED = 'sentictl_connections_closed_total{reason="shed"}'
REFUSED = 'sentictl_connections_closed_total{reason="refused"}'
HEADER_TIMEOUTS = 'sentictl_connections_closed_total{reason="header_timeout"}'
BODY_TIMEOUTS = 'sentictl_connections_closed_total{reason="body_timeout"}'


# ------------------------------------------------------------------------------ floods
def test_flood_of_slow_connections_leaves_room_for_real_clients(tiny_model_dir):
    """More half-sent requests than descriptors: real clients are still answered, no descriptor runs out."""
    s = Server(
        ["--model-dir", str(tiny_model_dir), "--no-cache", "--header-timeout", "600"], preexec_fn=_low_nofile
    ).wait_healthy()
    slow: list[socket.socket] = []
    try:
        cap = s.client.get("/info").json()["max_connections"]
        assert 16 <= cap < NOFILE  # derived from the descriptor limit, with a reserve
        for i in range(FLOOD):
            sock = _connect(s)
            slow.append(sock)
            try:
                sock.sendall(PARTIAL)
            except OSError:
                pass  # already closed by the server to make room
            if i % SYNC_EVERY == SYNC_EVERY - 1:
                # A /metrics answer means every connection queued before it was accepted: the kernel's
                # accept queue never overflows, so no connection is left to the kernel's SYN-ACK
                # retransmission backoff (tens of seconds on a loaded machine with a small somaxconn).
                _metric(s, SHED)
        # Every slow connection beyond the cap was accepted by closing an older one.
        _wait_metric(s, SHED, FLOOD - cap)
        answered = []
        for i in range(5):
            try:
                r = httpx.post(f"{s.url}/sentiment", content=f"quarterly profit rose {i}".encode(), timeout=10)
                answered.append(r.status_code)
            except httpx.TransportError as exc:
                answered.append(repr(exc))
        assert answered.count(200) >= 4, answered
        assert _metric(s, "sentictl_open_connections") <= cap
    finally:
        for sock in slow:
            sock.close()
        _stopped_cleanly(s)


def test_connection_cap_makes_room_then_refuses_503_when_all_are_busy(tiny_model_dir):
    s = Server(
        [
            "--model-dir",
            str(tiny_model_dir),
            "--no-cache",
            "--max-connections",
            "3",
            "--max-concurrent-requests",
            "3",
            "--header-timeout",
            "600",
            "--body-timeout",
            "600",
        ]
    ).wait_healthy()
    held: list[socket.socket] = []
    try:
        slow = _connect(s)
        held.append(slow)
        slow.sendall(PARTIAL)
        # The slow connection was accepted before these two (the kernel hands them over in order).
        a, b = _busy(s), _busy(s)
        held += [a[0], b[0]]
        # Full: the slow one, never the requests in progress, makes room for a newcomer.
        assert httpx.post(f"{s.url}/sentiment", content=b"dividend raised", timeout=WAIT_S).status_code == 200
        assert _read_to_eof(slow) == b""
        c = _busy(s)
        held.append(c[0])
        # Full of requests in progress: a newcomer is told so at once.
        with _connect(s) as refused:
            status, body = _error(_read_to_eof(refused))
        assert status == 503 and body["error_type"] == "Overloaded" and body["reason"] == "connections_full"
        assert "--max-connections" in body["error"]
        assert [_finish(*a), _finish(*b), _finish(*c)] == [200, 200, 200]
        assert httpx.post(f"{s.url}/sentiment", content=b"dividend cut", timeout=WAIT_S).status_code == 200
        assert _metric(s, SHED) >= 1 and _metric(s, REFUSED) >= 1
    finally:
        for sock in held:
            sock.close()
        _stopped_cleanly(s)


def test_requests_in_progress_are_capped_with_429(tiny_model_dir):
    s = Server(
        ["--model-dir", str(tiny_model_dir), "--no-cache", "--max-concurrent-requests", "2", "--body-timeout", "600"]
    ).wait_healthy()
    try:
        a, b = _busy(s), _busy(s)
        r = httpx.post(f"{s.url}/predict", json={"inputs": "guidance lowered"}, timeout=WAIT_S)
        assert r.status_code == 429 and r.json()["error_type"] == "Overloaded"
        assert "--max-concurrent-requests" in r.json()["error"]
        assert _metric(s, "sentictl_requests_in_progress") == 2
        assert [_finish(*a), _finish(*b)] == [200, 200]
        a[0].close()
        b[0].close()
        assert httpx.post(f"{s.url}/predict", json={"inputs": "guidance lowered"}, timeout=WAIT_S).status_code == 200
    finally:
        _stopped_cleanly(s)


# ------------------------------------------------------------------------------ timeouts
@pytest.fixture(scope="module")
def quick(tiny_model_dir, tmp_path_factory):
    """A server with one-second header and body timeouts and a cache file to (not) show in /info."""
    cache = tmp_path_factory.mktemp("hostile-cache") / "results.sqlite"
    s = Server(
        ["--model-dir", str(tiny_model_dir), "--cache", str(cache), "--header-timeout", "1", "--body-timeout", "1"]
    ).wait_healthy()
    s.cache_file = cache
    yield s
    _stopped_cleanly(s)


def test_half_sent_headers_are_answered_408_and_closed(quick):
    with _connect(quick) as sock:
        sock.sendall(PARTIAL)
        status, body = _error(_read_to_eof(sock))
    assert status == 408 and (body["error_type"], body["reason"]) == ("Validation", "timeout")
    assert "--header-timeout" in body["error"]
    # A connection that never says a word is closed without one.
    with _connect(quick) as silent:
        assert _read_to_eof(silent) == b""
    assert _metric(quick, HEADER_TIMEOUTS) >= 2


def test_trickled_headers_do_not_reset_the_clock(quick):
    """One byte at a time keeps uvicorn's keep-alive timer from firing, not the header timeout."""
    request = b"GET /health HTTP/1.1\r\nHost: x\r\n" + b"X-Pad: " + b"a" * 4000
    closed = b""
    with _connect(quick) as sock:
        deadline = time.monotonic() + WAIT_S
        for byte in request:
            assert time.monotonic() < deadline, "still open"
            try:
                sock.sendall(bytes([byte]))
            except OSError:  # closed while we were sending
                break
            # Pacing the trickle; what ends the loop is the server closing the connection.
            if select.select([sock], [], [], 0.05)[0]:
                closed = _read_to_eof(sock)
                break
        else:
            pytest.fail("the whole trickle was accepted: no header timeout")
    assert closed == b"" or _error(closed)[0] == 408


def test_stalled_body_is_answered_408_and_closed(quick):
    with _connect(quick) as sock:
        sock.sendall(b"POST /sentiment HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nshares")
        status, body = _error(_read_to_eof(sock))
    assert status == 408 and (body["error_type"], body["reason"]) == ("Validation", "timeout")
    assert "--body-timeout" in body["error"]
    assert _metric(quick, BODY_TIMEOUTS) >= 1
    # The server goes on serving.
    assert httpx.post(f"{quick.url}/sentiment", content=b"net loss narrowed", timeout=WAIT_S).status_code == 200


# ------------------------------------------------------------------------------ what answers reveal
def test_no_trailing_slash_redirect_so_no_host_reflection(quick):
    for method, path in (("POST", "/sentiment/"), ("POST", "/predict/"), ("GET", "/health/"), ("GET", "/info/")):
        r = httpx.request(
            method,
            f"{quick.url}{path}",
            content=b"shares rose",
            timeout=WAIT_S,
            headers={"host": "evil.example"},
            follow_redirects=False,
        )
        assert r.status_code == 404 and r.json()["reason"] == "not_found", (method, path, r.status_code)
        assert "location" not in r.headers and b"evil.example" not in r.content


def test_info_shows_names_not_locations(quick, tiny_model_dir, tiny_checkpoint):
    r = httpx.get(f"{quick.url}/info", timeout=WAIT_S)
    info = r.json()

    def strings(value):
        if isinstance(value, str):
            yield value
        elif isinstance(value, dict):
            for v in value.values():
                yield from strings(v)
        elif isinstance(value, list):
            for v in value:
                yield from strings(v)

    assert [v for v in strings(info) if v.startswith("/")] == []
    for location in (tiny_model_dir, tiny_checkpoint, quick.cache_file.parent):
        assert str(location) not in r.text
    assert info["model_dir"] == tiny_model_dir.name and info["cache"] == quick.cache_file.name
    assert info["model_id"] == tiny_checkpoint.name  # exported from a local folder: its name
    assert (info["header_timeout"], info["body_timeout"]) == (1, 1) and info["max_connections"] >= 16


# ------------------------------------------------------------------------------ settings
def test_limits_are_documented_with_their_variables():
    r = subprocess.run(
        [sys.executable, "-m", "sentictl", "serve", "--help"],
        capture_output=True,
        env=sentictl_env(),
        timeout=120,
        check=False,
    )
    out = r.stdout.decode()
    for env in (
        "SENTICTL_HEADER_TIMEOUT",
        "SENTICTL_BODY_TIMEOUT",
        "SENTICTL_KEEP_ALIVE_TIMEOUT",
        "SENTICTL_MAX_CONNECTIONS",
        "SENTICTL_MAX_CONCURRENT_REQUESTS",
        "SENTICTL_MAX_CHARS",
    ):
        assert env in out, env


def test_descriptor_limit_is_raised_and_the_cap_stays_below_it():
    script = (
        "import resource\n"
        "from sentictl.serve.connections import connection_cap, raise_fd_limit\n"
        "resource.setrlimit(resource.RLIMIT_NOFILE, (128, 512))\n"
        "limit = raise_fd_limit()\n"
        "print(limit, resource.getrlimit(resource.RLIMIT_NOFILE)[0], connection_cap(limit, None),"
        " connection_cap(limit, 100000), connection_cap(limit, 10))\n"
    )
    r = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, env=sentictl_env(), timeout=120, check=False
    )
    assert r.returncode == 0, r.stderr
    limit, soft, derived, asked_too_many, asked_few = map(int, r.stdout.split())
    assert limit == soft == 512
    assert 16 <= derived < 512 - 64 and asked_too_many == derived and asked_few == 10
