"""The vector index artifact: FAISS over item vectors, inner-product metric, versioned with its model.

Kinds, and the catalog sizes ``auto`` picks them for:

* ``flat`` (up to ``FLAT_MAX`` items): exact ``IndexFlatIP``;
* ``hnsw`` (up to ``HNSW_MAX``): graph search, M=32, efSearch 128; no training, fast and accurate, memory
  ``~(4d + 256)`` bytes per item;
* ``ivf`` (up to ``IVF_MAX``): ``IndexIVFFlat`` with ``nlist ≈ 4√n`` k-means cells, ``nprobe`` cells searched;
* ``ivfpq`` (above): ``IndexIVFPQ``, vectors compressed to ``m`` bytes (product quantisation), for catalogs
  whose raw vectors no longer fit in memory.

IVF kinds are trained on a seeded sample of at most 256 vectors per cell. The search parameters (``nprobe``,
``efSearch``) are stored in the manifest and restored at load. On a machine with CUDA and faiss-gpu, flat and
IVF indexes move to the GPU at load time (HNSW has no GPU version and stays on the CPU).
"""

from __future__ import annotations

import json
import math
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import faiss
import numpy as np
from recstack.models.artifact import FORMAT_VERSION, ArtifactError, read_manifest, replace_dir, sha256_file

FLAT_MAX = 50_000
HNSW_MAX = 2_000_000
IVF_MAX = 20_000_000
KINDS = ("flat", "hnsw", "ivf", "ivfpq")
GPU_KINDS = ("flat", "ivf", "ivfpq")


def _gpu_available() -> bool:
    return hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0


def auto_kind(n: int) -> str:
    if n <= FLAT_MAX:
        return "flat"
    if n <= HNSW_MAX:
        return "hnsw"
    return "ivf" if n <= IVF_MAX else "ivfpq"


def _pq_bytes(d: int) -> int:
    """Sub-quantisers for IVF-PQ: a divisor of ``d`` giving 2-8 dimensions each (at most 64 bytes)."""
    for m in (64, 32, 16, 8, 4, 2, 1):
        if d % m == 0 and d // m >= 2:
            return m
    return 1


def _apply(index: faiss.Index, params: dict[str, Any], space: Any = None) -> None:
    """Set the stored search parameters (``faiss.GpuParameterSpace`` for an index on the GPU)."""
    space = space or faiss.ParameterSpace()
    if "nprobe" in params:
        space.set_index_parameter(index, "nprobe", int(params["nprobe"]))
    if "ef_search" in params:
        space.set_index_parameter(index, "efSearch", int(params["ef_search"]))


@dataclass
class VectorIndex:
    """FAISS index plus the item id of each row. ``search`` returns (ids, scores), each (Q, k)."""

    index: faiss.Index
    item_ids: np.ndarray
    model_version: str
    kind: str
    params: dict[str, Any] = field(default_factory=dict)
    on_gpu: bool = False

    @classmethod
    def build(
        cls, vectors: np.ndarray, item_ids: np.ndarray, model_version: str, kind: str = "auto", seed: int = 42,
        nprobe: int | None = None,
    ) -> VectorIndex:  # fmt: skip
        x = np.ascontiguousarray(vectors, dtype=np.float32)
        n, d = x.shape
        if len(item_ids) != n:
            raise ValueError(f"{len(item_ids)} item ids for {n} vectors")
        if kind == "auto":
            kind = auto_kind(n)
        params: dict[str, Any] = {}
        if kind == "flat":
            index: faiss.Index = faiss.IndexFlatIP(d)
        elif kind == "hnsw":
            index = faiss.IndexHNSWFlat(d, 32, faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efConstruction = 80
            params["ef_search"] = 128
        elif kind in ("ivf", "ivfpq"):
            nlist = max(1, min(int(4 * math.sqrt(n)), n // 39 or 1))  # faiss wants >= 39 points per cell
            quantizer = faiss.IndexFlatIP(d)
            if kind == "ivf":
                index = faiss.IndexIVFFlat(quantizer, d, nlist, faiss.METRIC_INNER_PRODUCT)
            else:
                m = _pq_bytes(d)
                index = faiss.IndexIVFPQ(quantizer, d, nlist, m, 8, faiss.METRIC_INNER_PRODUCT)
                params["pq_bytes"] = m
            sample = x
            if n > 256 * nlist:
                sample = x[np.random.default_rng(seed).choice(n, 256 * nlist, replace=False)]
            index.cp.seed = seed
            index.train(sample)
            params.update({"nlist": nlist, "nprobe": nprobe or min(nlist, max(8, nlist // 16))})
        else:
            raise ValueError(f"unknown index kind {kind!r}: {', '.join(KINDS)} or auto")
        index.add(x)
        _apply(index, params)
        return cls(
            index=index, item_ids=np.asarray(item_ids, dtype=np.int64), model_version=model_version, kind=kind,
            params=params,
        )  # fmt: skip

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        q = np.ascontiguousarray(queries, dtype=np.float32).reshape(-1, self.index.d)
        scores, rows = self.index.search(q, min(k, len(self.item_ids)))
        ids = np.where(rows >= 0, self.item_ids[np.maximum(rows, 0)], -1)
        return ids, scores

    def save(self, path: Path | str) -> None:
        """Write atomically: a temp directory renamed into place."""
        path = Path(path)
        tmp = path.parent / f".{path.name}.{uuid.uuid4().hex}"
        tmp.mkdir(parents=True)
        cpu = faiss.index_gpu_to_cpu(self.index) if self.on_gpu else self.index
        faiss.write_index(cpu, str(tmp / "index.faiss"))
        np.save(tmp / "item_ids.npy", self.item_ids)
        manifest = {
            "format_version": FORMAT_VERSION,
            "kind": "vector-index",
            "index_kind": self.kind,
            "params": self.params,
            "model_version": self.model_version,
            "dim": int(self.index.d),
            "items": len(self.item_ids),
            "sha256": {n: sha256_file(tmp / n) for n in ("index.faiss", "item_ids.npy")},
        }
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2))
        replace_dir(tmp, path)

    @classmethod
    def load(cls, path: Path | str, use_gpu: bool | None = None) -> VectorIndex:
        path = Path(path)
        manifest = read_manifest(path, kind="vector-index")
        try:
            index = faiss.read_index(str(path / "index.faiss"))
        except RuntimeError as exc:
            raise ArtifactError(f"cannot read {path / 'index.faiss'}: {exc}") from exc
        item_ids = np.load(path / "item_ids.npy")
        if index.ntotal != len(item_ids) or index.d != manifest["dim"]:
            raise ArtifactError(f"{path}: index rows / dim do not match the manifest")
        kind, params = manifest["index_kind"], manifest.get("params", {})
        if kind not in KINDS:
            raise ArtifactError(f"{path}: unknown index kind {kind!r}")
        _apply(index, params)
        on_gpu = bool((use_gpu if use_gpu is not None else _gpu_available()) and kind in GPU_KINDS)
        if on_gpu:
            index = faiss.index_cpu_to_gpu(faiss.StandardGpuResources(), 0, index)
            _apply(index, params, faiss.GpuParameterSpace())
        return cls(index=index, item_ids=item_ids, model_version=manifest["model_version"], kind=kind,
                   params=params, on_gpu=on_gpu)  # fmt: skip
