"""``recstack bench serve``: the recommendation service under load, next to its compute floor.

1. Builds a synthetic release of ``--items`` items and ``--users`` users (clustered embeddings, power-law
   popularity and activity, genres, tags, titles, demographic segments, neighbour and co-occurrence lists)
   with the production code: ``VectorIndex.build`` (auto kind by catalog size), ``Catalog``,
   ``publish_release``.
2. Starts a real ``redis-server`` and fills the real-time features of the users through ``RealtimeStore``
   (recent clicks and impressions), so every request does its pipelined Redis read.
3. Measures the **compute floor** in this process, without HTTP: ``Recommender.recommend`` (Redis read,
   every channel, merge, pre-rank, the ranker's forward over ``serving.recall_size`` candidates, re-rank)
   for the same requests, one at a time.
4. Starts ``recstack serve`` with ``--workers`` uvicorn workers, as deployed, and drives it from a separate
   load-generator process (``offline/bench/loadgen.py``) at fixed concurrency with Zipf-distributed user ids
   (a few percent unknown users).

The ranker is the MLP ranker (``serving.ranker = mlp``, hidden 128-64 over user, item, cross and dense
features) with seeded, untrained weights: the benchmark measures its cost, not its quality.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from recstack.features.redis_local import free_port, start_redis_server
from recstack.features.settings import Settings
from recstack.models.artifact import EmbeddingArtifact, ItemNeighbors
from recstack.models.catalog import APPROVED, Catalog
from recstack.models.index import VectorIndex
from recstack.offline.jobs.train import publish_release

GENRES = ["action", "adventure", "animation", "children", "comedy", "crime", "documentary", "drama", "fantasy",
          "film-noir", "horror", "musical", "mystery", "romance", "sci-fi", "thriller", "war", "western"]  # fmt: skip
SEGMENTS = [f"{a}|{g}" for a in range(8) for g in ("F", "M")]
NEIGHBORS = 20
COOCCUR = 10
Progress = Callable[[str], None]


def _zipf_weights(n: int, a: float, rng: np.random.Generator) -> np.ndarray:
    w = 1.0 / np.arange(1, n + 1) ** a
    return rng.permutation(w / w.sum())


def _within_cluster(cluster: np.ndarray, per: int, rng: np.random.Generator) -> np.ndarray:
    """(n, per) random other members of each row's cluster (rows of the same cluster are contiguous once
    sorted by cluster)."""
    n = len(cluster)
    order = np.argsort(cluster, kind="stable")
    sorted_c = cluster[order]
    lo = np.searchsorted(sorted_c, cluster, side="left")
    hi = np.searchsorted(sorted_c, cluster, side="right")
    size = np.maximum(hi - lo, 1)
    pick = lo[:, None] + (rng.random((n, per)) * size[:, None]).astype(np.int64)
    return order[np.minimum(pick, n - 1)]


def synthetic_release(settings: Settings, n_items: int, n_users: int, dim: int = 64, seed: int = 0,
                      progress: Progress = print) -> tuple[Path, EmbeddingArtifact, str]:  # fmt: skip
    """Build and publish a synthetic release of the given size; returns (release dir, artifact, index kind)."""
    rng = np.random.default_rng(seed)
    n_clusters = max(16, int(np.sqrt(n_items)) // 4)
    centers = rng.standard_normal((n_clusters, dim)).astype(np.float32)
    item_cluster = rng.integers(0, n_clusters, n_items)
    item_vecs = centers[item_cluster] + 0.5 * rng.standard_normal((n_items, dim)).astype(np.float32)
    item_vecs /= np.linalg.norm(item_vecs, axis=1, keepdims=True)
    user_cluster = rng.integers(0, n_clusters, n_users)
    user_vecs = centers[user_cluster] + 0.7 * rng.standard_normal((n_users, dim)).astype(np.float32)
    user_vecs /= np.linalg.norm(user_vecs, axis=1, keepdims=True)
    item_ids = np.arange(1, n_items + 1, dtype=np.int64) * 7  # sparse, non-contiguous ids
    user_ids = np.arange(1, n_users + 1, dtype=np.int64) * 3
    popularity = _zipf_weights(n_items, 0.9, rng)
    activity = rng.zipf(1.6, n_users).clip(1, 500)
    indptr = np.concatenate([[0], np.cumsum(activity)]).astype(np.int64)
    seen = rng.choice(item_ids, size=int(indptr[-1]), p=popularity)
    pop_order = np.argsort(-popularity)[:1000]
    art = EmbeddingArtifact(
        model="synthetic", version=f"bench-{n_items}-{n_users}-{seed}", user_ids=user_ids, user_vectors=user_vecs,
        item_ids=item_ids, item_vectors=item_vecs, popular_items=item_ids[pop_order],
        popular_scores=popularity[pop_order].astype(np.float32), seen_indptr=indptr, seen_items=seen,
        params={"synthetic": True, "seed": seed},
    )  # fmt: skip
    progress(f"synthetic model: {n_items:,} items, {n_users:,} users, dim {dim}")

    nb = _within_cluster(item_cluster, NEIGHBORS, rng)
    nb_scores = np.sort(rng.uniform(0.3, 0.95, (n_items, NEIGHBORS)).astype(np.float32), axis=1)[:, ::-1]
    neighbors = ItemNeighbors(item_ids, item_ids[nb], np.ascontiguousarray(nb_scores))
    co = _within_cluster(item_cluster, COOCCUR, rng)
    n_genres = 1 + (rng.random(n_items) < 0.4).astype(np.int64) + (rng.random(n_items) < 0.1)
    genre_indptr = np.concatenate([[0], np.cumsum(n_genres)]).astype(np.int64)
    first = (item_cluster % len(GENRES))[np.repeat(np.arange(n_items), n_genres)]
    genre_idx = (first + (np.arange(len(first)) - np.repeat(genre_indptr[:-1], n_genres)) * 5) % len(GENRES)
    words = np.array([f"w{i}" for i in range(5000)])
    title_words = rng.zipf(1.3, (n_items, 3)).clip(1, 5000) - 1
    titles = [" ".join(t) for t in words[title_words].tolist()]
    n_tags = rng.integers(0, 3, n_items)
    tag_indptr = np.concatenate([[0], np.cumsum(n_tags)]).astype(np.int64)
    now = int(time.time())
    first_seen = now - rng.integers(0, 2 * 365 * 86400, n_items)
    first_seen[rng.random(n_items) < 0.01] = -1  # brand-new items
    seg_of_user = rng.integers(0, len(SEGMENTS), n_users).astype(np.int32)
    seg_lists = [np.argsort(-(popularity * rng.uniform(0.5, 1.5, n_items)))[:500] for _ in SEGMENTS]
    catalog = Catalog(
        item_ids=item_ids, genre_names=GENRES, genre_indptr=genre_indptr, genre_idx=genre_idx.astype(np.int64),
        tag_names=[f"tag{i}" for i in range(200)], tag_indptr=tag_indptr,
        tag_idx=rng.integers(0, 200, int(tag_indptr[-1])).astype(np.int64), titles=titles, first_seen_s=first_seen,
        release_year=rng.integers(1950, 2026, n_items).astype(np.int32),
        trending=(popularity * 1e6).astype(np.float32), state=np.full(n_items, APPROVED, np.int8),
        cooccur_indptr=np.arange(0, n_items * COOCCUR + 1, COOCCUR, dtype=np.int64),
        cooccur_items=item_ids[co].ravel(), cooccur_weights=rng.uniform(1, 10, n_items * COOCCUR).astype(np.float32),
        user_ids=user_ids, user_segment=seg_of_user, segment_names=SEGMENTS,
        segment_indptr=np.arange(0, 500 * len(SEGMENTS) + 1, 500, dtype=np.int64),
        segment_items=item_ids[np.concatenate(seg_lists)],
    )  # fmt: skip
    start = time.perf_counter()
    index = VectorIndex.build(item_vecs, item_ids, art.version)
    progress(f"index {index.kind} built in {time.perf_counter() - start:.1f}s")
    release = publish_release(settings.serving_dir, art.version, art, index, neighbors, catalog)
    return release, art, index.kind


def seed_realtime(redis_url: str, prefix: str, art: EmbeddingArtifact, n_events: int, seed: int) -> int:
    """Recent impressions and clicks of the most active users through the real-time store (the consumer's
    write path), timestamped in the last hour so the windows are non-empty."""
    import datetime as dt

    import redis
    from recstack.features.keys import RedisKey
    from recstack.features.realtime import RealtimeStore
    from recstack.features.schema import Event

    rng = np.random.default_rng(seed)
    store = RealtimeStore(redis.Redis.from_url(redis_url), RedisKey(prefix))
    now_ms = int(time.time() * 1000)
    users = art.user_ids[rng.integers(0, len(art.user_ids), n_events)]
    items = art.popular_items[rng.integers(0, len(art.popular_items), n_events)]
    kinds = np.where(rng.random(n_events) < 0.3, "click", "impression")
    ts = now_ms - rng.integers(0, 3_600_000, n_events)
    applied = 0
    for lo in range(0, n_events, 5000):
        batch = [Event(event_id=f"bench-{i}", event_type=str(kinds[i]),
                       ts=dt.datetime.fromtimestamp(ts[i] / 1000, dt.UTC), user_id=int(users[i]),
                       item_id=int(items[i])) for i in range(lo, min(lo + 5000, n_events))]  # fmt: skip
        applied += store.apply(batch)
    return applied


def request_paths(user_ids: np.ndarray, n: int, k: int, seed: int, unknown_share: float = 0.02) -> list[str]:
    """``/recommend`` paths with Zipf-distributed known users and a share of unknown (cold-start) users."""
    rng = np.random.default_rng(seed + 1)
    weights = _zipf_weights(len(user_ids), 1.1, rng)
    users = rng.choice(user_ids, size=n, p=weights)
    unknown = rng.random(n) < unknown_share
    users = np.where(unknown, 10**12 + np.arange(n), users)
    devices = np.array(["ios", "android", "web"])[rng.integers(0, 3, n)]
    return [f"/recommend?user_id={u}&k={k}&page=home&device={d}" for u, d in zip(users.tolist(), devices.tolist(),
                                                                              strict=True)]  # fmt: skip


def _percentiles(ms: np.ndarray) -> dict[str, float]:
    return {"p50_ms": round(float(np.percentile(ms, 50)), 3), "p95_ms": round(float(np.percentile(ms, 95)), 3),
            "p99_ms": round(float(np.percentile(ms, 99)), 3), "mean_ms": round(float(ms.mean()), 3)}  # fmt: skip


def synthetic_ranker(path: Path, art: EmbeddingArtifact, catalog_genres: list[list[str]], model: str,
                     seed: int = 0) -> Path:  # fmt: skip
    """A ``ranker.pt`` (Wide&Deep or MoE) for the synthetic world: the encoder's vocabularies cover every user
    and item, the feature snapshot has a row per user and item, the weights are the seeded initialisation (cost
    only, like the untrained MLP)."""
    import pandas as pd
    import torch
    from recstack.features.definitions import DENSE_FEATURES, FEATURES_BY_NAME
    from recstack.models.ctr import CtrEncoder, build_ranker, model_config
    from recstack.offline.jobs.rank import CROSSES, FIELDS

    rng = np.random.default_rng(seed)
    n_u, n_i = len(art.user_ids), len(art.item_ids)
    users = pd.DataFrame({
        "user_id": art.user_ids, "age_bucket": rng.integers(1, 8, n_u), "gender": rng.choice(["M", "F"], n_u),
        "occupation": rng.choice([f"occ{i}" for i in range(21)], n_u), "zip_prefix": rng.choice([f"{i:03d}" for i in range(100)], n_u),
    })  # fmt: skip
    items = pd.DataFrame({"item_id": art.item_ids, "genres": catalog_genres,
                          "release_year": rng.integers(1950, 2026, n_i)})  # fmt: skip
    for d in DENSE_FEATURES:
        group = FEATURES_BY_NAME[d].group
        if group == "user":
            users[d] = rng.gamma(2.0, 5.0, n_u)
        elif group == "item":
            items[d] = rng.gamma(2.0, 50.0, n_i)
    n = max(n_u, n_i)
    fit = pd.concat([users.iloc[np.arange(n) % n_u].reset_index(drop=True),
                     items.iloc[np.arange(n) % n_i].reset_index(drop=True)], axis=1)  # fmt: skip
    fit = fit.assign(hour=np.arange(n) % 24, weekday=np.arange(n) % 7, page=rng.choice(["home", "detail"], n),
                     slot=np.arange(n) % 10, device=rng.choice(["ios", "android", "web"], n))  # fmt: skip
    for d in DENSE_FEATURES:
        if d not in fit:
            fit[d] = np.log1p(rng.poisson(1.0, n)).astype(float)
    enc = CtrEncoder(FIELDS, "genres", CROSSES, dense=list(DENSE_FEATURES)).fit(fit)
    torch.manual_seed(seed)
    net = build_ranker(model, enc)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"kind": model, "encoder": enc, "state": net.state_dict(), "config": model_config(net),
                "version": f"synthetic-{model}",
                "snapshot": {"users": users, "items": items}}, path)  # fmt: skip
    return path


def compute_floor(settings: Settings, redis_url: str, paths: list[str], n: int) -> dict[str, Any]:
    """``Recommender.recommend`` for the first ``n`` requests, in process (no HTTP), one at a time."""
    from urllib.parse import parse_qs, urlparse

    from recstack.offline.jobs.train import current_release
    from recstack.online.contracts import RequestContext
    from recstack.online.pipeline import Recommender, ServingRelease
    from recstack.online.realtime import RealtimeReader

    release = ServingRelease.load(current_release(settings.serving_dir))
    reader = RealtimeReader.connect(redis_url, settings.redis.key_prefix, settings.serving.redis_timeout_ms,
                                    settings.serving.redis_retry_s)  # fmt: skip
    rec = Recommender(release, settings.serving, realtime=reader)
    reader.refresh_items()
    parsed = [parse_qs(urlparse(p).query) for p in paths[: n + 200]]
    for q in parsed[:200]:  # warm-up: lazy structures, allocator, caches
        rec.recommend(int(q["user_id"][0]), int(q["k"][0]), RequestContext(page="home", device=q["device"][0]))
    lat: list[float] = []
    ranked: list[int] = []
    stages: dict[str, list[float]] = {}
    for q in parsed[200:]:
        t = time.perf_counter()
        out = rec.recommend(int(q["user_id"][0]), int(q["k"][0]), RequestContext(page="home", device=q["device"][0]))
        lat.append((time.perf_counter() - t) * 1000)
        ranked.append(out.ranked)
        for s, v in out.stages.items():
            stages.setdefault(s, []).append(v * 1000)
    rec.close()
    reader.close()
    ms = np.asarray(lat)
    return {"floor_p50_ms": round(float(np.percentile(ms, 50)), 3), "floor_p99_ms": round(float(np.percentile(ms, 99)), 3),
            "floor_mean_ms": round(float(ms.mean()), 3), "candidates_ranked_mean": round(float(np.mean(ranked)), 1),
            "floor_stage_p50_ms": {s: round(float(np.percentile(v, 50)), 3) for s, v in stages.items()}}  # fmt: skip


def _floor_in_subprocess(home: Path, redis_url: str, paths: list[str], n: int,
                         ranker_env: dict[str, str]) -> dict[str, Any]:  # fmt: skip
    """``compute_floor`` in a fresh process with the service workers' thread settings (one BLAS thread)."""
    paths_file = home / "floor-paths.txt"
    paths_file.write_text("\n".join(paths[: n + 200]) + "\n")
    env = {**os.environ, "RECSTACK_HOME": str(home), "RECSTACK_REDIS__URL": redis_url, **ranker_env,
           "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}  # fmt: skip
    out = subprocess.run([sys.executable, "-m", "recstack.offline.bench.serve", "floor", str(paths_file), str(n)],
                         env=env, capture_output=True, text=True, timeout=1800)  # fmt: skip
    if out.returncode != 0:
        raise RuntimeError(f"compute floor failed: {out.stderr.strip()[-1000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def _wait_ready(port: int, proc: subprocess.Popen[bytes], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    ok = 0
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the service exited with {proc.returncode} during start-up")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as r:
                ok = ok + 1 if r.status == 200 else 0
        except OSError:
            ok = 0
        if ok >= 10:  # several answers in a row: every worker is up
            return
        time.sleep(0.2)
    raise RuntimeError(f"the service was not ready after {timeout_s:.0f}s")


def run_serve_bench(n_items: int, n_users: int, duration_s: float, concurrency: int = 8, workers: int = 2,
                    k: int = 10, seed: int = 0, progress: Progress = print,
                    connections: int | None = None, ranker: str = "mlp") -> dict[str, Any]:  # fmt: skip
    """``ranker``: ``mlp`` (the MLP ranker) or ``moe`` / ``widedeep`` (the CTR rankers of ``serving.ranker =
    ctr``); all with their seeded initial weights, which cost what trained ones do."""
    if ranker not in ("mlp", "moe", "widedeep"):
        raise ValueError(f"--ranker must be mlp, moe or widedeep, got {ranker!r}")
    with tempfile.TemporaryDirectory(prefix="recstack-bench-serve-") as tmp:
        home = Path(tmp)
        port = free_port()
        redis_port = free_port()
        redis_proc = start_redis_server(redis_port, home / "redis", persist=False)
        redis_url = f"redis://127.0.0.1:{redis_port}/0"
        ranker_env = {"RECSTACK_SERVING__RANKER": "mlp"}
        if ranker != "mlp":
            ranker_env = {"RECSTACK_SERVING__RANKER": "ctr", "RECSTACK_SERVING__RANKER_PATH": str(home / "ranker.pt")}
        env_settings = {"RECSTACK_HOME": str(home), "RECSTACK_REDIS__URL": redis_url, **ranker_env,
                        "RECSTACK_SERVING__RELOAD_INTERVAL_S": "30"}  # fmt: skip
        settings = Settings(home=home, redis={"url": redis_url}, serving={"ranker": "mlp"})
        server: subprocess.Popen[bytes] | None = None
        try:
            t0 = time.perf_counter()
            _, art, index_kind = synthetic_release(settings, n_items, n_users, seed=seed, progress=progress)
            if ranker != "mlp":
                from recstack.models.catalog import Catalog as _Catalog
                from recstack.offline.jobs.train import current_release

                cat = _Catalog.load(current_release(settings.serving_dir) / "catalog")
                genres = [[cat.genre_names[g] for g in cat.genre_idx[cat.genre_indptr[r]:cat.genre_indptr[r + 1]]]
                          for r in range(len(cat.item_ids))]  # fmt: skip
                synthetic_ranker(home / "ranker.pt", art, genres, ranker, seed)
                progress(f"{ranker} ranker: seeded weights, feature snapshot of {len(art.user_ids):,} users")
            build_s = time.perf_counter() - t0
            seeded = seed_realtime(redis_url, settings.redis.key_prefix, art, min(20 * n_users, 500_000), seed)
            progress(f"real-time store: {seeded:,} events applied")
            paths = request_paths(art.user_ids, 20_000, k, seed)
            floor = _floor_in_subprocess(home, redis_url, paths, 2000, ranker_env)
            progress(f"compute floor p50 {floor['floor_p50_ms']} ms, p99 {floor['floor_p99_ms']} ms, "
                     f"{floor['candidates_ranked_mean']} candidates ranked")  # fmt: skip
            paths_file = home / "paths.txt"
            paths_file.write_text("\n".join(paths) + "\n")
            env = {**os.environ, **env_settings}
            log = open(home / "server.log", "wb")  # noqa: SIM115 - closed with the server below
            server = subprocess.Popen(
                [sys.executable, "-m", "recstack.offline.cli", "serve", "--port", str(port), "--workers", str(workers)],
                env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
            _wait_ready(port, server, timeout_s=600)
            progress(f"service up: {workers} workers on :{port}; load for {duration_s:.0f}s at concurrency {concurrency}")
            load = subprocess.run(
                [sys.executable, "-m", "recstack.offline.bench.loadgen", "--host", "127.0.0.1", "--port", str(port),
                 "--paths-file", str(paths_file), "--concurrency", str(concurrency), "--duration", str(duration_s),
                 "--warmup", "3", "--connections", str(connections or 4 * concurrency),
                 "--spread-workers", str(workers)],
                capture_output=True, text=True, timeout=duration_s + 120,
            )  # fmt: skip
            if load.returncode != 0:
                raise RuntimeError(f"load generator failed: {load.stderr.strip()[-500:]}")
            summary = json.loads(load.stdout.strip().splitlines()[-1])
        finally:
            if server is not None:
                os.killpg(server.pid, signal.SIGTERM)
                server.wait(30)
            redis_proc.terminate()
            redis_proc.wait(10)
    return {
        "items": n_items, "users": n_users, "workers": workers, "concurrency": concurrency, "k": k,
        "duration_s": duration_s, "rps": round(summary["rps"], 1), "p50_ms": summary["p50_ms"],
        "p95_ms": summary["p95_ms"], "p99_ms": summary["p99_ms"], "errors": summary["errors"],
        "requests": summary["requests"], **floor, "ranker": f"{ranker} (seeded weights: cost only)",
        "connections": connections or 4 * concurrency, "index": index_kind, "release_build_s": round(build_s, 1), "loadgen_cpu_s": summary.get("client_cpu_s"),
        "connections_per_worker": summary.get("connections_per_worker"),
    }  # fmt: skip


if __name__ == "__main__":  # the floor, run by ``_floor_in_subprocess``
    from recstack.features.settings import load_settings

    if len(sys.argv) != 4 or sys.argv[1] != "floor":
        sys.exit("usage: python -m recstack.offline.bench.serve floor PATHS_FILE N")
    _settings = load_settings()
    _paths = Path(sys.argv[2]).read_text().split()
    print(json.dumps(compute_floor(_settings, _settings.redis.url or "", _paths, int(sys.argv[3]))))
