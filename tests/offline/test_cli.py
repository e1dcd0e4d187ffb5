"""The console script as a user runs it (subprocesses)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

COMMANDS = [[], ["demo"], ["ingest"], ["ingest", "movielens"], ["ingest", "synthetic"], ["samples"], ["train"],
            ["serve"], ["redis"]]  # fmt: skip


def _run(
    args: list[str], env: dict[str, str] | None = None, timeout: int = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "recstack.offline.cli", *args], capture_output=True, text=True, timeout=timeout,
        env={**os.environ, **(env or {})},
    )  # fmt: skip


@pytest.mark.parametrize("cmd", COMMANDS, ids=lambda c: " ".join(c) or "recstack")
def test_help_on_every_command(cmd: list[str]) -> None:
    r = _run([*cmd, "--help"])
    assert r.returncode == 0, r.stderr
    assert "usage: recstack" in r.stdout


def test_bad_input_gives_a_clear_error(tmp_path: Path) -> None:
    r = _run(["ingest", "movielens", str(tmp_path / "missing"), "--home", str(tmp_path)])
    assert r.returncode == 2
    assert "is not a directory" in r.stderr
    r = _run(["samples", "--start", "yesterday"])
    assert r.returncode == 2 and "not a date" in r.stderr


@pytest.mark.integration
def test_demo_no_serve_end_to_end(tmp_path: Path, redis_url: str) -> None:
    r = _run(["demo", "--no-serve", "--events", "30000", "--home", str(tmp_path)],
             env={"RECSTACK_REDIS__URL": redis_url}, timeout=300)  # fmt: skip
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    out = r.stdout
    for step in range(1, 7):
        assert f"[{step}/6]" in out
    assert "via faiss/user-embedding" in out
    assert "cold-start (unknown) user" in out and "via popular/decayed" in out
    assert (tmp_path / "demo" / "serving" / "current" / "model" / "manifest.json").exists()
