"""The ``recstack`` command line. Each sub-command is a job that also runs without Airflow.

Settings come from the environment / ``RECSTACK_CONFIG`` (see ``features.settings``); ``--config`` and
``--home`` are shortcuts for those.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime as dt
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from recstack.features.settings import Settings, load_settings

if TYPE_CHECKING:
    from recstack.models.ensemble import EnsembleConfig

T = TypeVar("T")


def _date(value: str) -> dt.date:
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a date (YYYY-MM-DD)") from None


def _number(value: str, cast: Callable[[float], T], ok: Callable[[T], bool], rule: str) -> T:
    """``value`` parsed as a number and cast, or an argparse error naming ``rule``."""
    try:
        x = cast(float(value))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number") from None
    if not ok(x):
        raise argparse.ArgumentTypeError(f"{value!r} must be {rule}")
    return x


def _positive(value: str) -> int:
    return _number(value, int, lambda n: n > 0, "positive")


def _share(value: str) -> float:
    return _number(value, float, lambda x: 0 <= x <= 1, "in [0, 1]")


def _positive_floats(value: str) -> tuple[float, ...]:
    """A comma-separated list of positive numbers, e.g. ``1,4``."""
    return tuple(_number(v.strip(), float, lambda x: x > 0, "positive") for v in value.split(","))


def _settings(args: argparse.Namespace) -> Settings:
    if args.config:
        os.environ["RECSTACK_CONFIG"] = str(args.config)
    overrides = {"home": args.home} if args.home else {}
    return load_settings(**overrides)


class StepProgress:
    """Prints ``[step/total] message`` lines with elapsed time: progress for long jobs."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.step = 0
        self.start = time.perf_counter()

    def next(self, title: str) -> None:
        self.step += 1
        self.line(f"[{self.step}/{self.total}] {title}")

    def line(self, message: str) -> None:
        print(f"  {time.perf_counter() - self.start:7.1f}s  {message}", flush=True)


# -- sub-commands ---------------------------------------------------------------------------------------
def cmd_ingest(args: argparse.Namespace) -> int:
    from recstack.offline.lake import EventLake

    settings = _settings(args)
    lake = EventLake(settings.lake_root)
    progress = StepProgress(1)
    if args.source == "movielens":
        from recstack.offline.ingest.movielens import ingest_movielens

        report = ingest_movielens(args.path, lake, settings.data, progress=progress.line)
    else:
        from recstack.offline.ingest.synthetic import SyntheticConfig, ingest_synthetic

        cfg = SyntheticConfig(
            events=args.events, seed=args.seed, users=args.users, items=args.items, days=args.days
        )
        report = ingest_synthetic(cfg, lake, progress=progress.line)
    print(json.dumps({"events": report.events_written, "quarantined": dict(report.quarantined),
                      "partitions": len(report.partitions), "lake": str(settings.lake_root)}))  # fmt: skip
    return 0


def _date_range(args: argparse.Namespace, settings: Settings) -> tuple[dt.date, dt.date]:
    from recstack.offline.lake import EventLake

    dates = EventLake(settings.lake_root).event_dates()
    if not dates:
        raise SystemExit(f"error: no events in the lake at {settings.lake_root}; run `recstack ingest` first")
    return args.start or dates[0], args.end or dates[-1]


def cmd_jobs(args: argparse.Namespace) -> int:
    """Run one offline job (``samples``, ``features``, ``sessions``, ``graphs``) or all of them (``pipeline``)."""
    from recstack.offline.jobs.pipeline import STAGES, run_pipeline
    from recstack.offline.spark import spark_session

    settings = _settings(args)
    from recstack.features.settings import JobSettings

    overrides = {
        "attribution_window_s": getattr(args, "window", None),
        "session_gap_s": getattr(args, "gap", None),
    }
    jobs = JobSettings.model_validate(settings.jobs.model_dump() | {k: v for k, v in overrides.items() if v})
    start, end = _date_range(args, settings)
    if start > end:
        raise ValueError(f"--start {start} is after --end {end}")
    spark_settings = (
        settings.spark.model_copy(update={"master": args.master}) if args.master else settings.spark
    )
    spark = spark_session(spark_settings)
    stages = STAGES if args.command == "pipeline" else (args.command,)
    report = run_pipeline(spark, settings.lake_root, start, end, jobs, stages, StepProgress(1).line)
    print(json.dumps({"start": start.isoformat(), "end": end.isoformat(), "seconds": report.stage_seconds,
                      "outputs": report.outputs}, default=str))  # fmt: skip
    return 0


