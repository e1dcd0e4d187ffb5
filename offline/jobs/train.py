"""Training job for the first recall model (popularity + PureSVD) and its FAISS index.

Reads positive samples (click = 1) from the lake, trains, and publishes a *release*:
``<serving_dir>/releases/<version>/{model,index}``, then points ``<serving_dir>/current`` at it with an atomic
symlink swap, so a reader sees the old release or the new one, never half of each.
"""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq
from recstack.features.keys import Col, LakeTable
from recstack.models.artifact import NEIGHBORS_FILE, ArtifactError, EmbeddingArtifact, ItemNeighbors
from recstack.models.baseline import BaselineConfig, train_baseline
from recstack.models.catalog import CATALOG_DIR, Catalog, build_catalog, build_catalog_from_lake
from recstack.models.index import VectorIndex
from recstack.offline.ingest import Progress, no_progress
from recstack.offline.lake import DATE_PARTITIONING

CURRENT = "current"


def read_positives(lake_root: Path, start: dt.date | None = None, end: dt.date | None = None):  # type: ignore[no-untyped-def]
    """Clicked samples in [start, end] as an Arrow table (user_id, item_id, ts, event_date)."""
    path = Path(lake_root) / LakeTable.SAMPLES
    if not path.exists():
        raise ArtifactError(f"no samples at {path}: run `recstack samples` first")
    dataset = ds.dataset(
        path,
        format="parquet",
        partitioning=DATE_PARTITIONING,
    )
    flt = pc.field(Col.CLICK) == 1
    if start is not None:
        flt = flt & (pc.field(Col.EVENT_DATE) >= start.isoformat())
    if end is not None:
        flt = flt & (pc.field(Col.EVENT_DATE) <= end.isoformat())
    return dataset.to_table(columns=[Col.USER_ID, Col.ITEM_ID, Col.TS, Col.EVENT_DATE], filter=flt)


def release_catalog(lake_root: Path, artifact: EmbeddingArtifact) -> Catalog:
    """The serving catalog of a release: from the lake's profiles and latest graph snapshot, or (no graphs
    yet) from the item profiles with the model's popularity as the trending score."""
    try:
        return build_catalog_from_lake(lake_root, extra_item_ids=artifact.item_ids)
    except (ArtifactError, FileNotFoundError):
        import pandas as pd

        items_path = Path(lake_root) / LakeTable.ITEMS
        items = pq.read_table(items_path).to_pandas() if items_path.exists() else None
        users_path = Path(lake_root) / LakeTable.USERS
        users = pq.read_table(users_path).to_pandas() if users_path.exists() else None
        empty = pd.DataFrame({Col.USER_ID: pd.Series([], dtype="int64"), Col.ITEM_ID: pd.Series([], dtype="int64"),
                              "decayed_weight": pd.Series([], dtype="float64"),
                              "first_ts": pd.Series([], dtype="datetime64[us, UTC]")})  # fmt: skip
        cat = build_catalog(items, users, empty, None, extra_item_ids=artifact.item_ids)
        rows = cat.rows_of(artifact.popular_items)
        cat.trending[rows[rows >= 0]] = artifact.popular_scores[rows >= 0]
        cat.first_seen_s[:] = 0  # unknown: not fresh
        return cat


def publish_release(
    serving_dir: Path, version: str, artifact: EmbeddingArtifact, index: VectorIndex,
    neighbors: ItemNeighbors | None = None, catalog: Catalog | None = None,
) -> Path:  # fmt: skip
    """Write the release (model, index, optional item-to-item lists and catalog), then swap ``current`` to it."""
    release = serving_dir / "releases" / version
    artifact.save(release / "model")
    index.save(release / "index")
    if neighbors is not None:
        neighbors.save(release / NEIGHBORS_FILE)
    if catalog is not None:
        catalog.save(release / CATALOG_DIR)
    link = serving_dir / CURRENT
    tmp = serving_dir / f".{CURRENT}.{os.getpid()}"
    if tmp.is_symlink() or tmp.exists():
        tmp.unlink()
    os.symlink(os.path.relpath(release, serving_dir), tmp)
    os.replace(tmp, link)  # atomic on POSIX
    return release


def rebuild_index(release: Path, kind: str = "auto", nprobe: int | None = None) -> VectorIndex:
    """Rebuild the FAISS index of a release from its model (e.g. another kind as the catalog grows); the
    index keeps the model's version and replaces the old one atomically."""
    artifact = EmbeddingArtifact.load(release / "model")
    index = VectorIndex.build(artifact.item_vectors, artifact.item_ids, artifact.version, kind, nprobe=nprobe)
    index.save(release / "index")
    return index


def current_release(serving_dir: Path) -> Path:
    link = serving_dir / CURRENT
    if not link.exists():
        raise ArtifactError(f"no release at {link}: run `recstack train` first")
    return link.resolve()


def run_train_job(
    lake_root: Path, serving_dir: Path, cfg: BaselineConfig | None = None,
    start: dt.date | None = None, end: dt.date | None = None, progress: Progress = no_progress,
) -> Path:  # fmt: skip
    """Train on the samples of [start, end] and publish a release; returns its directory."""
    cfg = cfg or BaselineConfig()
    table = read_positives(lake_root, start, end)
    if table.num_rows == 0:
        raise ArtifactError("no positive samples in the requested range: nothing to train on")
    dates = sorted(table.column(Col.EVENT_DATE).unique().to_pylist())
    progress(f"training baseline on {table.num_rows:,} positive samples from {len(dates)} partitions")
    version = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S%f")
    artifact = train_baseline(
        table[Col.USER_ID].to_numpy(), table[Col.ITEM_ID].to_numpy(),
        table[Col.TS].cast("int64").to_numpy() // 1_000_000, cfg, version,
        lineage={"table": LakeTable.SAMPLES, "partitions": [dates[0], dates[-1]], "partition_count": len(dates)},
    )  # fmt: skip
    index = VectorIndex.build(artifact.item_vectors, artifact.item_ids, version)
    release = publish_release(serving_dir, version, artifact, index, catalog=release_catalog(lake_root, artifact))
    progress(f"published release {version}: {len(artifact.user_ids):,} users, {len(artifact.item_ids):,} items, "
             f"dim {artifact.dim}, index {index.kind}")  # fmt: skip
    return release
