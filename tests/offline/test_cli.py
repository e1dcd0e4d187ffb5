"""The console script as a user runs it (subprocesses)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

COMMANDS = [[], ["demo"], ["ingest"], ["ingest", "movielens"], ["ingest", "synthetic"], ["samples"], ["features"],
            ["sessions"], ["graphs"], ["pipeline"], ["bench"], ["bench", "features"], ["bench", "embeddings"], ["bench", "serve"], ["bench", "ctr"], ["realtime"], ["promote"], ["index"], ["index", "build"], ["train"], ["serve"],
            ["redis"], ["bench", "pacing"], ["bench", "fraud"], ["pacing", "autotune"], ["export", "recommendations"],
            ["export", "evaluate"], ["fraud-job"], ["review-items"]]  # fmt: skip


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
    r = _run(["train", "--model", "deepwalk", "--home", str(tmp_path)])
    assert r.returncode == 2 and "no graphs under" in r.stderr
    r = _run(["train", "--model", "graphsage", "--item2vec", "--home", str(tmp_path)])
    assert r.returncode == 2 and "--item2vec applies to --model deepwalk" in r.stderr
    r = _run(["samples", "--start", "yesterday"])
    assert r.returncode == 2 and "not a date" in r.stderr
    r = _run(["pipeline", "--home", str(tmp_path)])
    assert r.returncode != 0 and "no events in the lake" in r.stderr
    assert _run(["ingest", "synthetic", "--events", "2000", "--home", str(tmp_path)]).returncode == 0
    r = _run(["pipeline", "--home", str(tmp_path), "--start", "2026-01-05", "--end", "2026-01-01"])
    assert r.returncode == 2 and "is after --end" in r.stderr
    r = _run(["sessions", "--home", str(tmp_path), "--gap", "90000"])
    assert r.returncode == 2 and "session_gap_s" in r.stderr
    r = _run(["export", "recommendations", "--data", str(tmp_path), "--out", str(tmp_path / "r.csv"),
              "--deepwalk-return-p", "1,-4"])  # fmt: skip
    assert r.returncode == 2 and "'-4' must be positive" in r.stderr


@pytest.mark.integration
def test_bench_features_prints_a_json_last_line(tmp_path: Path) -> None:
    r = _run(["bench", "features", "--events", "5000", "--json", "--home", str(tmp_path)], timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    result = json.loads(r.stdout.strip().splitlines()[-1])
    for key in ("events", "seconds", "events_per_s", "peak_rss_mb", "stage_seconds"):
        assert key in result, key
    assert set(result["stage_seconds"]) == {"samples", "features", "sessions", "graphs"}
    assert result["events"] > 4000 and result["samples"] > 0 and result["peak_rss_mb"] > 100
    assert result["events_per_s"] == round(result["events"] / result["seconds"])
    assert "[4/4] graphs" in r.stderr  # progress goes to stderr in --json mode


@pytest.mark.integration
def test_bench_embeddings_prints_the_json_keys(tmp_path: Path) -> None:
    """A small split directory (two planted communities) through the real bench command."""
    import numpy as np

    rng = np.random.default_rng(0)
    rows = []
    for u in range(1, 81):
        block = 1 if u <= 40 else 31
        for i in rng.choice(30, 12, replace=False):
            rows.append((u, block + int(i), int(rng.integers(1, 6)), 880_000_000 + len(rows)))
    rows = [rows[k] for k in rng.permutation(len(rows))]
    split = tmp_path / "split"
    split.mkdir()
    count: dict[int, int] = {}
    test_mask = np.zeros(len(rows), bool)
    for k, (u, *_rest) in enumerate(rows):  # each user's first 3 rows are its test rows
        count[u] = count.get(u, 0) + 1
        test_mask[k] = count[u] <= 3
    for name, mask in (("train.tsv", ~test_mask), ("test.tsv", test_mask)):
        (split / name).write_text("".join("\t".join(map(str, r)) + "\n" for r, m in zip(rows, mask, strict=True) if m))
    r = _run(["bench", "embeddings", "--data", str(split), "--json", "--home", str(tmp_path)], timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    result = json.loads(r.stdout.strip().splitlines()[-1])
    assert result["split"] == "reference" and result["users"] == 80
    for model in ("deepwalk", "graphsage", "ials", "ease_rank64"):
        assert {"ndcg@10", "recall@10", "precision@10", "coverage_items", "train_s"} <= set(result[model])
        # planted communities: far better than the popularity baseline's near-random ranking here
        assert result[model]["ndcg@10"] > result["popularity"]["ndcg@10"] + 0.1, result
    r = _run(["bench", "embeddings", "--data", str(tmp_path / "nope"), "--json"])
    assert r.returncode == 2 and "not a directory" in r.stderr


@pytest.mark.integration
def test_bench_ctr_prints_the_json_keys(tmp_path: Path) -> None:
    """A small MovieLens-100K-format directory with a planted taste (gender x genre) through the command."""
    import numpy as np

    rng = np.random.default_rng(0)
    data = tmp_path / "ml"
    data.mkdir()
    rows = []
    for u in range(1, 301):
        for i in rng.choice(np.arange(1, 121), 25, replace=False):
            good = (u % 2 == 0) == (i % 3 == 0)  # men like genre 1, women the others
            rating = int(rng.choice([4, 5]) if rng.random() < (0.85 if good else 0.2) else rng.choice([1, 2]))
            rows.append(f"{u}\t{i}\t{rating}\t{880_000_000 + len(rows)}")
    (data / "u.data").write_text("\n".join(rows) + "\n")
    (data / "u.user").write_text("".join(f"{u}|{20 + u % 40}|{'MF'[u % 2]}|student|{10000 + u}\n" for u in range(1, 301)))
    flags = lambda i: "|".join("1" if j == 1 + i % 3 else "0" for j in range(19))  # noqa: E731
    (data / "u.item").write_text("".join(f"{i}|Film {i} (1995)|01-Jan-1995||http://x|{flags(i)}\n" for i in range(1, 121)))
    r = _run(["bench", "ctr", "--data", str(data), "--json", "--home", str(tmp_path)], timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    result = json.loads(r.stdout.strip().splitlines()[-1])
    for model in ("widedeep", "moe"):
        assert {"test_auc", "test_logloss", "samples_per_s"} <= set(result[model]), result
        assert result[model]["test_auc"] > 0.75  # the planted taste is learnt
    assert "like_auc" in result["moe"] and set(result["moe"]["expert_utilisation"]) == {"click", "like"}
    r = _run(["bench", "ctr", "--data", str(tmp_path / "nope"), "--json"])
    assert r.returncode == 2 and "not a MovieLens-100K directory" in r.stderr


@pytest.mark.integration
def test_bench_serve_prints_the_json_keys(tmp_path: Path) -> None:
    """A small catalog through the real harness: Redis, the multi-worker service, the load-generator process."""
    r = _run(["bench", "serve", "--items", "3000", "--users", "2000", "--duration", "3", "--workers", "1",
              "--concurrency", "4", "--json"], timeout=600)  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    result = json.loads(r.stdout.strip().splitlines()[-1])
    for key in ("rps", "p50_ms", "p95_ms", "p99_ms", "errors", "floor_p50_ms", "floor_p99_ms"):
        assert key in result, key
    assert result["errors"] == 0 and result["requests"] > 0 and result["rps"] > 0
    assert result["p50_ms"] <= result["p95_ms"] <= result["p99_ms"]
    assert 0 < result["floor_p50_ms"] <= result["floor_p99_ms"]
    assert result["candidates_ranked_mean"] > 100 and result["index"] == "flat"


def test_realtime_consumer_command(tmp_path: Path, redis_url: str) -> None:
    import time

    from recstack.features.bus import open_bus
    from recstack.features.schema import Event

    prefix = f"cli{time.time_ns()}"
    bus = open_bus(redis_url, key_prefix=prefix)
    bus.ensure_topic("events")
    shown = [Event(event_id=f"i-{i}", event_type="impression", ts="2026-01-03T09:59:50Z", user_id=1, item_id=i)
             for i in range(20)]  # fmt: skip
    clicks = [Event(event_id=f"c-{i}", event_type="click", ts="2026-01-03T10:00:00Z", user_id=1, item_id=i)
              for i in range(5)]  # fmt: skip
    blind = Event(event_id="c-x", event_type="click", ts="2026-01-03T10:00:01Z", user_id=1, item_id=99)
    bus.publish("events", [e.to_json_bytes() for e in [*shown, *clicks, blind]] + [b"{not json"], None)
    bus.close()
    env = {"RECSTACK_REDIS__URL": redis_url, "RECSTACK_REDIS__KEY_PREFIX": prefix,
           "RECSTACK_REALTIME__POLL_TIMEOUT_S": "0.2"}  # fmt: skip
    r = _run(["realtime", "consume", "--seconds", "4", "--home", str(tmp_path)], env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    counters = json.loads(r.stdout.strip().splitlines()[-1])
    # the impression-less click is screened out by anti-fraud (audited, not applied)
    assert counters["processed"] == 26 and counters["malformed"] == 1 and counters["quarantined"] == 1
    assert counters["changed"] == 25


def test_demo_no_serve_end_to_end(tmp_path: Path, redis_url: str) -> None:
    r = _run(["demo", "--no-serve", "--events", "30000", "--home", str(tmp_path)],
             env={"RECSTACK_REDIS__URL": redis_url}, timeout=300)  # fmt: skip
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    out = r.stdout
    for step in range(1, 7):
        assert f"[{step}/6]" in out
    assert "via faiss/user-embedding" in out
    assert "cold-start (unknown) user" in out and ("via trending/decayed" in out or "via fresh/cold-start" in out)
    assert (tmp_path / "demo" / "serving" / "current" / "model" / "manifest.json").exists()
