"""MLflow tracking for every training run: parameters, metrics, artifacts, data lineage, registered versions.

A run logs the model directory (the artifact contract of ``models.artifact``) under ``model/``, extra files
(neighbour lists, encoder state) under their own names, the lineage as ``lineage.json`` plus ``lineage.*``
tags, and registers ``runs:/<run>/model`` as a new version of the named registered model. The tracking URI
and artifact root come from the settings (sqlite + local folder by default, an MLflow server at scale).
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
from mlflow.tracking import MlflowClient


@dataclass(frozen=True)
class TrackedRun:
    run_id: str
    experiment_id: str
    registered_model: str | None
    version: str | None


def _flat(prefix: str, value: Any, out: dict[str, Any]) -> None:
    if isinstance(value, Mapping):
        for k, v in value.items():
            _flat(f"{prefix}.{k}" if prefix else str(k), v, out)
    else:
        out[prefix] = value


def experiment_id(tracking_uri: str, artifact_root: str, name: str) -> str:
    """The id of experiment ``name``, created with ``artifact_root`` as its artifact location if new."""
    client = MlflowClient(tracking_uri)
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    return client.create_experiment(name, artifact_location=Path(artifact_root).resolve().as_uri()
                                    if "://" not in artifact_root else artifact_root)  # fmt: skip


def log_training_run(
    *, tracking_uri: str, artifact_root: str, experiment: str, run_name: str, params: Mapping[str, Any],
    metrics: Mapping[str, float], model_dir: Path, lineage: Mapping[str, Any],
    extra_artifacts: Mapping[str, Path] | None = None, register_as: str | None = None,
    tags: Mapping[str, str] | None = None, history: list[dict[str, float]] | None = None,
) -> TrackedRun:  # fmt: skip
    mlflow.set_tracking_uri(tracking_uri)
    exp_id = experiment_id(tracking_uri, artifact_root, experiment)
    flat_params: dict[str, Any] = {}
    _flat("", params, flat_params)
    flat_lineage: dict[str, Any] = {}
    _flat("lineage", lineage, flat_lineage)
    with mlflow.start_run(experiment_id=exp_id, run_name=run_name) as run:
        mlflow.log_params({k: str(v)[:500] for k, v in flat_params.items()})
        mlflow.set_tags({**{k: str(v)[:5000] for k, v in flat_lineage.items()}, **dict(tags or {})})
        mlflow.log_metrics({k.replace("@", "_at_"): float(v) for k, v in metrics.items()})
        for step, row in enumerate(history or []):
            mlflow.log_metrics({f"train_{k}": float(v) for k, v in row.items() if k != "epoch"}, step=step)
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "lineage.json"
            path.write_text(json.dumps(dict(lineage), indent=2, default=str))
            mlflow.log_artifact(str(path))
        mlflow.log_artifacts(str(model_dir), artifact_path="model")
        for name, p in (extra_artifacts or {}).items():
            if Path(p).is_dir():
                mlflow.log_artifacts(str(p), artifact_path=name)
            else:
                mlflow.log_artifact(str(p), artifact_path=name)
        run_id = run.info.run_id
        artifact_uri = run.info.artifact_uri
    version = None
    if register_as:
        # The registry's low-level API: the source is the run's ``model/`` artifact directory (our artifact
        # contract, not an MLflow flavour), linked to the run.
        client = MlflowClient(tracking_uri)
        try:
            client.get_registered_model(register_as)
        except mlflow.exceptions.MlflowException:
            client.create_registered_model(
                register_as, description="recstack recall model (models/artifact.py)"
            )
        mv = client.create_model_version(register_as, source=f"{artifact_uri}/model", run_id=run_id,
                                         tags={"version": dict(tags or {}).get("version", "")})  # fmt: skip
        version = str(mv.version)
    return TrackedRun(run_id=run_id, experiment_id=exp_id, registered_model=register_as, version=version)
