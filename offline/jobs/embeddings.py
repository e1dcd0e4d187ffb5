"""Training jobs for the graph-embedding recall models (DeepWalk, GraphSAGE) and the lookalike model.

Input is what the Spark jobs wrote: the latest ``graphs/as_of=D/`` (user–item edges with strengths,
user–user lookalike edges), the profile tables (node features) and ``sessions/`` (item2vec sequences). A run:

1. holds out the newest ``holdout`` fraction of user–item edges (by first interaction time), trains on the
   rest and measures Recall / NDCG / HitRate / MAP @ 10, coverage and popularity bias on the held-out edges;
2. trains again on every edge, writes the model artifact, the item-to-item neighbour lists (and, for
   GraphSAGE, the encoder state for inductive inference and the lookalike user embeddings);
3. logs parameters, metrics, artifacts and lineage (graph snapshot and the partitions it was built from) to
   MLflow and registers a new version of ``recstack-<model>``;
4. with ``publish``, builds the FAISS index and swaps the serving release to it (the online recall's input).
"""

from __future__ import annotations

import datetime as dt
import json
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import torch
from recstack.features.keys import Col, LakeTable
from recstack.features.settings import Settings
from recstack.models.artifact import NEIGHBORS_FILE, ArtifactError, EmbeddingArtifact, ItemNeighbors
from recstack.models.catalog import CATALOG_DIR
from recstack.models.evaluation import Interactions, evaluate, popularity_topk, time_split
from recstack.models.index import VectorIndex
from recstack.models.node_features import FeatureEncoder
from recstack.models.recall import (
    DEFAULT_DEEPWALK,
    DEFAULT_GRAPHSAGE,
    RecallData,
    evaluate_artifact,
    fit_deepwalk,
    fit_graphsage,
    fit_lookalike,
    item_neighbors,
)
from recstack.models.tracking import log_training_run
from recstack.offline.ingest import Progress, no_progress
from recstack.offline.jobs.graphs import latest_graphs_dir
from recstack.offline.jobs.train import publish_release, release_catalog

MODELS = ("deepwalk", "graphsage")
NEIGHBORS = 50
"""Length of each item's published item-to-item list."""


def _read(path: Path, columns: list[str] | None = None) -> pd.DataFrame:
    if not path.exists():
        raise ArtifactError(f"missing {path}: run `recstack graphs` (and the jobs before it) first")
    return pq.read_table(path, columns=columns).to_pandas()


