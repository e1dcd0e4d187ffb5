"""The package type-checks (mypy, with the pydantic plugin) and lints (ruff) clean, as it did when this test
was added: a new error anywhere in the package fails the suite. Both tools are pinned in the ``test`` extra
so a new release cannot change the verdict under the same code."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ["features", "models", "online", "offline", "control"]


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=900)


@pytest.mark.timeout(900)
def test_mypy_finds_no_errors_in_the_package() -> None:
    out = _run("mypy", "--no-incremental", *PACKAGE)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]
    assert "Success: no issues found" in out.stdout


def test_ruff_finds_no_lint_errors() -> None:
    out = _run("ruff", "check", *PACKAGE, "tests", "benchmarks", "airflow_dags")
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]
