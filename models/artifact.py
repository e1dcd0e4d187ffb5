"""The model artifact contract: what a trained recall model hands to index builds and the online service.

A directory with ``arrays.npz`` and ``manifest.json``. The manifest records the format version, model name
and version, embedding dimension, lineage (which lake partitions were read) and the SHA-256 of the arrays;
``load`` refuses a directory whose checksum, format or shapes do not match, so a corrupt artifact never serves.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import shutil
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

FORMAT_VERSION = 1


class ArtifactError(RuntimeError):
    """The artifact is missing, corrupt or of an incompatible format."""


def replace_dir(tmp: Path, path: Path) -> None:
    """Move the finished directory ``tmp`` to ``path``; an existing ``path`` is swapped out first, so a
    reader sees the old directory or the new one (the gap between the two renames is microseconds)."""
    if path.exists():
        old = path.parent / f".{path.name}.old.{uuid.uuid4().hex}"
        os.replace(path, old)
        os.replace(tmp, path)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, path)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@dataclass
class EmbeddingArtifact:
    """User and item embeddings plus the popularity ranking and each user's seen items.

    Shapes: ``user_vectors`` (U, d) float32 aligned with ``user_ids`` (U,) int64; ``item_vectors`` (I, d)
    aligned with ``item_ids`` (I,); ``popular_items`` / ``popular_scores`` (P,) best first; the seen items of
    ``user_ids[u]`` are ``seen_items[seen_indptr[u]:seen_indptr[u+1]]`` (CSR).
    """

    model: str
    version: str
    user_ids: np.ndarray
    user_vectors: np.ndarray
    item_ids: np.ndarray
    item_vectors: np.ndarray
    popular_items: np.ndarray
    popular_scores: np.ndarray
    seen_indptr: np.ndarray
    seen_items: np.ndarray
    lineage: dict[str, Any] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)
    created_at: str = field(default_factory=lambda: dt.datetime.now(dt.UTC).isoformat())

    @property
    def dim(self) -> int:
        return int(self.item_vectors.shape[1])

    def validate(self) -> None:
        u, i = len(self.user_ids), len(self.item_ids)
        checks = [
            (self.user_vectors.shape == (u, self.dim), "user_vectors shape"),
            (self.item_vectors.shape == (i, self.dim), "item_vectors shape"),
            (len(self.popular_items) == len(self.popular_scores), "popularity arrays"),
            (len(self.seen_indptr) == u + 1, "seen_indptr length"),
            (int(self.seen_indptr[-1]) == len(self.seen_items) if u else True, "seen_indptr end"),
            (bool(np.isfinite(self.item_vectors).all()), "item_vectors finite"),
            (bool(np.isfinite(self.user_vectors).all()), "user_vectors finite"),
        ]
        bad = [name for ok, name in checks if not ok]
        if bad:
            raise ArtifactError(f"inconsistent artifact {self.model}/{self.version}: {', '.join(bad)}")

    def seen(self, row: int) -> np.ndarray:
        return self.seen_items[self.seen_indptr[row] : self.seen_indptr[row + 1]]

    def save(self, path: Path | str) -> Path:
        """Write atomically: a temp directory renamed into place."""
        self.validate()
        path = Path(path)
        tmp = path.parent / f".{path.name}.{uuid.uuid4().hex}"
        tmp.mkdir(parents=True)
        arrays = tmp / "arrays.npz"
        np.savez(
            arrays,
            user_ids=self.user_ids.astype(np.int64), user_vectors=self.user_vectors.astype(np.float32),
            item_ids=self.item_ids.astype(np.int64), item_vectors=self.item_vectors.astype(np.float32),
            popular_items=self.popular_items.astype(np.int64), popular_scores=self.popular_scores.astype(np.float32),
            seen_indptr=self.seen_indptr.astype(np.int64), seen_items=self.seen_items.astype(np.int64),
        )  # fmt: skip
        fields = {
            "model": self.model,
            "version": self.version,
            "dim": self.dim,
            "users": len(self.user_ids),
            "items": len(self.item_ids),
            "created_at": self.created_at,
            "lineage": self.lineage,
            "params": self.params,
        }
        return finish_artifact(tmp, path, "embedding", [arrays.name], fields)

    @classmethod
    def load(cls, path: Path | str) -> EmbeddingArtifact:
        path = Path(path)
        manifest = read_manifest(path, kind="embedding")
        try:
            with np.load(path / "arrays.npz") as z:
                arrays = {k: z[k] for k in z.files}
        except Exception as exc:  # numpy raises several types for a damaged zip
            raise ArtifactError(f"cannot read {path / 'arrays.npz'}: {exc}") from exc
        art = cls(
            model=manifest["model"], version=manifest["version"], lineage=manifest.get("lineage", {}),
            params=manifest.get("params", {}), created_at=manifest["created_at"], **arrays,
        )  # fmt: skip
        art.validate()
        return art


def finish_artifact(tmp: Path, path: Path, kind: str, files: list[str], fields: dict[str, Any]) -> Path:
    """Write the manifest of the artifact built in ``tmp`` (format version, ``kind``, ``fields`` and the
    SHA-256 of ``files``), then move ``tmp`` to ``path`` atomically; ``read_manifest`` checks it back."""
    manifest = {"format_version": FORMAT_VERSION, "kind": kind, **fields,
                "sha256": {name: sha256_file(tmp / name) for name in files}}  # fmt: skip
    (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2, default=str))
    replace_dir(tmp, path)
    return path


def read_manifest(path: Path, kind: str) -> dict[str, Any]:
    """The manifest of the artifact at ``path``, after checking kind, format version and file checksums."""
    mpath = path / "manifest.json"
    if not mpath.exists():
        raise ArtifactError(f"no artifact at {path} (manifest.json missing)")
    try:
        manifest: dict[str, Any] = json.loads(mpath.read_text())
    except json.JSONDecodeError as exc:
        raise ArtifactError(f"corrupt manifest {mpath}: {exc}") from exc
    if manifest.get("kind") != kind:
        raise ArtifactError(f"{path} holds a {manifest.get('kind')!r} artifact, expected {kind!r}")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise ArtifactError(
            f"{path}: format version {manifest.get('format_version')} is not {FORMAT_VERSION}"
        )
    for name, digest in manifest.get("sha256", {}).items():
        fpath = path / name
        if not fpath.exists() or sha256_file(fpath) != digest:
            raise ArtifactError(f"{fpath} is missing or does not match its checksum")
    return manifest


NEIGHBORS_FILE = "item_neighbors.npz"


@dataclass(frozen=True)
class ItemNeighbors:
    """Precomputed item-to-item lists of a release: row r holds the neighbours of ``item_ids[r]`` (-1 padded)."""

    item_ids: np.ndarray
    neighbors: np.ndarray
    scores: np.ndarray

    def save(self, path: Path) -> None:
        np.savez(path, item_ids=self.item_ids, neighbors=self.neighbors, scores=self.scores)

    @classmethod
    def load(cls, path: Path) -> ItemNeighbors:
        try:
            with np.load(path) as z:
                out = cls(z["item_ids"], z["neighbors"], z["scores"])
        except Exception as exc:  # a damaged zip raises several types
            raise ArtifactError(f"cannot read item neighbours {path}: {exc}") from exc
        if out.neighbors.shape != out.scores.shape or len(out.neighbors) != len(out.item_ids):
            raise ArtifactError(f"{path}: neighbour arrays do not match")
        order = np.argsort(out.item_ids)
        return cls(out.item_ids[order], out.neighbors[order], out.scores[order])

    def of(self, item_id: int) -> tuple[np.ndarray, np.ndarray]:
        pos = int(np.searchsorted(self.item_ids, item_id))
        if pos >= len(self.item_ids) or self.item_ids[pos] != item_id:
            return np.empty(0, np.int64), np.empty(0, np.float32)
        keep = self.neighbors[pos] >= 0
        return self.neighbors[pos][keep], self.scores[pos][keep]