def cmd_fraud_job(args: argparse.Namespace) -> int:
    """Spark anti-fraud over a date range: gangs on the shared-device / IP / synchronised-click graph, a
    versioned blocklist in the lake, published to Redis with --publish."""
    from recstack.features.redis_local import ensure_redis_url
    from recstack.offline.jobs.fraud import run_fraud_job
    from recstack.offline.spark import spark_session

    settings = _settings(args)
    start, end = _date_range(args, settings)
    if start > end:
        raise ValueError(f"--start {start} is after --end {end}")
    spark_settings = (
        settings.spark.model_copy(update={"master": args.master}) if args.master else settings.spark
    )
    report = run_fraud_job(spark_session(spark_settings), settings.lake_root, start, end, version=args.version,
                           redis_url=(settings.redis.url or ensure_redis_url(settings)) if args.publish else None,
                           key_prefix=settings.redis.key_prefix, progress=StepProgress(1).line)  # fmt: skip
    print(json.dumps(report, default=str))
    return 0


def cmd_review_items(args: argparse.Namespace) -> int:
    """Machine review of the lake's items: clean ones approved, doubtful ones queued, banned ones rejected."""
    import redis as redis_sync
    from recstack.control.safety import ContentReviewer, ModerationStore, item_contents
    from recstack.features.keys import RedisKey
    from recstack.features.redis_local import ensure_redis_url
    from recstack.offline.lake import EventLake

    settings = _settings(args)
    contents = item_contents(EventLake(settings.lake_root).read_items())
    store = ModerationStore(redis_sync.Redis.from_url(settings.redis.url or ensure_redis_url(settings)),
                            RedisKey(settings.redis.key_prefix), settings.safety)  # fmt: skip
    counts = store.submit(ContentReviewer(settings.safety).review_many(contents), rereview=args.rereview)
    print(json.dumps({"items": len(contents), **counts}))
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    settings = _settings(args)
    # with --json, stdout carries only the result; progress goes to stderr
    progress = StepProgress(1).line if not args.json else (lambda m: print(m, file=sys.stderr, flush=True))
    if args.what == "features":
        from recstack.offline.bench.features import bench_features

        workdir = settings.home / "bench"
        workdir.mkdir(parents=True, exist_ok=True)
        result = bench_features(args.events, settings, seed=args.seed, workdir=workdir, progress=progress)
    elif args.what == "ctr":
        from recstack.offline.bench.ctr import bench_ctr

        result = bench_ctr(args.data, progress=progress)
    elif args.what == "serve":
        from recstack.offline.bench.serve import run_serve_bench

        result = run_serve_bench(args.items, args.users, args.duration, concurrency=args.concurrency,
                                 workers=args.workers, k=args.k, seed=args.seed, progress=progress,
                                 connections=args.connections, ranker=args.ranker)  # fmt: skip
    elif args.what == "fraud":
        import tempfile

        from recstack.features.redis_local import free_port, start_redis_server
        from recstack.offline.bench.fraud import run_fraud_bench

        with tempfile.TemporaryDirectory(prefix="recstack-fraud-") as tmp:
            port = free_port()
            redis_proc = start_redis_server(port, Path(tmp), persist=False)
            try:
                result = run_fraud_bench(args.data, f"redis://127.0.0.1:{port}/0", seed=args.seed,
                                         progress=progress, settings=settings.fraud)  # fmt: skip
            finally:
                redis_proc.terminate()
                redis_proc.wait(10)
    elif args.what == "pacing":
        from recstack.features.redis_local import ensure_redis_url
        from recstack.offline.bench.pacing import run_pacing_bench

        result = run_pacing_bench(ensure_redis_url(settings), seed=args.seed)
    else:
        from recstack.offline.bench.embeddings import bench_embeddings

        result = bench_embeddings(args.data, progress=progress)
    print(json.dumps(result) if args.json else json.dumps(result, indent=1))
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from recstack.models.baseline import BaselineConfig
    from recstack.offline.jobs.train import run_train_job

    settings = _settings(args)
    if args.model in ("widedeep", "moe"):
        from recstack.offline.jobs.rank import train_ranker

        result = train_ranker(settings, args.model, eval_days=args.eval_days, epochs=args.epochs,
                              progress=StepProgress(1).line)  # fmt: skip
        print(json.dumps(result))
        return 0
    if args.model != "baseline":
        from recstack.offline.jobs.embeddings import run_embedding_job

        if not 0 < args.holdout < 1:
            raise ValueError("--holdout must be in (0, 1)")
        cfg = None
        if args.item2vec:
            if args.model != "deepwalk":
                raise ValueError("--item2vec applies to --model deepwalk")
            from dataclasses import replace

            from recstack.models.recall import DEFAULT_DEEPWALK

            cfg = replace(DEFAULT_DEEPWALK, use_sessions=True)
        result = run_embedding_job(settings, args.model, holdout=args.holdout, evaluate_first=not args.no_eval,
                                   publish=not args.no_publish, progress=StepProgress(1).line, cfg=cfg)  # fmt: skip
        print(json.dumps(result))
        return 0
    release = run_train_job(
        settings.lake_root, settings.serving_dir, BaselineConfig(dim=args.dim, seed=settings.data.seed),
        args.start, args.end, progress=StepProgress(1).line,
    )  # fmt: skip
    print(json.dumps({"release": str(release)}))
    return 0


