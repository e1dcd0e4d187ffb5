"""``recstack bench features``: synthetic events → the whole offline feature pipeline, timed per stage.

Generation of the synthetic events is timed apart (``generate_s``) and is not part of the pipeline's
``seconds``; Spark's start-up is reported as ``spark_start_s`` and not counted either, as it is paid once per
scheduler run, not per event. ``events_per_s = events / seconds``.
"""

from __future__ import annotations

import platform
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil
from recstack.features.settings import Settings
from recstack.offline.bench import PeakRss
from recstack.offline.ingest import Progress, no_progress
from recstack.offline.ingest.synthetic import SyntheticConfig, ingest_synthetic
from recstack.offline.jobs.pipeline import STAGES, run_pipeline
from recstack.offline.lake import EventLake


def bench_features(
    events: int, settings: Settings, seed: int = 42, workdir: Path | None = None, progress: Progress = no_progress
) -> dict[str, Any]:
    """Generate ``events`` synthetic events into a fresh lake, run every pipeline stage, return the numbers."""
    from recstack.offline.spark import spark_session

    tmp = Path(tempfile.mkdtemp(prefix="recstack-bench-", dir=workdir))
    lake = EventLake(tmp / "lake")
    try:
        with PeakRss() as rss:
            t0 = time.perf_counter()
            report = ingest_synthetic(SyntheticConfig(events=events, seed=seed), lake, progress=progress)
            generate_s = time.perf_counter() - t0
            progress(f"generated {report.events_written:,} events in {generate_s:.1f}s")
            t0 = time.perf_counter()
            spark = spark_session(settings.spark)
            spark_start_s = time.perf_counter() - t0
            dates = lake.event_dates()
            result = run_pipeline(spark, lake.root, dates[0], dates[-1], settings.jobs, STAGES, progress)
        n = report.events_written
        return {
            "events": n,
            "seconds": round(result.seconds, 2),
            "events_per_s": round(n / result.seconds),
            "peak_rss_mb": rss.peak_mb,
            "stage_seconds": result.stage_seconds,
            "generate_s": round(generate_s, 2),
            "spark_start_s": round(spark_start_s, 2),
            "days": len(dates),
            "users": report.users,
            "items": report.items,
            "samples": result.outputs["samples"],
            "spark_master": settings.spark.master,
            "shuffle_partitions": settings.spark.shuffle_partitions,
            "cpus": psutil.cpu_count(),
            "python": platform.python_version(),
        }
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
