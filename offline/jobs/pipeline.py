"""The offline feature pipeline for a date range: samples → features → sessions → graphs, in that order."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from pyspark.sql import SparkSession
from recstack.features.settings import JobSettings
from recstack.offline.ingest import Progress, no_progress
from recstack.offline.jobs.features import run_features_job
from recstack.offline.jobs.graphs import run_graphs_job
from recstack.offline.jobs.samples import run_samples_job
from recstack.offline.jobs.sessions import run_sessions_job

STAGES = ("samples", "features", "sessions", "graphs")


@dataclass
class PipelineReport:
    """Seconds and output counts per stage."""

    start: dt.date
    end: dt.date
    stage_seconds: dict[str, float] = field(default_factory=dict)
    outputs: dict[str, object] = field(default_factory=dict)

    @property
    def seconds(self) -> float:
        return sum(self.stage_seconds.values())


def stage_runners(
    spark: SparkSession, lake_root: Path, start: dt.date, end: dt.date, jobs: JobSettings
) -> dict[str, Callable[[], object]]:
    """One callable per stage, each running that job for [start, end] with the ``jobs`` settings."""
    return {
        "samples": lambda: run_samples_job(spark, lake_root, start, end, jobs.attribution_window_s),
        "features": lambda: run_features_job(
            spark, lake_root, start, end, jobs.vocab_max, jobs.broadcast_rows_max
        ),
        "sessions": lambda: run_sessions_job(spark, lake_root, start, end, jobs.session_gap_s),
        "graphs": lambda: run_graphs_job(
            spark, lake_root, start, end, jobs.graph_half_life_days, jobs.cooccurrence_window,
            jobs.item_neighbors_max, jobs.user_user_degree,
        ),  # fmt: skip
    }


def run_pipeline(
    spark: SparkSession,
    lake_root: Path | str,
    start: dt.date,
    end: dt.date,
    jobs: JobSettings | None = None,
    stages: tuple[str, ...] = STAGES,
    progress: Progress = no_progress,
) -> PipelineReport:
    """Run ``stages`` for [start, end] in pipeline order, with a progress line per stage."""
    unknown = set(stages) - set(STAGES)
    if unknown:
        raise ValueError(f"unknown stages {sorted(unknown)}; known: {', '.join(STAGES)}")
    runners = stage_runners(spark, Path(lake_root), start, end, jobs or JobSettings())
    report = PipelineReport(start, end)
    todo = [s for s in STAGES if s in stages]
    for i, name in enumerate(todo, 1):
        progress(f"[{i}/{len(todo)}] {name} {start}..{end}")
        t0 = time.perf_counter()
        report.outputs[name] = runners[name]()
        report.stage_seconds[name] = round(time.perf_counter() - t0, 2)
        progress(f"      {name} done in {report.stage_seconds[name]:.1f}s: {report.outputs[name]}")
    return report
