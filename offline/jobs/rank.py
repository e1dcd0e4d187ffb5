"""Training job for the rankers on the lake's labelled samples, and their promotion through the gate.

``train_ranker`` reads the training table (samples with point-in-time features), holds out the most recent ``eval_days`` days as
the evaluation window, trains Wide&Deep or the MoE ranker on the days before it (early stopping on the last
5 % of those rows by time), evaluates on the window, logs the run to MLflow (params, metrics, the artifact,
lineage) and registers a version of ``recstack-ranker-<model>``. ``promote_ranker`` runs the gate of
``models/registry.py`` on the most recent ``eval_days`` days of the lake at promotion time: the candidate and
the champion are both scored on it.
"""

from __future__ import annotations

import datetime as dt
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.dataset as ds
import torch
from recstack.features.definitions import CROSSES as DECLARED_CROSSES
from recstack.features.definitions import DENSE_FEATURES, FEATURES_BY_NAME
from recstack.features.keys import Col, LakeTable
from recstack.features.settings import Settings
from recstack.models.artifact import ArtifactError
from recstack.models.ctr import (
    CtrEncoder,
    TrainConfig,
    auc,
    build_ranker,
    logloss,
    model_config,
    predict,
    ranker_from_saved,
    train_ctr,
)
from recstack.models.registry import GateConfig, GateDecision, promote
from recstack.models.tracking import log_training_run
from recstack.offline.ingest import Progress, no_progress

FIELDS = ["user_id", "item_id", "gender", "age_bucket", "occupation", "zip_prefix", "release_year", "hour",
          "weekday", "page", "slot", "device"]  # fmt: skip
CROSSES = [
    (c.left, c.right) for c in DECLARED_CROSSES
]  # the wide part's crosses, as the feature set declares
MODELS = ("widedeep", "moe")
ARTIFACT = "ranker.pt"


def registered_name(model: str) -> str:
    return f"recstack-ranker-{model}"


def read_samples(lake_root: Path, since: dt.date | None = None) -> pd.DataFrame:
    """The training table's ranker columns (``offline/jobs/training_table.py``), dense features prepared."""
    from recstack.offline.jobs.training_table import read_training_table

    columns = [*FIELDS, Col.GENRES, *DENSE_FEATURES, Col.CLICK, Col.LIKE, Col.TS, Col.EVENT_DATE]
    try:
        frame = read_training_table(lake_root, columns, since)
    except FileNotFoundError as exc:
        raise ArtifactError(str(exc)) from exc
    frame[Col.GENRES] = frame[Col.GENRES].map(lambda g: list(g) if isinstance(g, list | np.ndarray) else [])
    frame[Col.LIKE] = frame[Col.LIKE].fillna(0).astype(np.float32)
    frame[Col.CLICK] = frame[Col.CLICK].astype(np.float32)
    for name in DENSE_FEATURES:
        col = frame[name].astype(float).fillna(0.0)
        frame[name] = np.log1p(col.clip(lower=0)) if FEATURES_BY_NAME[name].log1p else col
    return frame


def feature_snapshot(lake_root: Path) -> dict[str, pd.DataFrame]:
    """The latest ``user_features`` / ``item_features`` rows, saved with the ranker: what the service ranks
    with (``online/ctr_ranker.py``)."""
    out = {}
    for key, table in (("users", LakeTable.USER_FEATURES), ("items", LakeTable.ITEM_FEATURES)):
        path = Path(lake_root) / table
        if not path.exists():
            raise ArtifactError(f"no {table} snapshot at {path}: run `recstack features` first")
        frame = ds.dataset(path, format="parquet").to_table().to_pandas()
        if Col.GENRES in frame:
            frame[Col.GENRES] = frame[Col.GENRES].map(lambda g: list(g) if g is not None else [])
        out[key] = frame
    return out


def _window(frame: pd.DataFrame, eval_days: int) -> tuple[pd.DataFrame, pd.DataFrame, str]:
    dates = sorted(frame[Col.EVENT_DATE].astype(str).unique())
    if len(dates) <= eval_days:
        raise ValueError(f"{len(dates)} days of samples: need more than --eval-days {eval_days}")
    cut = dates[-eval_days]
    recent = frame[Col.EVENT_DATE].astype(str) >= cut
    return frame[~recent], frame[recent], f"{cut}..{dates[-1]}"


