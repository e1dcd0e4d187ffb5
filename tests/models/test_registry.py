"""The promotion gate with real MLflow (sqlite + local artifacts) and real Wide&Deep versions."""

from __future__ import annotations

from pathlib import Path

import mlflow
import torch
from mlflow.tracking import MlflowClient
from recstack.features.settings import Settings
from recstack.models.ctr import CtrEncoder, TrainConfig, WideDeep, auc, logloss, predict, train_ctr
from recstack.models.registry import GateConfig, check, promote
from recstack.models.tracking import log_training_run

from tests.models.test_ctr import CROSSES, FIELDS, _planted

NAME = "recstack-ranker-test"


def test_check_rules() -> None:
    cfg = GateConfig(minimum={"auc": 0.6}, maximum={"logloss": 0.7}, compare=("auc",), max_regression=0.01)
    assert check({"auc": 0.8, "logloss": 0.5}, None, cfg) == []
    assert check({"auc": 0.8, "logloss": 0.5}, {"auc": 0.805}, cfg) == []  # within the tolerance
    assert "regresses" in check({"auc": 0.8, "logloss": 0.5}, {"auc": 0.82}, cfg)[0]
    assert len(check({"auc": 0.5, "logloss": 0.9}, None, cfg)) == 2
    assert "minimum" in check({"logloss": 0.5}, None, cfg)[0]  # a missing metric fails


def test_gate_promotes_a_better_model_and_refuses_a_worse_one(tmp_path: Path) -> None:
    s = Settings(home=tmp_path)
    uri = s.mlflow_tracking_uri
    train, val, recent = _planted(12_000, 1), _planted(2_000, 2), _planted(3_000, 3)  # recent = the gate's window
    enc = CtrEncoder(FIELDS, "genres", CROSSES).fit(train)

    def register(rows: int, epochs: int, tag: str) -> str:
        torch.manual_seed(0)
        model = WideDeep(enc)
        if epochs:
            part = train.iloc[:rows]
            train_ctr(model, enc.transform(part), {"click": part["click"].to_numpy()}, enc.transform(val),
                      {"click": val["click"].to_numpy()}, TrainConfig(epochs=epochs, lr=3e-3, patience=epochs))  # fmt: skip
        out = tmp_path / tag
        out.mkdir()
        torch.save({"state": model.state_dict(), "encoder": enc}, out / "ranker.pt")
        run = log_training_run(tracking_uri=uri, artifact_root=s.mlflow_artifact_root, experiment="rank", run_name=tag,
                               params={"rows": rows, "epochs": epochs}, metrics={}, model_dir=out,
                               lineage={"test": tag}, register_as=NAME, tags={"version": tag})  # fmt: skip
        return str(run.version)

    def evaluate(version: str) -> dict[str, float]:
        source = MlflowClient(uri).get_model_version(NAME, version).source
        saved = torch.load(Path(mlflow.artifacts.download_artifacts(artifact_uri=source, tracking_uri=uri)) / "ranker.pt",
                           weights_only=False)  # fmt: skip
        model = WideDeep(saved["encoder"])
        model.load_state_dict(saved["state"])
        p = predict(model, saved["encoder"].transform(recent))["click"]
        y = recent["click"].to_numpy()
        return {"auc": auc(y, p), "logloss": logloss(y, p)}

    client = MlflowClient(uri)
    v1 = register(6_000, 4, "small")
    first = promote(uri, s.mlflow_artifact_root, "rank", NAME, v1, evaluate, "recent 1 day")
    assert first.promoted and first.champion is None and first.candidate_metrics["auc"] > 0.6
    assert str(client.get_model_version_by_alias(NAME, "champion").version) == v1

    v2 = register(0, 0, "untrained")  # never trained: worse on every count
    second = promote(uri, s.mlflow_artifact_root, "rank", NAME, v2, evaluate, "recent 1 day")
    assert not second.promoted and second.champion == v1
    assert any("regresses" in r for r in second.reasons) and any("minimum" in r for r in second.reasons)
    assert str(client.get_model_version_by_alias(NAME, "champion").version) == v1  # the champion did not move
    tags = client.get_model_version(NAME, v2).tags
    assert tags["gate.decision"] == "refused" and "regresses" in tags["gate.reasons"]

    v3 = register(12_000, 6, "large")  # twice the data, more epochs
    third = promote(uri, s.mlflow_artifact_root, "rank", NAME, v3, evaluate, "recent 1 day")
    assert third.promoted and third.champion == v1
    assert third.candidate_metrics["auc"] >= third.champion_metrics["auc"]  # type: ignore[index]
    assert str(client.get_model_version_by_alias(NAME, "champion").version) == v3
    # every decision is a run with both sides' numbers
    mlflow.set_tracking_uri(uri)
    runs = mlflow.search_runs(experiment_names=["rank-gate"])
    assert len(runs) == 3 and set(runs["tags.decision"]) == {"promoted", "refused"}
    assert runs["metrics.champion_auc"].notna().sum() == 2  # the two decisions that had a champion
