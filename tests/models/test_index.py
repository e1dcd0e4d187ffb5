"""FAISS index kinds against exact search, their persistence, and the index-build command."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from recstack.models.artifact import ArtifactError
from recstack.models.evaluation import Interactions
from recstack.models.index import FLAT_MAX, HNSW_MAX, IVF_MAX, VectorIndex, auto_kind
from recstack.models.recall import RecallData
from recstack.offline.jobs.train import publish_release
from recstack.online.pipeline import ServingRelease


def _clustered(n: int, d: int = 16, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(40, d))
    x = centers[rng.integers(0, 40, n)] + 0.3 * rng.normal(size=(n, d))
    q = x[rng.choice(n, 100)] + 0.05 * rng.normal(size=(100, d))
    return x.astype(np.float32), q.astype(np.float32)


def _recall(got: np.ndarray, exact: np.ndarray) -> float:
    return float(np.mean([len(set(a) & set(b)) / len(b) for a, b in zip(got, exact, strict=True)]))


def test_auto_kind_follows_catalog_size() -> None:
    assert auto_kind(10) == auto_kind(FLAT_MAX) == "flat"
    assert auto_kind(FLAT_MAX + 1) == auto_kind(HNSW_MAX) == "hnsw"
    assert auto_kind(HNSW_MAX + 1) == auto_kind(IVF_MAX) == "ivf"
    assert auto_kind(IVF_MAX + 1) == "ivfpq"


@pytest.mark.parametrize(("kind", "min_recall"), [("flat", 1.0), ("hnsw", 0.95), ("ivf", 0.95), ("ivfpq", 0.5)])
def test_each_kind_finds_the_exact_neighbours(kind: str, min_recall: float, tmp_path: Path) -> None:
    x, q = _clustered(6000)
    ids = np.arange(len(x)) * 3 + 7  # ids are not rows
    exact = np.argsort(-(q @ x.T), axis=1)[:, :10] * 3 + 7
    index = VectorIndex.build(x, ids, "v1", kind)
    got, scores = index.search(q, 10)
    assert index.kind == kind and got.shape == (100, 10)
    assert _recall(got, exact) >= min_recall
    assert np.all(np.diff(scores, axis=1) <= 1e-5)  # best first
    index.save(tmp_path / "index")
    loaded = VectorIndex.load(tmp_path / "index", use_gpu=False)
    assert loaded.kind == kind and loaded.params == index.params and loaded.model_version == "v1"
    assert np.array_equal(loaded.search(q, 10)[0], got)  # search parameters (nprobe, efSearch) restored


def test_corrupt_or_unknown_index_is_refused(tmp_path: Path) -> None:
    x, _ = _clustered(500)
    VectorIndex.build(x, np.arange(500), "v1", "flat").save(tmp_path / "index")
    manifest = json.loads((tmp_path / "index" / "manifest.json").read_text())
    (tmp_path / "index" / "index.faiss").write_bytes(b"broken")
    with pytest.raises(ArtifactError, match="checksum"):
        VectorIndex.load(tmp_path / "index")
    with pytest.raises(ValueError, match="unknown index kind"):
        VectorIndex.build(x, np.arange(500), "v1", "lsh")
    with pytest.raises(ValueError, match="item ids"):
        VectorIndex.build(x, np.arange(10), "v1")
    assert manifest["index_kind"] == "flat" and manifest["model_version"] == "v1"


def test_index_build_command_rebuilds_a_release(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    n_items = 3000
    users, items = rng.integers(0, 200, 20_000), rng.integers(0, n_items, 20_000)
    data = RecallData.build(Interactions(users, items, np.arange(20_000), np.ones(20_000)))
    x, _ = _clustered(data.num_items)
    art = data.artifact("test", "v7", x[rng.integers(0, len(x), data.num_users)], x, {})
    release = publish_release(tmp_path / "serving", "v7", art, VectorIndex.build(x, data.item_ids, "v7"))
    r = subprocess.run(
        [sys.executable, "-m", "recstack.offline.cli", "index", "build", "--home", str(tmp_path), "--kind", "ivf",
         "--nprobe", "12"], capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["kind"] == "ivf" and out["params"]["nprobe"] == 12 and out["model_version"] == "v7"
    served = ServingRelease.load(release)
    assert served.index.kind == "ivf" and served.version == "v7"
    vector, _ = served.user_history(int(art.user_ids[0]))
    assert vector is not None and len(served.index.search(vector, 10)[0][0]) == 10
    r = subprocess.run([sys.executable, "-m", "recstack.offline.cli", "index", "build", "--release",
                        str(tmp_path / "nope")], capture_output=True, text=True, timeout=60)  # fmt: skip
    assert r.returncode == 2 and "is not a release" in r.stderr
