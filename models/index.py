"""The vector index artifact: FAISS over item vectors, inner-product metric.

The index type follows catalog size: exact ``IndexFlatIP`` up to ``FLAT_MAX`` items, HNSW (M=32) above. On a
machine with CUDA and faiss-gpu, flat indexes are moved to the GPU at load time.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np
from recstack.models.artifact import FORMAT_VERSION, ArtifactError, read_manifest, sha256_file

FLAT_MAX = 50_000


def _gpu_available() -> bool:
    return hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0


@dataclass
class VectorIndex:
    """FAISS index plus the item id of each row. ``search`` returns (ids, scores), each (Q, k)."""

    index: faiss.Index
    item_ids: np.ndarray
    model_version: str
    kind: str

    @classmethod
    def build(
        cls, vectors: np.ndarray, item_ids: np.ndarray, model_version: str, kind: str = "auto"
    ) -> VectorIndex:
        x = np.ascontiguousarray(vectors, dtype=np.float32)
        d = x.shape[1]
        if kind == "auto":
            kind = "flat" if len(x) <= FLAT_MAX else "hnsw"
        if kind == "flat":
            index: faiss.Index = faiss.IndexFlatIP(d)
        elif kind == "hnsw":
            index = faiss.IndexHNSWFlat(d, 32, faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efConstruction = 80
            index.hnsw.efSearch = 128
        else:
            raise ValueError(f"unknown index kind {kind!r}: flat, hnsw or auto")
        index.add(x)
        return cls(
            index=index, item_ids=np.asarray(item_ids, dtype=np.int64), model_version=model_version, kind=kind
        )

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        q = np.ascontiguousarray(queries, dtype=np.float32).reshape(-1, self.index.d)
        scores, rows = self.index.search(q, min(k, len(self.item_ids)))
        ids = np.where(rows >= 0, self.item_ids[np.maximum(rows, 0)], -1)
        return ids, scores

    def save(self, path: Path | str) -> None:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        cpu = (
            faiss.index_gpu_to_cpu(self.index) if _gpu_available() and self.kind == "flat-gpu" else self.index
        )
        faiss.write_index(cpu, str(path / "index.faiss"))
        np.save(path / "item_ids.npy", self.item_ids)
        manifest = {
            "format_version": FORMAT_VERSION,
            "kind": "vector-index",
            "index_kind": self.kind if self.kind != "flat-gpu" else "flat",
            "model_version": self.model_version,
            "dim": int(self.index.d),
            "items": len(self.item_ids),
            "sha256": {n: sha256_file(path / n) for n in ("index.faiss", "item_ids.npy")},
        }
        (path / "manifest.json").write_text(json.dumps(manifest, indent=2))

    @classmethod
    def load(cls, path: Path | str, use_gpu: bool | None = None) -> VectorIndex:
        path = Path(path)
        manifest = read_manifest(path, kind="vector-index")
        index = faiss.read_index(str(path / "index.faiss"))
        item_ids = np.load(path / "item_ids.npy")
        if index.ntotal != len(item_ids) or index.d != manifest["dim"]:
            raise ArtifactError(f"{path}: index rows / dim do not match the manifest")
        kind = manifest["index_kind"]
        if (use_gpu if use_gpu is not None else _gpu_available()) and kind == "flat":
            index = faiss.index_cpu_to_gpu(faiss.StandardGpuResources(), 0, index)
            kind = "flat-gpu"
        return cls(index=index, item_ids=item_ids, model_version=manifest["model_version"], kind=kind)
