"""A low-overhead HTTP/1.1 load generator for the serving benchmark, run as its own process::

    python -m recstack.offline.bench.loadgen --host 127.0.0.1 --port 8000 --paths-file paths.txt \\
        --concurrency 16 --duration 10 [--warmup 1] [--timeout 5] [--rate 500]

The last stdout line is :meth:`LoadResult.summary` as JSON; bad arguments, an unreadable paths file or a server
that accepts no connection at the start exit 2 with a message on stderr.

``concurrency`` workers share one event loop (uvloop when importable) and each holds one keep-alive connection
from ``asyncio.open_connection``. Requests are hand-written ``GET``s prepared once; responses are parsed only as far
as finding the end of the body (``Content-Length``, ``Transfer-Encoding: chunked``, or read until close), so the
client spends little CPU beside a server on the same machine; ``client_cpu_s`` says how much it spent.

Modes:

- closed loop (default): each worker sends its next request as soon as its previous one finished;
- open loop (``rate``): request ``i`` is due at ``start + i / rate``, whichever worker takes it, and its latency is
  counted from that due time, so a server (or a client) that falls behind shows up as latency instead of silently
  lowering the offered rate (no coordinated omission). ``concurrency`` caps the requests in flight.

Every worker takes the next path of the shared ``paths`` list in turn (round robin). A request is recorded when it
finishes inside the measured window (after ``warmup_s``, for ``duration_s``); requests in flight at the end are
dropped. An error is a non-2xx status (kind ``"500"``, ``"404"``, ...), ``"timeout"`` (no whole response within
``timeout_s``, enforced by a watchdog that checks every ``timeout_s / 20``, at most 50 ms), ``"connect"`` (the connection could not be opened), ``"connection"`` (closed or reset before the
response was whole) or ``"protocol"`` (a malformed response). After any error but a status the connection is
dropped and the next request opens a new one; so does a response with ``Connection: close``.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import math
import random
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

# After a failed connect a worker waits this long before its next request, so a dead server is not spun on.
_CONNECT_BACKOFF_S = 0.05
_HEAD_END = b"\r\n\r\n"
_CRLF = b"\r\n"


class ServerUnreachableError(ConnectionError):
    """The server accepted no connection when the load run started."""


class _ConnectError(Exception):
    """Opening a connection failed during the run."""


class _ProtocolError(Exception):
    """The response is not valid HTTP/1.x."""


class _StaleConnectionError(Exception):
    """A reused keep-alive connection was closed by the server before any byte of the response (safe to retry)."""


@dataclass(frozen=True)
class LoadResult:
    """What one load run measured, over its measured window only (warm-up excluded).

    ``requests`` counts every recorded request, errors included; ``rps`` and ``latencies_ms`` are of the
    successful (2xx) ones: ``rps = (requests - errors) / duration_s`` and ``len(latencies_ms) == requests - errors``.
    """

    requests: int
    errors: int
    # "timeout", "connect", "connection", "protocol", or the status code of a non-2xx response, e.g. "500"
    error_kinds: dict[str, int]
    duration_s: float  # length of the measured window, seconds
    rps: float  # successful requests per second
    latencies_ms: np.ndarray  # float64 [requests - errors], milliseconds, in order of completion
    client_cpu_s: float  # CPU seconds this process used in the measured window (time.process_time)
    connections: int  # TCP connections opened over the whole run (== concurrency when keep-alive held)
    body_bytes: int  # response body bytes of the successful requests (chunked bodies de-chunked)
    connections_per_worker: dict[str, int] | None = None  # after ``spread`` (server worker id -> connections)

    def summary(self) -> dict[str, Any]:
        """The numbers as a JSON-ready dict; latency percentiles are ``None`` when nothing succeeded."""
        lat = self.latencies_ms
        p50 = p95 = p99 = max_ms = mean_ms = None
        if lat.size:
            p50, p95, p99 = (round(float(v), 3) for v in np.percentile(lat, [50, 95, 99]))
            max_ms, mean_ms = round(float(lat.max()), 3), round(float(lat.mean()), 3)
        return {
            "requests": self.requests,
            "errors": self.errors,
            "rps": round(self.rps, 1),
            "p50_ms": p50,
            "p95_ms": p95,
            "p99_ms": p99,
            "max_ms": max_ms,
            "mean_ms": mean_ms,
            "error_kinds": dict(sorted(self.error_kinds.items())),
            "client_cpu_s": round(self.client_cpu_s, 3),
            "duration_s": round(self.duration_s, 3),
            "connections": self.connections,
            "connections_per_worker": self.connections_per_worker,
        }


def _parse_head(head: bytes) -> tuple[int, int | None, bool, bool]:
    """``(status, content length or None, chunked, close after)`` of a response head ending in CRLF CRLF."""
    lines = head.split(_CRLF)
    status_line = lines[0]
    if not status_line.startswith(b"HTTP/1.") or len(status_line) < 12 or status_line[8:9] != b" ":
        raise _ProtocolError(f"bad status line {status_line[:80]!r}")
    try:
        status = int(status_line[9:12])
    except ValueError as e:
        raise _ProtocolError(f"bad status line {status_line[:80]!r}") from e
    http10 = status_line[5:8] == b"1.0"
    length: int | None = None
    chunked = False
    close = http10  # HTTP/1.0 closes unless it says keep-alive
    for line in lines[1:]:
        if not line:
            continue
        name, sep, value = line.partition(b":")
        if not sep:
            raise _ProtocolError(f"bad header line {line[:80]!r}")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value)
            if length < 0:
                raise _ProtocolError(f"negative Content-Length {length}")
        elif name == b"transfer-encoding":
            chunked = value.strip().lower().endswith(b"chunked")
        elif name == b"connection":
            tokens = value.lower()
            if b"close" in tokens:
                close = True
            elif http10 and b"keep-alive" in tokens:
                close = False
    return status, length, chunked, close


async def _read_chunked(reader: asyncio.StreamReader) -> int:
    """Read a chunked body up to and including its trailer section; return the de-chunked length in bytes."""
    total = 0
    while True:
        size_line = await reader.readuntil(_CRLF)
        size = int(size_line.split(b";", 1)[0], 16)  # chunk extensions are ignored
        if size < 0:
            raise _ProtocolError(f"negative chunk size {size}")
        if size == 0:
            break
        chunk = await reader.readexactly(size + 2)
        if chunk[-2:] != _CRLF:
            raise _ProtocolError("chunk not followed by CRLF")
        total += size
    while await reader.readuntil(_CRLF) != _CRLF:  # trailer fields, then an empty line
        pass
    return total


class _HttpConnection:
    """One keep-alive HTTP/1.1 connection that is (re)opened on demand; ``opened`` counts its TCP connections.

    While a ``fetch`` is under way ``deadline`` holds its ``perf_counter`` deadline; the run's watchdog calls
    ``abort`` once it has passed, which sets ``timed_out`` and kills the transport, so the pending read fails.
    """

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self.opened = 0
        self.deadline = math.inf
        self.timed_out = False
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._served = 0  # responses read on the current TCP connection

    async def open(self) -> None:
        """Open a new TCP connection (raises ``OSError`` when refused)."""
        self._reader, self._writer = await asyncio.open_connection(self.host, self.port)
        self._served = 0
        self.opened += 1

    def close(self) -> None:
        """Drop the current TCP connection, if any; the next ``fetch`` opens a new one."""
        if self._writer is not None:
            self._writer.close()
        self._reader = self._writer = None

    def abort(self) -> None:
        """Time the current request out: mark it and reset the connection under it."""
        self.timed_out = True
        if self._writer is not None:
            self._writer.transport.abort()
        self._reader = self._writer = None

    async def fetch(self, request: bytes, deadline: float) -> tuple[int, int]:
        """Send one prepared request and read its whole response by ``deadline``; return ``(status, body bytes)``.

        A reused connection that the server had closed (idle keep-alive timeout) is reopened and the request sent
        once more, as browsers and HTTP client libraries do for idempotent requests.
        """
        self.deadline = deadline
        self.timed_out = False
        try:
            if self._writer is None:
                await self._reopen()
            try:
                return await self._exchange(request)
            except _StaleConnectionError:
                if self.timed_out:
                    raise
                self.close()
                await self._reopen()
                return await self._exchange(request)
        finally:
            self.deadline = math.inf

    async def _reopen(self) -> None:
        # the watchdog cannot abort a connection that is not open yet: bound the connect by the deadline here
        # (asyncio.timeout, not wait_for: on 3.11 wait_for can swallow the cancellation that ends the run)
        try:
            async with asyncio.timeout(self.deadline - time.perf_counter()):
                await self.open()
        except TimeoutError:  # before OSError: TimeoutError is one
            self.timed_out = True
            raise
        except OSError as e:
            raise _ConnectError(str(e)) from e
        if self.timed_out:  # the watchdog fired while connecting
            raise TimeoutError

    async def get_body(self, request: bytes) -> bytes:
        """Send one request on the open connection and return its body (Content-Length framing only)."""
        reader, writer = self._reader, self._writer
        if reader is None or writer is None:
            raise _ConnectError("connection not open")
        writer.write(request)
        status, length, _, close = _parse_head(await reader.readuntil(_HEAD_END))
        if length is None or not 200 <= status < 300:
            raise _ProtocolError(f"probe answered {status} without Content-Length framing")
        body = await reader.readexactly(length)
        if close:
            self.close()
        return body

    async def _exchange(self, request: bytes) -> tuple[int, int]:
        reader, writer = self._reader, self._writer
        assert reader is not None and writer is not None
        writer.write(request)  # a few hundred bytes with one request in flight: no drain needed
        try:
            head = await reader.readuntil(_HEAD_END)
        except asyncio.IncompleteReadError as e:
            if self._served and not e.partial:
                raise _StaleConnectionError from e
            raise
        except ConnectionResetError as e:
            if self._served:
                raise _StaleConnectionError from e
            raise
        status, length, chunked, close = _parse_head(head)
        while 100 <= status < 200:  # informational responses precede the real one
            status, length, chunked, close = _parse_head(await reader.readuntil(_HEAD_END))
        if chunked:
            nbytes = await _read_chunked(reader)
        elif length is not None:
            nbytes = len(await reader.readexactly(length))
        elif status in (204, 304):
            nbytes = 0
        else:  # no framing: the body runs until the server closes
            nbytes = len(await reader.read())
            close = True
        self._served += 1
        if close:
            self.close()
        return status, nbytes


# What a failed request can raise, and the error kind of each (checked in order: TimeoutError is an OSError).
_REQUEST_ERRORS: tuple[tuple[type[Exception], str], ...] = (
    (TimeoutError, "timeout"),
    (_ConnectError, "connect"),
    (_ProtocolError, "protocol"),
    (ValueError, "protocol"),
    (asyncio.LimitOverrunError, "protocol"),
    (OSError, "connection"),
    (EOFError, "connection"),  # asyncio.IncompleteReadError
    (_StaleConnectionError, "connection"),
)
_REQUEST_ERROR_TYPES = tuple(t for t, _ in _REQUEST_ERRORS)


def _error_kind(error: Exception) -> str:
    return next(kind for t, kind in _REQUEST_ERRORS if isinstance(error, t))


class _BalancedPool:
    """Connections shared by the workers, picked per request like an L7 load balancer does: power of two
    choices among the idle connections, by the EWMA of each one's latency. Server processes sharing one
    listening socket get keep-alive connections in whatever split the kernel's accepts made; a per-request
    pick by latency sends work to the less loaded process instead of staying pinned to that split."""

    def __init__(self, conns: list[_HttpConnection], seed: int = 0) -> None:
        self.idle = list(conns)
        self.ewma = {id(c): 0.0 for c in conns}
        self.rng = random.Random(seed)

    def acquire(self) -> _HttpConnection:
        idle = self.idle
        if len(idle) == 1:
            return idle.pop()
        i, j = self.rng.sample(range(len(idle)), 2)
        pick = i if self.ewma[id(idle[i])] <= self.ewma[id(idle[j])] else j
        idle[pick], idle[-1] = idle[-1], idle[pick]
        return idle.pop()

    def release(self, conn: _HttpConnection, latency_s: float) -> None:
        key = id(conn)
        self.ewma[key] = 0.7 * self.ewma[key] + 0.3 * latency_s
        self.idle.append(conn)


class _LoadRun:
    """State the workers share: the prepared requests, the ticket counter and what was recorded."""

    def __init__(self, requests: list[bytes], timeout_s: float, rate: float | None,
                 pool: _BalancedPool | None = None) -> None:  # fmt: skip
        self.pool = pool
        self.requests = requests
        self.timeout_s = timeout_s
        self.rate = rate
        self.tickets = itertools.count()
        self.start = time.perf_counter()
        self.recording = False
        self.stopping = False
        self.latencies_s: list[float] = []
        self.errors: Counter[str] = Counter()
        self.body_bytes = 0

    async def watchdog(self, conns: list[_HttpConnection]) -> None:
        """Abort requests past their deadline, checking every ``timeout_s / 20`` (at most 50 ms).

        One periodic check instead of a timer per request (``asyncio.timeout``) saves the client about a fifth
        of its CPU; a timeout thus fires up to one check late.
        """
        tick = min(0.05, self.timeout_s / 20)
        perf = time.perf_counter
        while not self.stopping:
            await asyncio.sleep(tick)
            now = perf()
            for conn in conns:
                if conn.deadline < now and not conn.timed_out:
                    conn.abort()

    async def worker(self, own: _HttpConnection | None) -> None:
        """Send requests on ``own`` (or on a connection from the balanced pool per request) until cancelled;
        record those that finish while ``recording`` is set."""
        requests, n, timeout_s, rate = self.requests, len(self.requests), self.timeout_s, self.rate
        perf = time.perf_counter
        pool = self.pool
        conn = own
        try:
            while not self.stopping:
                if pool is not None:
                    conn = pool.acquire()
                assert conn is not None
                ticket = next(self.tickets)
                if rate is None:
                    t_start = perf()
                else:
                    t_start = self.start + ticket / rate
                    delay = t_start - perf()
                    if delay > 0:
                        await asyncio.sleep(delay)
                kind: str | None = None
                nbytes = 0
                try:
                    status, nbytes = await conn.fetch(requests[ticket % n], perf() + timeout_s)
                    if not 200 <= status < 300:
                        kind = str(status)
                except _REQUEST_ERROR_TYPES as e:
                    kind = "timeout" if conn.timed_out else _error_kind(e)
                    conn.close()  # the stream may be mid-response: start afresh
                t_done = perf()
                if pool is not None:
                    pool.release(conn, t_done - t_start if kind is None else timeout_s)
                    conn = None
                if kind is None:
                    if self.recording:
                        self.latencies_s.append(t_done - t_start)
                        self.body_bytes += nbytes
                    continue
                if self.recording:
                    self.errors[kind] += 1
                if kind == "connect":
                    await asyncio.sleep(_CONNECT_BACKOFF_S)
        finally:
            if own is not None:
                own.close()


async def _close_at_end(run: _LoadRun, conn: _HttpConnection) -> None:
    try:
        while not run.stopping:
            await asyncio.sleep(0.5)
    finally:
        conn.close()


def _prepare_requests(host: str, port: int, paths: Sequence[str]) -> list[bytes]:
    """One ready-to-send ``GET`` per path; raises ``ValueError`` for a path that is not ``/`` + printable ASCII."""
    if not paths:
        raise ValueError("no request paths given")
    host_header = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    requests = []
    for path in paths:
        if not path.startswith("/") or not path.isascii() or not path.isprintable() or " " in path:
            raise ValueError(f"request path must be '/' followed by printable ASCII without spaces: {path!r}")
        requests.append(
            f"GET {path} HTTP/1.1\r\nHost: {host_header}\r\nUser-Agent: recstack-loadgen\r\n\r\n".encode()
        )
    return requests


async def _open_all(conns: list[_HttpConnection], timeout_s: float) -> None:
    """Open every connection before the clock starts; raise ``ServerUnreachableError`` if any fails."""
    outcomes = await asyncio.gather(
        *(asyncio.wait_for(c.open(), timeout_s) for c in conns), return_exceptions=True
    )
    failures = [o for o in outcomes if isinstance(o, BaseException)]
    if failures:
        for c in conns:
            c.close()
        host, port = conns[0].host, conns[0].port
        raise ServerUnreachableError(f"cannot connect to {host}:{port}: {failures[0]!r}") from failures[0]


async def spread(conns: list[_HttpConnection], probe: bytes, workers: int, timeout_s: float,
                 max_reopens: int = 200) -> dict[str, int]:  # fmt: skip
    """Even out the open connections over ``workers`` server processes sharing one listening socket.

    The kernel hands each accepted connection to whichever process wins the accept, and one process often takes
    a whole burst, so every request then queues on one worker while the other idles. ``probe`` (a GET whose JSON
    body names the serving process as ``"worker"``) tells which process holds each connection; a connection of
    the most loaded process is reopened until each has at most its fair share, as a balancer that keeps a pool
    per backend would. Returns connections per worker id."""
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")

    async def owner(c: _HttpConnection) -> str:
        body = await asyncio.wait_for(c.get_body(probe), timeout_s)
        try:
            return str(json.loads(body)["worker"])
        except (ValueError, KeyError, TypeError) as e:
            raise _ProtocolError(f"probe body names no worker: {body[:80]!r}") from e

    owners = {id(c): await owner(c) for c in conns}
    fair = math.ceil(len(conns) / workers)
    streak = 0  # reopens in a row that the busiest process won again
    for _ in range(max_reopens):
        counts = Counter(owners.values())
        if len(counts) >= min(workers, len(conns)) and max(counts.values()) <= fair:
            break
        busiest = max(counts, key=lambda w: counts[w])
        c = next(c for c in conns if owners[id(c)] == busiest)
        c.close()
        if streak:  # the other processes may not be back in accept yet (they answered a probe): let them get there
            await asyncio.sleep(min(0.001 * streak, 0.05))
        await asyncio.wait_for(c.open(), timeout_s)
        owners[id(c)] = await owner(c)
        streak = streak + 1 if owners[id(c)] == busiest else 0
    return dict(sorted(Counter(owners.values()).items()))


async def run_load_async(
    host: str,
    port: int,
    paths: Sequence[str],
    concurrency: int,
    duration_s: float,
    warmup_s: float = 1.0,
    timeout_s: float = 5.0,
    rate: float | None = None,
    connections: int | None = None,
    spread_workers: int | None = None,
    probe_path: str = "/healthz",
) -> LoadResult:
    """:func:`run_load` inside an already running event loop."""
    if concurrency < 1:
        raise ValueError(f"concurrency must be at least 1, got {concurrency}")
    if not duration_s > 0 or not warmup_s >= 0 or not timeout_s > 0:
        raise ValueError(
            f"need duration_s > 0, warmup_s >= 0, timeout_s > 0; got {duration_s}, {warmup_s}, {timeout_s}"
        )
    if rate is not None and not rate > 0:
        raise ValueError(f"rate must be positive requests/s, got {rate}")
    if connections is not None and connections < concurrency:
        raise ValueError(f"connections ({connections}) must be at least concurrency ({concurrency})")
    requests = _prepare_requests(host, port, paths)
    conns = [_HttpConnection(host, port) for _ in range(connections or concurrency)]
    await _open_all(conns, timeout_s)
    per_worker = None
    if spread_workers is not None:
        per_worker = await spread(conns, _prepare_requests(host, port, [probe_path])[0], spread_workers, timeout_s)

    # warm-up, then the measured window; the workers record only while `recording` is set
    balanced = connections is not None and connections > concurrency
    run = _LoadRun(requests, timeout_s, rate, _BalancedPool(conns) if balanced else None)
    tasks = [asyncio.create_task(run.worker(None if balanced else c)) for c in conns[:concurrency]]
    if balanced:
        for c in conns:  # owned by the pool; closed here at the end
            tasks.append(asyncio.create_task(_close_at_end(run, c)))
    tasks.append(asyncio.create_task(run.watchdog(conns)))
    try:
        await asyncio.sleep(warmup_s)
        run.recording = True
        t0, cpu0 = time.perf_counter(), time.process_time()
        await asyncio.sleep(duration_s)
        run.recording = False
        t1, cpu1 = time.perf_counter(), time.process_time()
    finally:
        run.stopping = True  # ends a worker even if a cancellation got lost in a library
        for task in tasks:
            task.cancel()
        outcomes = await asyncio.gather(*tasks, return_exceptions=True)
    for outcome in outcomes:  # a worker that died of anything but its cancellation is a bug: surface it
        if isinstance(outcome, Exception):
            raise outcome

    ok = len(run.latencies_s)
    errors = sum(run.errors.values())
    duration = t1 - t0
    return LoadResult(
        requests=ok + errors,
        errors=errors,
        error_kinds=dict(run.errors),
        duration_s=duration,
        rps=ok / duration,
        latencies_ms=np.asarray(run.latencies_s, dtype=np.float64) * 1000.0,
        client_cpu_s=cpu1 - cpu0,
        connections=sum(c.opened for c in conns),
        body_bytes=run.body_bytes,
        connections_per_worker=per_worker,
    )


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's event loop when it is installed (it is not a dependency), else asyncio's default."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def run_load(
    host: str,
    port: int,
    paths: Sequence[str],
    concurrency: int,
    duration_s: float,
    warmup_s: float = 1.0,
    timeout_s: float = 5.0,
    rate: float | None = None,
    connections: int | None = None,
    spread_workers: int | None = None,
) -> LoadResult:
    """Drive ``http://host:port`` with ``GET paths[i % len(paths)]`` from ``concurrency`` keep-alive connections.

    Runs ``warmup_s`` unrecorded, then records for ``duration_s`` (seconds). ``timeout_s`` bounds each request,
    reconnect included. ``rate`` (requests/s) switches from closed loop to open-loop pacing. Raises
    ``ValueError`` for bad arguments and ``ServerUnreachableError`` when a connection cannot be opened at the start.
    ``connections`` > ``concurrency`` opens that many and balances requests over them (``_BalancedPool``);
    ``spread_workers`` first evens the connections out over that many server processes (:func:`spread`).
    Starts its own event loop: call :func:`run_load_async` from inside one.
    """
    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        return runner.run(
            run_load_async(host, port, paths, concurrency, duration_s, warmup_s, timeout_s, rate, connections,
                           spread_workers)  # fmt: skip
        )


def read_paths(paths_file: Path) -> list[str]:
    """The request paths of a file with one per line; blank lines are skipped."""
    return [line.strip() for line in paths_file.read_text(encoding="utf-8").splitlines() if line.strip()]


def main(argv: Sequence[str] | None = None) -> int:
    """The command line; returns the exit status (0, or 2 for bad input or an unreachable server)."""
    parser = argparse.ArgumentParser(
        prog="python -m recstack.offline.bench.loadgen",
        description="Drive an HTTP/1.1 server with GET requests at a fixed concurrency (or rate); "
        "print the summary as JSON on the last stdout line.",
    )
    parser.add_argument("--host", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--paths-file", type=Path, required=True, help="request paths, one per line")
    parser.add_argument("--concurrency", type=int, required=True, help="connections / workers")
    parser.add_argument("--duration", type=float, required=True, help="measured seconds, after the warm-up")
    parser.add_argument("--warmup", type=float, default=1.0, help="unrecorded seconds first (default 1)")
    parser.add_argument("--timeout", type=float, default=5.0, help="per-request timeout, seconds (default 5)")
    parser.add_argument("--rate", type=float, default=None, help="open loop at this many requests/s")
    parser.add_argument("--connections", type=int, default=None,
                        help="keep-alive connections (default: one per worker); more than --concurrency balances "
                        "each request by latency, as an L7 load balancer does")  # fmt: skip
    parser.add_argument("--spread-workers", type=int, default=None,
                        help="even the connections out over this many server processes first (GET /healthz must "
                        "name the serving process as \"worker\")")  # fmt: skip
    args = parser.parse_args(argv)
    if not 0 < args.port < 65536:
        parser.error(f"--port must be in 1..65535, got {args.port}")
    if args.concurrency < 1:
        parser.error(f"--concurrency must be at least 1, got {args.concurrency}")
    if not args.duration > 0 or not args.warmup >= 0 or not args.timeout > 0:
        parser.error("need --duration > 0, --warmup >= 0 and --timeout > 0")
    if args.rate is not None and not args.rate > 0:
        parser.error(f"--rate must be positive, got {args.rate}")
    if args.spread_workers is not None and args.spread_workers < 1:
        parser.error(f"--spread-workers must be at least 1, got {args.spread_workers}")

    try:
        paths = read_paths(args.paths_file)
    except (OSError, UnicodeDecodeError) as e:
        print(f"loadgen: cannot read paths file {args.paths_file}: {e}", file=sys.stderr)
        return 2
    if not paths:
        print(f"loadgen: no request paths in {args.paths_file}", file=sys.stderr)
        return 2
    try:
        result = run_load(
            args.host, args.port, paths, args.concurrency, args.duration, args.warmup, args.timeout, args.rate,
            args.connections, args.spread_workers,
        )
    except (ValueError, ServerUnreachableError) as e:
        print(f"loadgen: {e}", file=sys.stderr)
        return 2
    print(json.dumps(result.summary()), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