def cmd_index(args: argparse.Namespace) -> int:
    from recstack.offline.jobs.train import current_release, rebuild_index

    settings = _settings(args)
    release = args.release or current_release(settings.serving_dir)
    if not (release / "model").is_dir():
        raise FileNotFoundError(f"{release} is not a release (no model/ inside)")
    index = rebuild_index(release, args.kind, args.nprobe)
    print(json.dumps({"release": str(release), "kind": index.kind, "params": index.params,
                      "items": len(index.item_ids), "model_version": index.model_version}))  # fmt: skip
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    settings = _settings(args)
    host = args.host or settings.serving.host
    port = args.port or settings.serving.port
    workers = args.workers or settings.serving.workers
    # Workers re-read settings from the environment: pass --home / --config through it.
    os.environ["RECSTACK_HOME"] = str(settings.home)
    os.environ["RECSTACK_SERVING__WORKERS"] = str(workers)  # the workers size their recall pool use by it
    # One BLAS / OpenMP thread per worker: the workers are the parallelism (a request's matrices are small,
    # and threads of several workers fighting over the cores cost more than they give).
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, "1")
    uvicorn.run(
        "recstack.online.app:create_app", factory=True, host=host, port=port, workers=workers,
        log_level="warning", access_log=False, loop="uvloop", http="httptools",
    )  # fmt: skip
    return 0


def cmd_redis(args: argparse.Namespace) -> int:
    import redis
    from recstack.features.redis_local import ensure_redis_url

    settings = _settings(args)
    if args.action == "start":
        print(ensure_redis_url(settings))
    elif args.action == "stop":
        url = settings.redis.url or f"redis://127.0.0.1:{settings.redis.local_port}/0"
        with contextlib.suppress(redis.ConnectionError):
            redis.Redis.from_url(url).shutdown(nosave=False)
        print(f"stopped {url}")
    return 0


def cmd_promote(args: argparse.Namespace) -> int:
    from recstack.models.registry import GateConfig
    from recstack.offline.jobs.rank import promote_ranker

    cfg = GateConfig(minimum={"auc": args.min_auc}, maximum={"logloss": args.max_logloss},
                     max_regression=args.max_regression)  # fmt: skip
    d = promote_ranker(_settings(args), args.model, args.version, args.eval_days, cfg)
    print(json.dumps({"model": d.model, "candidate": d.candidate, "champion": d.champion, "promoted": d.promoted,
                      "reasons": d.reasons, "candidate_metrics": d.candidate_metrics,
                      "champion_metrics": d.champion_metrics, "window": d.window, "gate_run_id": d.run_id}))  # fmt: skip
    return 0 if d.promoted else 1


