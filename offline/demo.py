"""``recstack demo``: the whole loop on embedded defaults, from raw events to a running API.

Works in ``<home>/demo`` and starts from an empty lake there on each run, so it never mixes with a real lake.
"""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path

import httpx
import numpy as np
from recstack.features.settings import Settings


def _print_recs(
    title: str, user_id: int, items: list[tuple[int, float, str]], titles: dict[int, str]
) -> None:
    print(f"\n  {title} user {user_id}:")
    for rank, (item, score, channel) in enumerate(items, 1):
        print(
            f"    {rank:2d}. item {item:<7d} {titles.get(item, '')[:40]:40s} score {score:8.4f}  via {channel}"
        )


def run_demo(settings: Settings, data: Path | None, events: int, serve: bool, port: int | None) -> int:
    from recstack.features.bus import open_bus
    from recstack.features.redis_local import ensure_redis_url
    from recstack.features.schema import Event, EventType
    from recstack.models.baseline import BaselineConfig
    from recstack.offline.cli import StepProgress
    from recstack.offline.jobs.samples import run_samples_job
    from recstack.offline.jobs.train import run_train_job
    from recstack.offline.lake import EventLake
    from recstack.offline.spark import spark_session
    from recstack.online.pipeline import Recommender, ServingRelease

    settings = settings.model_copy(update={"home": settings.home / "demo"})
    progress = StepProgress(6)

    progress.next("event bus and state store")
    redis_url = ensure_redis_url(settings)
    bus = open_bus(settings.bus.url or redis_url, settings.bus, key_prefix=settings.redis.key_prefix)
    progress.line(f"redis at {redis_url}; bus {settings.bus.url or redis_url} (Redis Streams)")

    progress.next(f"ingest {'MovieLens ' + str(data) if data else f'{events:,} synthetic events'}")
    shutil.rmtree(settings.lake_root, ignore_errors=True)
    lake = EventLake(settings.lake_root)
    if data:
        from recstack.offline.ingest.movielens import ingest_movielens

        report = ingest_movielens(data, lake, settings.data, progress=progress.line)
    else:
        from recstack.offline.ingest.synthetic import SyntheticConfig, ingest_synthetic

        report = ingest_synthetic(
            SyntheticConfig(events=events, seed=settings.data.seed), lake, progress.line
        )

    progress.next("Spark: join impressions with clicks into labelled samples")
    dates = lake.event_dates()
    spark = spark_session(settings.spark)
    n = run_samples_job(spark, settings.lake_root, dates[0], dates[-1])
    progress.line(f"{n:,} samples over {len(dates)} days")

    progress.next("train popularity + PureSVD embeddings, build the FAISS index")
    release_dir = run_train_job(
        settings.lake_root,
        settings.serving_dir,
        BaselineConfig(seed=settings.data.seed),
        progress=progress.line,
    )
    release = ServingRelease.load(release_dir)
    recommender = Recommender(release, settings.serving)

    progress.next("publish a click to the event bus")
    user = int(release.artifact.user_ids[0])
    item = int(release.artifact.popular_items[0])
    event = Event(event_id=f"demo-{time.time_ns()}", event_type=EventType.CLICK, ts=np.datetime64("now").item(),
                  user_id=user, item_id=item, page="home", device="web")  # fmt: skip
    bus.publish(settings.bus.events_topic, [event.to_json_bytes()])
    progress.line(f"published event {event.event_id} to topic {settings.bus.events_topic!r}")
    bus.close()

    items = lake.read_items()
    titles = dict(zip(items["item_id"], items["title"], strict=True))
    rng = np.random.default_rng(settings.data.seed)
    users = [int(u) for u in rng.choice(release.artifact.user_ids, size=3, replace=False)]
    unknown = int(release.artifact.user_ids.max()) + 1000

    if not serve:
        progress.next("recommendations (in process, same pipeline as the API)")
        for uid in [*users, unknown]:
            rec = recommender.recommend(uid, 5)
            label = "cold-start (unknown)" if uid == unknown else "known"
            _print_recs(label, uid, [(i.item_id, i.score, i.channel) for i in rec.items], titles)
        print(f"\n{report.summary()}\nrelease {release.version} in {release_dir}")
        return 0

    import uvicorn
    from recstack.online.app import create_app

    progress.next("serve the API")
    port = port or settings.serving.port
    server = uvicorn.Server(
        uvicorn.Config(create_app(settings), host=settings.serving.host, port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    base = f"http://{settings.serving.host}:{port}"
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            print(f"error: the API did not start on {base}")
            return 1
        time.sleep(0.1)
    with httpx.Client(base_url=base) as client:
        for uid in [*users, unknown]:
            body = client.get("/recommend", params={"user_id": uid, "k": 5}).json()
            label = "cold-start (unknown)" if body["fallback"] else "known"
            _print_recs(
                f"GET /recommend — {label}",
                uid,
                [(i["item_id"], i["score"], i["channel"]) for i in body["items"]],
                titles,
            )
    print(f"\n{report.summary()}")
    print(f"\nAPI docs: {base}/docs   (Ctrl-C to stop)")
    try:
        while thread.is_alive():
            thread.join(0.5)
    except KeyboardInterrupt:
        server.should_exit = True
        thread.join(5)
    return 0