def _seconds(ts: pd.Series) -> np.ndarray:
    return (pd.to_datetime(ts, utc=True).astype("int64") // 1_000_000_000).to_numpy()


def read_interactions(lake_root: Path) -> tuple[Interactions, dict[str, Any]]:
    """User–item edges of the latest graph snapshot: (user, item, first-interaction second, strength)."""
    gdir = latest_graphs_dir(lake_root)
    edges = _read(gdir / "user_item", [Col.USER_ID, Col.ITEM_ID, "weight", "first_ts"])
    edges = edges[edges["weight"] > 0]
    data = Interactions(
        users=edges[Col.USER_ID].to_numpy(np.int64), items=edges[Col.ITEM_ID].to_numpy(np.int64),
        ts=_seconds(edges["first_ts"]), weight=edges["weight"].to_numpy(np.float64),
    )  # fmt: skip
    daily = Path(lake_root) / LakeTable.GRAPH_DAILY
    partitions = sorted(p.name.split("=", 1)[1] for p in daily.glob("event_date=*")) if daily.exists() else []
    lineage = {"graph_snapshot": str(gdir), "as_of": gdir.name.split("=", 1)[1], "edges": len(edges),
               "table": LakeTable.GRAPH_DAILY, "partitions": [partitions[0], partitions[-1]] if partitions else [],
               "partition_count": len(partitions)}  # fmt: skip
    return data, lineage


def read_profiles(lake_root: Path) -> tuple[pd.DataFrame | None, pd.DataFrame | None]:
    out = []
    for table in (LakeTable.USERS, LakeTable.ITEMS):
        path = Path(lake_root) / table
        out.append(pq.read_table(path).to_pandas() if path.exists() else None)
    return out[0], out[1]


def read_sessions(lake_root: Path) -> list[np.ndarray]:
    from recstack.offline.jobs.sessions import ITEMS

    path = Path(lake_root) / LakeTable.SESSIONS
    if not path.exists():
        return []
    return [
        np.asarray(s, np.int64) for s in pq.read_table(path, columns=[ITEMS]).column(ITEMS).to_pylist() if s
    ]


def holdout_metrics(model: str, data: Interactions, users: pd.DataFrame | None, items: pd.DataFrame | None,
                    cfg: Any, holdout: float, progress: Progress) -> dict[str, float]:  # fmt: skip
    train, test = time_split(data, holdout)
    if len(test) == 0 or len(train) == 0:
        raise ValueError("the holdout split left no test or no training edges; use more data or --no-eval")
    rd = RecallData.build(train, users, items)
    art = fit_deepwalk(rd, cfg, "holdout", progress=progress) if model == "deepwalk" else \
        fit_graphsage(rd, cfg, "holdout", progress=progress)[0]  # fmt: skip
    test_users = np.unique(test.users)
    catalog = len(np.union1d(rd.item_ids, test.items))
    metrics = evaluate_artifact(art, rd, test, 10, catalog)
    baseline = evaluate(popularity_topk(train, test_users, 10), test, train, 10, catalog)
    return {**metrics, **{f"popularity.{k}": v for k, v in baseline.items() if "@" in k}}


def train_lookalike(lake_root: Path, encoder: FeatureEncoder, users: pd.DataFrame | None, version: str,
                    progress: Progress) -> EmbeddingArtifact | None:  # fmt: skip
    """GraphSAGE on the user–user attribute graph; user vectors for lookalike audiences (None without edges)."""
    gdir = latest_graphs_dir(lake_root)
    nodes = _read(gdir / "nodes_users", [Col.USER_ID, "idx"]).sort_values("idx")
    uu = _read(gdir / "user_user", ["src_idx", "dst_idx", "weight"])
    if len(uu) == 0:
        return None
    ids = nodes[Col.USER_ID].to_numpy(np.int64)
    profile = users if users is not None else pd.DataFrame({Col.USER_ID: ids})
    src, dst = uu["src_idx"].to_numpy(), uu["dst_idx"].to_numpy()
    return fit_lookalike(ids, src, dst, profile, encoder, version, progress=progress)


def run_embedding_job(settings: Settings, model: str, holdout: float = 0.1, evaluate_first: bool = True,
                      publish: bool = True, progress: Progress = no_progress,
                      cfg: Any = None) -> dict[str, Any]:  # fmt: skip
    if model not in MODELS:
        raise ValueError(f"unknown model {model!r}: one of {', '.join(MODELS)}")
    cfg = cfg or (DEFAULT_DEEPWALK if model == "deepwalk" else DEFAULT_GRAPHSAGE)
    lake = settings.lake_root
    data, lineage = read_interactions(lake)
    users, items = read_profiles(lake)
    progress(f"{model}: {len(data):,} user-item edges from {lineage['graph_snapshot']}")
    metrics: dict[str, float] = {}
    if evaluate_first:
        metrics = holdout_metrics(model, data, users, items, cfg, holdout, progress)
        progress(f"{model}: holdout ndcg@10 {metrics['ndcg@10']:.4f} (popularity "
                 f"{metrics['popularity.ndcg@10']:.4f}), recall@10 {metrics['recall@10']:.4f}")  # fmt: skip
    version = f"{model}-{dt.datetime.now(dt.UTC).strftime('%Y%m%dT%H%M%S%f')}"
    rd = RecallData.build(data, users, items, lineage=lineage)
    sage = None
    if model == "deepwalk":
        sessions = read_sessions(lake) if cfg.use_sessions else None
        art = fit_deepwalk(rd, cfg, version, sessions, progress)
    else:
        art, sage = fit_graphsage(rd, cfg, version, progress)
    with tempfile.TemporaryDirectory(prefix="recstack-train-") as tmp:
        tmpdir = Path(tmp)
        art.save(tmpdir / "model")
        neighbors = ItemNeighbors(art.item_ids, *item_neighbors(art.item_vectors, art.item_ids, NEIGHBORS))
        neighbors.save(tmpdir / NEIGHBORS_FILE)
        extras: dict[str, Path] = {"neighbors": tmpdir / NEIGHBORS_FILE}
        if sage is not None:
            torch.save(sage.model.encoder.state_dict(), tmpdir / "encoder.pt")
            (tmpdir / "feature_encoder.json").write_text(json.dumps(sage.encoder.to_dict()))
            extras["state"] = tmpdir / "encoder.pt"
            extras["state/features"] = tmpdir / "feature_encoder.json"
            look = train_lookalike(lake, sage.encoder, users, version, progress)
            if look is not None:
                look.save(tmpdir / "lookalike")
                extras["lookalike"] = tmpdir / "lookalike"
        # the serving parts go with the run, so a registry alias (champion) names a complete release
        index = VectorIndex.build(art.item_vectors, art.item_ids, version)
        index.save(tmpdir / "index")
        catalog = release_catalog(lake, art)
        catalog.save(tmpdir / CATALOG_DIR)
        extras["index"] = tmpdir / "index"
        extras[CATALOG_DIR] = tmpdir / CATALOG_DIR
        tracked = log_training_run(
            tracking_uri=settings.mlflow_tracking_uri, artifact_root=settings.mlflow_artifact_root,
            experiment=settings.mlflow.experiment, run_name=version, params=art.params, metrics=metrics,
            model_dir=tmpdir / "model", lineage=lineage, extra_artifacts=extras, register_as=f"recstack-{model}",
            tags={"model": model, "version": version},
        )  # fmt: skip
        release = None
        if publish:
            release = publish_release(settings.serving_dir, version, art, index, neighbors, catalog)
    progress(f"{model}: run {tracked.run_id}, registered version {tracked.version}"
             + (f", published {release}" if release else ""))  # fmt: skip
    return {"model": model, "version": version, "metrics": metrics, "run_id": tracked.run_id,
            "registered_version": tracked.version, "release": str(release) if release else None,
            "users": int(rd.num_users), "items": int(rd.num_items)}  # fmt: skip