def cmd_realtime(args: argparse.Namespace) -> int:
    import signal
    import threading

    from recstack.features.realtime import run_realtime_consumer

    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    if args.seconds:
        threading.Timer(args.seconds, stop.set).start()
    settings = _settings(args)
    screen = None
    if settings.fraud.enabled:  # anti-fraud before the features: flagged / blocked events are only audited
        from recstack.control.fraud import FraudGuard
        from recstack.features.keys import RedisKey

        def screen(client):  # type: ignore[no-untyped-def]
            return FraudGuard(client, RedisKey(settings.redis.key_prefix), settings.fraud)

    counters = run_realtime_consumer(settings, stop, progress=StepProgress(1).line, screen=screen)
    print(json.dumps(counters))
    return 0


def export_ensemble(args: argparse.Namespace) -> EnsembleConfig:
    """The export's ensemble: the options given on the command line over ``EnsembleConfig``'s defaults (the
    one place those live)."""
    from recstack.models.ensemble import EnsembleConfig

    fields = ("deepwalk_seeds", "graphsage_seeds", "ials_seeds", "ials_weight", "ease_weight", "popularity_weight",
              "deepwalk_return_ps")  # fmt: skip
    return EnsembleConfig(**{f: getattr(args, f) for f in fields if getattr(args, f) is not None})


def cmd_export(args: argparse.Namespace) -> int:
    from recstack.offline.jobs.export import ExportConfig, export_recommendations

    if args.what == "evaluate":
        from recstack.offline.jobs.export import evaluate_export

        metrics = evaluate_export(args.recs, args.test, args.train, args.k)
        print(json.dumps({k: round(v, 4) for k, v in metrics.items()}))
        return 0
    settings = _settings(args)
    cfg = ExportConfig(k=args.k, seed=args.seed, exposure_discount=args.exposure_discount, diversify=args.diversify,
                       coverage_floor=args.coverage_floor,
                       ensemble=export_ensemble(args))  # fmt: skip
    report = export_recommendations(settings, args.data, args.out, cfg, progress=StepProgress(1).line)
    print(json.dumps({"out": str(report.out), "users": report.users, "rows": report.rows,
                      "items_covered": report.items_covered, "model_version": report.model_version,
                      "ratings_read": report.ingest.records_read,
                      "quarantined": report.ingest.quarantined_total,
                      "coverage_floor": dataclasses.asdict(report.floor) if report.floor else None,
                      "seconds": {k: round(v, 1) for k, v in report.seconds.items()}}))  # fmt: skip
    return 0


def cmd_pacing(args: argparse.Namespace) -> int:
    from recstack.features.redis_local import ensure_redis_url
    from recstack.offline.bench.pacing import autotune_gains

    settings = _settings(args)
    progress = StepProgress(1).line if not args.json else (lambda m: print(m, file=sys.stderr, flush=True))
    result = autotune_gains(ensure_redis_url(settings), seed=args.seed, trials=args.trials,
                            refine_rounds=args.rounds, progress=progress)  # fmt: skip
    print(json.dumps(result, default=str) if args.json else json.dumps(result, indent=1, default=str))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from recstack.offline.demo import run_demo

    return run_demo(
        _settings(args), data=args.data, events=args.events, serve=not args.no_serve, port=args.port
    )