def _metrics(model: torch.nn.Module, enc: CtrEncoder, frame: pd.DataFrame) -> dict[str, float]:
    preds = predict(model, enc.transform(frame))
    y = frame[Col.CLICK].to_numpy()
    out = {"auc": auc(y, preds["click"]), "logloss": logloss(y, preds["click"])}
    if "like" in preds:
        clicked = y > 0
        out["like_auc"] = auc(frame[Col.LIKE].to_numpy()[clicked], preds["like"][clicked])
    return out


def train_ranker(settings: Settings, model: str = "widedeep", eval_days: int = 7, epochs: int = 5,
                 progress: Progress = no_progress) -> dict[str, Any]:  # fmt: skip
    if model not in MODELS:
        raise ValueError(f"unknown ranker {model!r}: one of {', '.join(MODELS)}")
    frame = read_samples(settings.lake_root)
    train, recent, window = _window(frame, eval_days)
    train = train.sort_values(Col.TS)
    split = int(0.95 * len(train))
    fit, val = train.iloc[:split], train.iloc[split:]
    progress(f"{model}: {len(fit):,} training samples, {len(val):,} for early stopping, {len(recent):,} in the "
             f"evaluation window {window}")  # fmt: skip
    enc = CtrEncoder(FIELDS, Col.GENRES, CROSSES, dense=list(DENSE_FEATURES)).fit(fit)
    tasks = ["click"] if model == "widedeep" else ["click", "like"]
    torch.manual_seed(42)
    net = build_ranker(model, enc)
    result = train_ctr(net, enc.transform(fit), {t: fit[t].to_numpy() for t in tasks}, enc.transform(val),
                       {t: val[t].to_numpy() for t in tasks}, TrainConfig(epochs=epochs), progress=progress)  # fmt: skip
    metrics = _metrics(net, enc, recent)
    version = f"{model}-{dt.datetime.now(dt.UTC).strftime('%Y%m%dT%H%M%S%f')}"
    dates = sorted(frame[Col.EVENT_DATE].astype(str).unique())
    lineage = {"table": LakeTable.SAMPLES, "partitions": [dates[0], dates[-1]], "eval_window": window,
               "train_rows": len(fit), "eval_rows": len(recent)}  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="recstack-ranker-") as tmp:
        out = Path(tmp) / "model"
        out.mkdir()
        torch.save({"kind": model, "encoder": enc, "state": net.state_dict(), "config": model_config(net),
                    "version": version, "snapshot": feature_snapshot(settings.lake_root)}, out / ARTIFACT)  # fmt: skip
        tracked = log_training_run(
            tracking_uri=settings.mlflow_tracking_uri, artifact_root=settings.mlflow_artifact_root,
            experiment=settings.mlflow.experiment, run_name=version, params={"model": model, "epochs": epochs,
            "eval_days": eval_days, "best_epoch": result.best_epoch}, metrics=metrics, model_dir=out,
            lineage=lineage, register_as=registered_name(model), tags={"model": model, "version": version},
            history=result.history,
        )  # fmt: skip
    progress(f"{model}: evaluation window auc {metrics['auc']:.4f}, logloss {metrics['logloss']:.4f}; "
             f"registered {registered_name(model)} v{tracked.version}")  # fmt: skip
    return {"model": model, "version": version, "registered_version": tracked.version, "metrics": metrics,
            "window": window, "run_id": tracked.run_id}  # fmt: skip


def load_ranker_version(settings: Settings, model: str, version: str) -> tuple[torch.nn.Module, CtrEncoder]:
    import mlflow
    from mlflow.tracking import MlflowClient

    uri = settings.mlflow_tracking_uri
    source = MlflowClient(uri).get_model_version(registered_name(model), version).source
    path = Path(mlflow.artifacts.download_artifacts(artifact_uri=source, tracking_uri=uri)) / ARTIFACT
    saved = torch.load(path, weights_only=False)  # our own artifact, from our registry
    return ranker_from_saved(saved), saved["encoder"]


def promote_ranker(settings: Settings, model: str, version: str, eval_days: int = 7,
                   cfg: GateConfig | None = None) -> GateDecision:  # fmt: skip
    """The gate on the lake's most recent ``eval_days`` days, for version ``version`` of the model."""
    frame = read_samples(settings.lake_root)
    _, recent, window = _window(frame, eval_days)

    def evaluate(v: str) -> dict[str, float]:
        net, enc = load_ranker_version(settings, model, v)
        return _metrics(net, enc, recent)

    return promote(settings.mlflow_tracking_uri, settings.mlflow_artifact_root, settings.mlflow.experiment,
                   registered_name(model), version, evaluate, window, cfg or GateConfig())  # fmt: skip
