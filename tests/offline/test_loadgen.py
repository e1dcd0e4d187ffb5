"""The serving benchmark's load generator against a real uvicorn server and a raw socket server."""

from __future__ import annotations

import contextlib
import json
import socketserver
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from recstack.features.redis_local import free_port
from recstack.offline.bench.loadgen import LoadResult, ServerUnreachableError, run_load

from tests.offline._loadgen_app import CHUNK_BYTES, CHUNKS

REPO = Path(__file__).resolve().parents[2]
SUMMARY_KEYS = {"requests", "errors", "rps", "p50_ms", "p95_ms", "p99_ms", "max_ms", "mean_ms", "error_kinds",
                "client_cpu_s"}  # fmt: skip
OK_BODY = json.dumps({"ok": True, "items": [1, 2, 3]}, separators=(",", ":")).encode()


def _wait_http(port: int, proc: subprocess.Popen[bytes], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"uvicorn exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/ok", timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"uvicorn not ready on port {port} after {timeout_s}s")


@pytest.fixture(scope="module")
def app_port() -> Iterator[int]:
    """A real uvicorn serving ``tests/offline/_loadgen_app.py`` on a free loopback port."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "tests.offline._loadgen_app:app", "--host", "127.0.0.1",
         "--port", str(port), "--log-level", "warning", "--no-access-log", "--timeout-graceful-shutdown", "1"],
        cwd=REPO,
    )  # fmt: skip
    try:
        _wait_http(port, proc, 30)
        yield port
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _assert_consistent(result: LoadResult) -> None:
    assert result.requests == len(result.latencies_ms) + result.errors
    assert result.errors == sum(result.error_kinds.values())
    summary = result.summary()
    assert set(summary) >= SUMMARY_KEYS
    json.dumps(summary)  # JSON-ready: no NaN, no numpy scalars
    assert summary["client_cpu_s"] >= 0


def test_ok_requests_all_succeed_on_keep_alive(app_port: int) -> None:
    result = run_load("127.0.0.1", app_port, ["/ok"], concurrency=4, duration_s=1.0, warmup_s=0.3)
    _assert_consistent(result)
    assert result.errors == 0 and result.error_kinds == {}
    assert result.requests > 0 and len(result.latencies_ms) == result.requests
    assert result.rps > 0 and abs(result.rps - result.requests / result.duration_s) < 1e-6
    assert 0.9 < result.duration_s < 1.5
    assert result.body_bytes == result.requests * len(OK_BODY)
    assert result.connections == 4  # one keep-alive connection per worker, never reopened
    summary = result.summary()
    assert 0 < summary["p50_ms"] <= summary["p95_ms"] <= summary["p99_ms"] <= summary["max_ms"]


def test_server_errors_are_counted_by_status(app_port: int) -> None:
    result = run_load("127.0.0.1", app_port, ["/fail"], concurrency=2, duration_s=0.5, warmup_s=0.1)
    _assert_consistent(result)
    assert result.requests > 0
    assert result.errors == result.requests and result.error_kinds == {"500": result.requests}
    assert result.rps == 0 and result.latencies_ms.size == 0
    assert result.summary()["p99_ms"] is None
    assert result.connections == 2  # a 500 with a whole body keeps the connection


def test_chunked_bodies_parse(app_port: int) -> None:
    result = run_load("127.0.0.1", app_port, ["/chunked", "/ok"], concurrency=3, duration_s=0.6, warmup_s=0.1)
    _assert_consistent(result)
    assert result.errors == 0 and result.requests > 0
    assert result.connections == 3  # the stream stayed in sync across chunked and sized bodies
    # body_bytes = n_chunked * CHUNKS * CHUNK_BYTES + (requests - n_chunked) * len(OK_BODY), solved for n_chunked
    n_chunked, rest = divmod(
        result.body_bytes - result.requests * len(OK_BODY), CHUNKS * CHUNK_BYTES - len(OK_BODY)
    )
    assert rest == 0 and 0 < n_chunked < result.requests


def test_connection_close_reconnects(app_port: int) -> None:
    result = run_load("127.0.0.1", app_port, ["/close"], concurrency=2, duration_s=0.5, warmup_s=0.1)
    _assert_consistent(result)
    assert result.errors == 0 and result.requests > 0
    assert result.body_bytes == 3 * result.requests
    assert result.connections >= result.requests  # a new connection for every request


def test_timeouts_are_errors_and_the_generator_recovers(app_port: int) -> None:
    result = run_load(
        "127.0.0.1", app_port, ["/slow", "/ok", "/ok", "/ok"], concurrency=2, duration_s=1.5, warmup_s=0.0,
        timeout_s=0.3,
    )  # fmt: skip
    _assert_consistent(result)
    assert set(result.error_kinds) == {"timeout"} and result.errors >= 2
    assert len(result.latencies_ms) > 2 * result.errors  # the /ok requests between the timeouts succeeded
    assert result.connections >= 2 + result.errors  # each timeout dropped its connection, the next reopened


def test_open_loop_rate_paces_requests(app_port: int) -> None:
    result = run_load("127.0.0.1", app_port, ["/ok"], concurrency=4, duration_s=1.0, warmup_s=0.25, rate=40)
    _assert_consistent(result)
    assert result.errors == 0
    assert 32 <= result.requests <= 48


def test_bad_arguments_and_unreachable_server() -> None:
    with pytest.raises(ValueError, match="request path"):
        run_load("127.0.0.1", 1, ["ok"], concurrency=1, duration_s=1)
    with pytest.raises(ValueError, match="no request paths"):
        run_load("127.0.0.1", 1, [], concurrency=1, duration_s=1)
    with pytest.raises(ValueError, match="concurrency"):
        run_load("127.0.0.1", 1, ["/ok"], concurrency=0, duration_s=1)
    with pytest.raises(ServerUnreachableError):
        run_load("127.0.0.1", free_port(), ["/ok"], concurrency=2, duration_s=1)


# Raw responses for the framings uvicorn does not produce: (bytes sent, close the socket after sending).
HELLO = b"hello, world"
RAW_RESPONSES: dict[str, tuple[bytes, bool]] = {
    "/chunk-ext": (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5;name=value\r\nhello\r\n7\r\n, world\r\n0\r\nX-Trailer: yes\r\n\r\n",
        False,
    ),
    "/until-close": (b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n" + HELLO, True),
    "/no-content": (b"HTTP/1.1 204 No Content\r\n\r\n", False),
    "/http10": (b"HTTP/1.0 200 OK\r\nContent-Length: 12\r\n\r\n" + HELLO, True),
    "/continue": (
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length:  12\r\n\r\n" + HELLO,
        False,
    ),
    # keep-alive as far as the headers say, but the server drops the connection: the client must retry
    "/silent-drop": (b"HTTP/1.1 200 OK\r\nContent-Length: 12\r\n\r\n" + HELLO, True),
    "/garbage": (b"HTTP/1.1 2xx OK\r\n\r\n", False),
}


class _RawHandler(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        with contextlib.suppress(ConnectionError):  # the client resets connections at the end of a run
            self._serve()

    def _serve(self) -> None:
        while True:
            request_line = self.rfile.readline()
            if not request_line:
                return
            while self.rfile.readline() not in (b"\r\n", b""):
                pass
            response, close = RAW_RESPONSES[request_line.split()[1].decode()]
            self.wfile.write(response)
            if close:
                return


class _RawServer(socketserver.ThreadingTCPServer):
    daemon_threads = True


@pytest.fixture(scope="module")
def raw_port() -> Iterator[int]:
    """A threaded socket server that answers each path with the canned bytes of ``RAW_RESPONSES``."""
    server = _RawServer(("127.0.0.1", 0), _RawHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize(
    ("path", "body_len", "reconnects"),
    [("/chunk-ext", 12, False), ("/until-close", 12, True), ("/no-content", 0, False), ("/http10", 12, True),
     ("/continue", 12, False), ("/silent-drop", 12, True)],
)  # fmt: skip
def test_response_framings(raw_port: int, path: str, body_len: int, reconnects: bool) -> None:
    result = run_load("127.0.0.1", raw_port, [path], concurrency=2, duration_s=0.3, warmup_s=0.0)
    _assert_consistent(result)
    assert result.errors == 0 and result.requests > 0
    assert result.body_bytes == body_len * result.requests
    assert (result.connections >= result.requests) if reconnects else (result.connections == 2)


def test_malformed_response_is_a_protocol_error(raw_port: int) -> None:
    result = run_load("127.0.0.1", raw_port, ["/garbage"], concurrency=1, duration_s=0.2, warmup_s=0.0)
    assert result.requests > 0 and result.error_kinds == {"protocol": result.requests}


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "recstack.offline.bench.loadgen", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_cli_prints_the_summary_as_its_last_line(app_port: int, tmp_path: Path) -> None:
    paths_file = tmp_path / "paths.txt"
    paths_file.write_text("/ok\n\n/ok\n")
    r = _cli("--host", "127.0.0.1", "--port", str(app_port), "--paths-file", str(paths_file),
             "--concurrency", "2", "--duration", "0.5", "--warmup", "0.2", "--timeout", "2")  # fmt: skip
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout.strip().splitlines()[-1])
    assert set(summary) >= SUMMARY_KEYS
    assert summary["requests"] > 0 and summary["errors"] == 0 and summary["rps"] > 0


def test_cli_exits_2_on_bad_input(tmp_path: Path) -> None:
    missing = tmp_path / "missing.txt"
    r = _cli("--host", "127.0.0.1", "--port", "8000", "--paths-file", str(missing), "--concurrency", "2",
             "--duration", "1")  # fmt: skip
    assert r.returncode == 2 and "cannot read paths file" in r.stderr
    paths_file = tmp_path / "paths.txt"
    paths_file.write_text("/ok\n")
    r = _cli("--host", "127.0.0.1", "--port", str(free_port()), "--paths-file", str(paths_file),
             "--concurrency", "2", "--duration", "1")  # fmt: skip
    assert r.returncode == 2 and "cannot connect" in r.stderr
    r = _cli("--host", "127.0.0.1", "--port", "8000", "--paths-file", str(paths_file), "--concurrency", "0",
             "--duration", "1")  # fmt: skip
    assert r.returncode == 2 and "--concurrency" in r.stderr


def test_balanced_pool_prefers_the_faster_connections() -> None:
    """Power of two choices by latency EWMA: connections that answered slowly are picked less often."""
    from recstack.offline.bench.loadgen import _BalancedPool, _HttpConnection

    conns = [_HttpConnection("127.0.0.1", 1) for _ in range(8)]
    pool = _BalancedPool(conns, seed=1)
    slow = {id(c) for c in conns[:4]}
    picks = {True: 0, False: 0}
    for _ in range(2000):
        c = pool.acquire()
        picks[id(c) in slow] += 1
        pool.release(c, 0.050 if id(c) in slow else 0.005)
    assert picks[False] > 3 * picks[True]
    assert len(pool.idle) == 8


def test_balanced_mode_end_to_end(app_port: int) -> None:
    result = run_load("127.0.0.1", app_port, ["/ok", "/chunked"], concurrency=3, duration_s=1.0, warmup_s=0.2,
                      connections=9)  # fmt: skip
    _assert_consistent(result)
    assert result.errors == 0 and result.requests > 10 and result.connections == 9
    with pytest.raises(ValueError, match="connections"):
        run_load("127.0.0.1", app_port, ["/ok"], concurrency=4, duration_s=0.5, connections=2)


def test_spread_evens_connections_over_server_processes() -> None:
    """Two uvicorn workers on one socket: however the kernel split the accepts, the connections end up even."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "tests.offline._loadgen_app:app", "--host", "127.0.0.1", "--port",
         str(port), "--workers", "2", "--log-level", "warning", "--no-access-log"],
        cwd=REPO,
    )  # fmt: skip
    try:
        _wait_http(port, proc, 60)
        pids: set[str] = set()
        deadline = time.monotonic() + 30  # both workers accepting
        while len(pids) < 2 and time.monotonic() < deadline:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as r:
                pids.add(str(json.loads(r.read())["worker"]))
        result = run_load("127.0.0.1", port, ["/ok"], concurrency=4, duration_s=0.5, warmup_s=0.1,
                          connections=16, spread_workers=2)  # fmt: skip
        _assert_consistent(result)
        assert result.errors == 0
        per_worker = result.connections_per_worker
        assert per_worker is not None and set(per_worker) == pids and sum(per_worker.values()) == 16
        assert max(per_worker.values()) <= 8
        assert result.summary()["connections_per_worker"] == per_worker
    finally:
        proc.terminate()
        proc.wait(15)