# -- parser ---------------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", type=Path, help="TOML settings file (same as RECSTACK_CONFIG)")
    common.add_argument("--home", type=Path, help="working directory for lake, models, redis (RECSTACK_HOME)")

    parser = argparse.ArgumentParser(
        prog="recstack", description="recstack: an industrial recommender, recall → rank → control."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("demo", parents=[common], help="run the whole loop on embedded defaults",
                       description="Ingest (synthetic by default), build samples with Spark, train, index, "
                       "serve, and print recommendations for a few users.")  # fmt: skip
    p.add_argument("--data", type=Path, help="MovieLens directory instead of synthetic data")
    p.add_argument("--events", type=_positive, default=200_000, help="synthetic events (default 200000)")
    p.add_argument(
        "--no-serve", action="store_true", help="print recommendations and exit instead of serving"
    )
    p.add_argument("--port", type=int, default=None, help="API port (default from settings)")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser(
        "ingest", help="load raw data into the event lake", description="Load raw data into the lake."
    )
    isub = p.add_subparsers(dest="source", required=True, metavar="SOURCE")
    q = isub.add_parser("movielens", parents=[common], help="a MovieLens directory (100K, 1M/10M .dat, CSV)",
                        description="Ingest a MovieLens directory: u.data (100K), ratings.dat or ratings.csv.")  # fmt: skip
    q.add_argument("path", type=Path)
    q.set_defaults(func=cmd_ingest)
    q = isub.add_parser("synthetic", parents=[common], help="seeded synthetic events",
                        description="Generate seeded synthetic events (10^4 to 10^8).")  # fmt: skip
    q.add_argument("--events", type=_positive, default=1_000_000)
    q.add_argument("--seed", type=int, default=42)
    q.add_argument("--users", type=int, default=0, help="0: derived from --events")
    q.add_argument("--items", type=int, default=0, help="0: derived from --events")
    q.add_argument("--days", type=int, default=0, help="0: derived from --events")
    q.set_defaults(func=cmd_ingest)

    jobs = argparse.ArgumentParser(add_help=False, parents=[common])
    jobs.add_argument("--start", type=_date, help="first date (default: the lake's first)")
    jobs.add_argument("--end", type=_date, help="last date (default: the lake's last)")
    jobs.add_argument("--master", help="Spark master for this run (default from settings: local[*])")
    for name, title, text in (
        ("samples", "Spark: labelled samples with point-in-time real-time features",
         "Join impressions with clicks and ratings into labelled samples with context and real-time window "
         "features as of each impression (samples/event_date=D)."),
        ("features", "Spark: user / item features, training table, normalisation statistics",
         "Daily partials, the user / item features as of each day (user_asof, item_asof: joined to the "
         "samples they make the training table), its feature statistics and the latest user / item snapshots."),
        ("sessions", "Spark: gap-based sessions", "Sessionize behaviour into item sequences (sessions/event_date=D)."),
        ("graphs", "Spark: user-item, item-item and user-user graphs",
         "Weighted edge lists with id maps under graphs/as_of=END (needs sessions)."),
        ("pipeline", "Spark: samples, features, sessions and graphs in order",
         "Run every offline feature job for the date range."),
    ):  # fmt: skip
        p = sub.add_parser(name, parents=[jobs], help=title, description=text)
        if name in ("samples", "pipeline"):
            p.add_argument("--window", type=_positive, help="click attribution window, seconds")
        if name in ("sessions", "pipeline"):
            p.add_argument("--gap", type=_positive, help="session inactivity gap, seconds (<= 86400)")
        p.set_defaults(func=cmd_jobs)

    json_opt = argparse.ArgumentParser(add_help=False)
    json_opt.add_argument(
        "--json", action="store_true", help="print only the JSON result on stdout (progress on stderr)"
    )
    p = sub.add_parser("review-items", parents=[common], help="machine review of the lake's items (content safety)",
                       description="Run the content-safety rules over the lake's item titles and tags: approve "
                       "clean items, queue doubtful ones for /review, reject banned ones. Human decisions stay.")  # fmt: skip
    p.add_argument("--rereview", action="store_true", help="also re-review items a person already decided")
    p.set_defaults(func=cmd_review_items)

    p = sub.add_parser("fraud-job", parents=[jobs], help="Spark: gangs and long-period anomalies into a blocklist",
                       description="Link users by shared devices / IPs and synchronised clicks, find connected "
                       "components with Spark, score them, and write a versioned blocklist to "
                       "fraud_blocklist/version=V/ (and to Redis with --publish, where the online guard reads it).")  # fmt: skip
    p.add_argument("--version", help="blocklist version (default: derived from the range and the rows)")
    p.add_argument("--publish", action="store_true", help="publish the blocklist to Redis as the current one")
    p.set_defaults(func=cmd_fraud_job)

    p = sub.add_parser("bench", help="benchmarks (last output line is JSON)", description="Run a benchmark.")
    bsub = p.add_subparsers(dest="what", required=True, metavar="WHAT")
    q = bsub.add_parser("features", parents=[common, json_opt], help="synthetic events through the feature pipeline",
                        description="Generate N synthetic events, run samples, features, sessions and graphs, "
                        "and print events/s, peak RSS and per-stage seconds.")  # fmt: skip
    q.add_argument("--events", type=_positive, default=1_000_000)
    q.add_argument("--seed", type=int, default=42)
    q.set_defaults(func=cmd_bench)
    q = bsub.add_parser("embeddings", parents=[common, json_opt], help="DeepWalk and GraphSAGE recall on a MovieLens split",
                        description="Train DeepWalk and GraphSAGE on a MovieLens-100K directory (or the reference "
                        "split next to it) and print nDCG / recall / precision @10, coverage and training time "
                        "for pure embedding recall, next to popularity.")  # fmt: skip
    q.add_argument(
        "--data", type=Path, required=True, help="MovieLens-100K directory or ml-100k-split directory"
    )
    q.set_defaults(func=cmd_bench)

    q = bsub.add_parser("ctr", parents=[common, json_opt], help="Wide&Deep and the MoE ranker against DeepCTR-Torch peers",
                        description="On MovieLens-100K (rating 3 dropped, rating >= 4 positive, random 80/10/10 "
                        "split, seed 42): train Wide&Deep and the MoE ranker and, in the same run, DeepCTR-Torch's "
                        "WDL and DeepFM (the `bench` extra), and print test AUC, log loss and training "
                        "samples/s.")  # fmt: skip
    q.add_argument("--data", type=Path, required=True, help="MovieLens-100K directory")
    q.set_defaults(func=cmd_bench)
    q = bsub.add_parser("serve", parents=[common, json_opt], help="the service under load next to its compute floor",
                        description="Build a synthetic release (N items, M users), start a real Redis and the "
                        "service with its workers, drive it from a separate load-generator process at fixed "
                        "concurrency, and print rps and latency percentiles next to the in-process compute "
                        "floor (recall + ranker forward, no HTTP).")  # fmt: skip
    q.add_argument("--items", type=_positive, default=100_000)
    q.add_argument("--users", type=_positive, default=100_000)
    q.add_argument("--duration", type=_positive, default=30, help="seconds of measured load")
    q.add_argument("--concurrency", type=_positive, default=8, help="requests in flight")
    q.add_argument("--workers", type=_positive, default=2, help="uvicorn worker processes")
    q.add_argument("--connections", type=_positive,
                   help="keep-alive connections of the load generator (default 4 x concurrency, each request sent "
                   "on a lightly loaded one, as an L7 load balancer does; = concurrency pins one per worker)")  # fmt: skip
    q.add_argument("--k", type=_positive, default=10, help="items per request")
    q.add_argument(
        "--ranker",
        choices=["mlp", "moe", "widedeep"],
        default="mlp",
        help="fine ranker: the MLP ranker, or the MoE / Wide&Deep CTR ranker (serving.ranker = ctr)",
    )
    q.add_argument("--seed", type=int, default=0)
    q.set_defaults(func=cmd_bench)

    p = sub.add_parser(
        "export", help="batch exports through the serving pipeline", description="Batch exports."
    )
    esub = p.add_subparsers(dest="what", required=True, metavar="WHAT")
    q = esub.add_parser("recommendations", parents=[common], help="top-K unseen items for every user of a MovieLens directory",
                        description="Ingest a MovieLens directory (100K, 1M/10M .dat or CSV; a u.data replaced by a "
                        "split's train.tsv works), train the recall ensemble, publish a release and write the "
                        "service's top-K for every user as CSV user_id,item_id,score,rank (seen items excluded, "
                        "deterministic for --seed). The last output line is a JSON summary.")  # fmt: skip
    q.add_argument("--data", type=Path, required=True, help="MovieLens directory")
    q.add_argument("--k", type=_positive, default=10)
    q.add_argument("--out", type=Path, required=True, help="CSV file to write")
    q.add_argument("--seed", type=int, default=42)
    q.add_argument(
        "--diversify", action="store_true", help="keep the service's genre-diversity re-rank window"
    )
    q.add_argument(
        "--exposure-discount",
        type=float,
        default=0.0,
        help="lambda of the exposure-discount control stage (a per-list coverage penalty); 0 = off",
    )
    q.add_argument("--coverage-floor", type=_share, default=0.36,
                   help="share of the catalog the lists must cover, reached by the cheapest swaps of items below "
                   "each user's top K (control/coverage.py); 0 turns it off")  # fmt: skip
    q.add_argument("--deepwalk-seeds", type=int, help="DeepWalk members of the ensemble (default 3)")
    q.add_argument("--graphsage-seeds", type=int, help="GraphSAGE members of the ensemble (default 3)")
    q.add_argument("--ials-seeds", type=int, help="iALS members of the ensemble (default 1)")
    q.add_argument("--ials-weight", type=float,
                   help="the iALS family's weight in the ensemble (default 1; DeepWalk's and GraphSAGE's are 1)")  # fmt: skip
    q.add_argument("--ease-weight", type=float,
                   help="weight of the ensemble's item-item member, a rating-weighted DLAE served at rank 256 "
                   "(models/ease.py); default 0.5, 0 = none")  # fmt: skip
    q.add_argument("--popularity-weight", type=float,
                   help="beta of the ensemble's popularity prior (models/ensemble.py); default 0.2, 0 = none")  # fmt: skip
    q.add_argument("--deepwalk-return-p", type=_positive_floats, dest="deepwalk_return_ps",
                   help="node2vec return parameters the DeepWalk members take in turn, e.g. 1,4 (each seed "
                   "with both); default: first-order walks")  # fmt: skip
    q.set_defaults(func=cmd_export)
    q = esub.add_parser("evaluate", parents=[common], help="score an exported CSV against a held-out split",
                        description="nDCG / recall / precision / MAP / hit rate @K, catalog coverage and popularity "
                        "bias of an exported CSV against a test file (user, item, rating, ts; tab-separated), "
                        "averaged over every test user. The last output line is JSON.")  # fmt: skip
    q.add_argument("--recs", type=Path, required=True, help="CSV written by export recommendations")
    q.add_argument("--test", type=Path, required=True)
    q.add_argument("--train", type=Path, required=True, help="the training file (seen items, popularity)")
    q.add_argument("--k", type=_positive, default=10)
    q.set_defaults(func=cmd_export)

    q = bsub.add_parser("fraud", parents=[common, json_opt], help="anti-fraud rules on replayed ml-100k with injected attacks",
                        description="Replay MovieLens-100K as impressions and clicks, inject labelled attacks (bot "
                        "click floods, click farms, replayed clicks, impression-less clicks), judge every event "
                        "with the real-time guard on a private Redis, and print precision / recall per attack, "
                        "the false-positive rate on normal users and the CTR model's test AUC trained on clean, "
                        "attacked+filtered and attacked data.")  # fmt: skip
    q.add_argument("--data", type=Path, required=True, help="MovieLens-100K directory")
    q.add_argument("--seed", type=int, default=42)
    q.set_defaults(func=cmd_bench)
    q = bsub.add_parser("pacing", parents=[common, json_opt], help="PID exposure pacing against no control and a hard cap",
                        description="Simulate a day of diurnal traffic with a 3x surge, driving the real pacing "
                        "controller on Redis, and print overshoot of the daily cap, RMSE to the target curve, "
                        "rise / settling intervals after the surge and the share of the day served, for no "
                        "control, a hard cap and PID.")  # fmt: skip
    q.add_argument("--seed", type=int, default=0)
    q.set_defaults(func=cmd_bench)

    p = sub.add_parser("pacing", help="exposure pacing tools", description="Exposure pacing tools.")
    psub = p.add_subparsers(dest="what", required=True, metavar="WHAT")
    q = psub.add_parser("autotune", parents=[common, json_opt], help="search PID gains on the pacing simulator",
                        description="Random search plus coordinate refinement of kp, ki, kd, dead band and "
                        "integral discount on simulated surge days (tuning seeds), re-run on a held-out day. "
                        "Prints the best gains (the [pacing] settings to use) and their metrics.")  # fmt: skip
    q.add_argument("--trials", type=_positive, default=24, help="random draws before refinement")
    q.add_argument("--rounds", type=int, default=2, help="coordinate refinement rounds")
    q.add_argument("--seed", type=int, default=0, help="held-out day the winner is reported on")
    q.set_defaults(func=cmd_pacing)

    p = sub.add_parser("train", parents=[common], help="train a recall model and publish a release",
                       description="Train a recall model, build the FAISS index, publish a serving release. "
                       "baseline: popularity + PureSVD on clicked samples; deepwalk / graphsage: graph "
                       "embeddings on the latest graphs/ snapshot, evaluated on a time holdout, logged and "
                       "registered in MLflow.")  # fmt: skip
    p.add_argument(
        "--model", choices=["baseline", "deepwalk", "graphsage", "widedeep", "moe"], default="baseline"
    )
    p.add_argument(
        "--eval-days",
        type=_positive,
        default=7,
        help="rankers: most recent days held out as the evaluation window",
    )
    p.add_argument("--epochs", type=int, default=5, help="rankers: most epochs (early stopping)")
    p.add_argument("--start", type=_date, help="baseline: first sample date")
    p.add_argument("--end", type=_date, help="baseline: last sample date")
    p.add_argument("--dim", type=_positive, default=64, help="baseline: embedding dimension")
    p.add_argument(
        "--holdout", type=float, default=0.1, help="graph models: newest fraction of edges held out"
    )
    p.add_argument("--no-eval", action="store_true", help="graph models: skip the holdout evaluation")
    p.add_argument("--no-publish", action="store_true", help="graph models: log and register only")
    p.add_argument(
        "--item2vec", action="store_true", help="deepwalk: add the session item sequences to the walks"
    )
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("index", help="vector index of a release", description="Vector index commands.")
    isub = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    q = isub.add_parser("build", parents=[common], help="(re)build the FAISS index of a release from its model",
                        description="Build the FAISS index of a release (default: the current one) from its "
                        "model's item vectors. auto picks flat / hnsw / ivf / ivfpq by catalog size.")  # fmt: skip
    q.add_argument("--release", type=Path, help="release directory (default: <serving_dir>/current)")
    q.add_argument("--kind", choices=["auto", "flat", "hnsw", "ivf", "ivfpq"], default="auto")
    q.add_argument("--nprobe", type=_positive, help="IVF cells searched per query (default: nlist/16, >= 8)")
    q.set_defaults(func=cmd_index)

    p = sub.add_parser("serve", parents=[common], help="run the recommendation API",
                       description="Serve the current release over HTTP (uvicorn).")  # fmt: skip
    p.add_argument("--host")
    p.add_argument("--port", type=int)
    p.add_argument("--workers", type=int)
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("promote", parents=[common], help="promote a ranker version to champion through the gate",
                       description="Score the registered version and the current champion on the lake's most "
                       "recent --eval-days days, check the thresholds and that the candidate does not regress, "
                       "record the decision in MLflow and move the champion alias only on a pass (exit 1 when "
                       "refused).")  # fmt: skip
    p.add_argument("--model", choices=["widedeep", "moe"], required=True)
    p.add_argument("--version", required=True, help="registered version number of recstack-ranker-<model>")
    p.add_argument("--eval-days", type=_positive, default=7)
    p.add_argument("--min-auc", type=float, default=0.6)
    p.add_argument("--max-logloss", type=float, default=0.69)
    p.add_argument(
        "--max-regression", type=float, default=0.0, help="AUC the candidate may lose to the champion"
    )
    p.set_defaults(func=cmd_promote)

    p = sub.add_parser("realtime", parents=[common], help="keep the real-time features in Redis from the bus",
                       description="Consume the events topic (consumer group realtime.group) and keep the "
                       "real-time window features, recent items and the item snapshot in Redis. Runs until "
                       "SIGINT / SIGTERM; run one per partition or more for throughput.")  # fmt: skip
    p.add_argument("action", choices=["consume"])
    p.add_argument("--seconds", type=float, help="stop after this many seconds (default: run until stopped)")
    p.set_defaults(func=cmd_realtime)

    p = sub.add_parser("redis", parents=[common], help="start or stop the embedded local Redis",
                       description="Start or stop the local redis-server used when no Redis URL is set.")  # fmt: skip
    p.add_argument("action", choices=["start", "stop"])
    p.set_defaults(func=cmd_redis)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        return 130
    except (ValueError, FileNotFoundError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
