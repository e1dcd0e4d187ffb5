"""The promotion gate: a registered candidate becomes ``champion`` only through an offline validation.

``promote`` evaluates the candidate and the current champion on the same evaluation data (the most recent N
days of samples, which neither trained on), checks the candidate against the configured thresholds and
against the champion (no regression beyond ``max_regression``), records the decision with its numbers, and
moves the alias only when every check passes.

Every decision is recorded twice in MLflow: as a run in the ``<experiment>-gate`` experiment (parameters:
model, versions, evaluation window; metrics: both sides' numbers; tags: decision and reasons) and as tags on
the candidate's model version (``gate.decision``, ``gate.reasons``, ``gate.metrics``, ``gate.run_id``).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import mlflow
from mlflow.tracking import MlflowClient

Evaluate = Callable[[str], Mapping[str, float]]
"""Metrics of one registered version (by version number) on the evaluation data."""


@dataclass(frozen=True)
class GateConfig:
    """Thresholds of the gate. ``minimum``: metric ≥ value; ``maximum``: metric ≤ value; ``compare``: the
    metrics that must not regress against the champion (higher is better), by at most ``max_regression``."""

    minimum: Mapping[str, float] = field(default_factory=lambda: {"auc": 0.6})
    maximum: Mapping[str, float] = field(default_factory=lambda: {"logloss": 0.69})
    compare: tuple[str, ...] = ("auc",)
    max_regression: float = 0.0
    alias: str = "champion"


@dataclass(frozen=True)
class GateDecision:
    model: str
    candidate: str
    champion: str | None
    promoted: bool
    reasons: list[str]
    candidate_metrics: dict[str, float]
    champion_metrics: dict[str, float] | None
    window: str
    run_id: str = ""


def check(candidate: Mapping[str, float], champion: Mapping[str, float] | None, cfg: GateConfig) -> list[str]:
    """Why the candidate fails (an empty list: it passes)."""
    reasons = []
    for name, low in cfg.minimum.items():
        if name not in candidate or not candidate[name] >= low:
            reasons.append(f"{name} {candidate.get(name)} < minimum {low}")
    for name, high in cfg.maximum.items():
        if name not in candidate or not candidate[name] <= high:
            reasons.append(f"{name} {candidate.get(name)} > maximum {high}")
    if champion is not None:
        for name in cfg.compare:
            if name in champion and not candidate.get(name, float("-inf")) >= champion[name] - cfg.max_regression:
                reasons.append(f"{name} {candidate.get(name)} regresses against the champion's {champion[name]}")
    return reasons


def champion_version(client: MlflowClient, model: str, alias: str = "champion") -> str | None:
    try:
        return str(client.get_model_version_by_alias(model, alias).version)
    except mlflow.exceptions.MlflowException:
        return None


def promote(
    tracking_uri: str, artifact_root: str, experiment: str, model: str, candidate: str, evaluate: Evaluate,
    window: str, cfg: GateConfig = GateConfig(),
) -> GateDecision:  # fmt: skip
    """Run the gate for version ``candidate`` of registered model ``model`` and record the decision."""
    from recstack.models.tracking import experiment_id

    client = MlflowClient(tracking_uri)
    client.get_model_version(model, candidate)  # raises for an unknown version
    current = champion_version(client, model, cfg.alias)
    cand = {k: float(v) for k, v in evaluate(candidate).items()}
    champ = {k: float(v) for k, v in evaluate(current).items()} if current and current != candidate else None
    reasons = check(cand, champ, cfg)
    promoted = not reasons
    mlflow.set_tracking_uri(tracking_uri)
    exp = experiment_id(tracking_uri, artifact_root, f"{experiment}-gate")
    with mlflow.start_run(experiment_id=exp, run_name=f"gate {model} v{candidate}") as run:
        mlflow.log_params({"model": model, "candidate": candidate, "champion": current or "none", "window": window,
                           "thresholds": json.dumps({"minimum": dict(cfg.minimum), "maximum": dict(cfg.maximum),
                                                     "compare": list(cfg.compare),
                                                     "max_regression": cfg.max_regression})})  # fmt: skip
        mlflow.log_metrics({f"candidate_{k}": v for k, v in cand.items()})
        if champ:
            mlflow.log_metrics({f"champion_{k}": v for k, v in champ.items()})
        mlflow.set_tags({"decision": "promoted" if promoted else "refused",
                         "reasons": "; ".join(reasons) or "all checks passed"})  # fmt: skip
        run_id = run.info.run_id
    for key, value in (("gate.decision", "promoted" if promoted else "refused"),
                       ("gate.reasons", "; ".join(reasons) or "all checks passed"),
                       ("gate.metrics", json.dumps({"candidate": cand, "champion": champ, "window": window})),
                       ("gate.run_id", run_id)):  # fmt: skip
        client.set_model_version_tag(model, candidate, key, value)
    if promoted:
        client.set_registered_model_alias(model, cfg.alias, candidate)
    return GateDecision(model, candidate, current, promoted, reasons, cand, champ, window, run_id)
