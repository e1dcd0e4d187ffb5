"""``recstack export recommendations``: top-K lists for every user of a MovieLens directory, through the service.

Steps (each reported as progress):

1. **Ingest** the directory (100K ``u.data``, 1M/10M ``ratings.dat`` or CSV ``ratings.csv``; a ``u.data``
   replaced by a reference split's ``train.tsv`` is the same format) into a fresh lake under the work
   directory, with the usual validation: malformed or unknown-id records are quarantined and counted.
2. **Train** the recall model on the valid ratings: the ensemble of DeepWalk and GraphSAGE seeds with
   one iALS and one DLAE member (``models/ensemble.py``), folded into one embedding artifact.
3. **Publish** a serving release (model, FAISS index, item-to-item lists, catalog) exactly as ``recstack
   train`` does.
4. **Recommend** with the service's own ``Recommender`` (recall channels → merge/filter → pre-rank → rank →
   re-rank → control) for every user, in a seeded order, asking for ``k + floor_depth`` items; the optional
   ``ExposureDiscount`` control stage (``exposure_discount > 0``) acts per list.
5. **Coverage floor** (``control/coverage.py``, ``coverage_floor > 0``): the cheapest swaps of uncovered items
   from below each user's top k into the list's last shared slot until that share of the catalog has a slot;
   then write ``user_id,item_id,score,rank`` rows (rank 1 = best). Items a user rated are excluded by the
   pipeline's seen filter.

Deterministic for a seed: the models are seeded (DeepWalk on one worker thread, GraphSAGE with torch's
deterministic algorithms), the user order is a seeded permutation
and the request time is the data's last rating time, so two runs write the same file (tested in one
process; two processes on an idle machine wrote identical reference exports too). Two earlier runs with
the same settings did differ (nDCG@10 0.4963 / 0.4970), for a reason not found.
"""

from __future__ import annotations

import csv
import dataclasses
import datetime as dt
import math
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import torch
from recstack.control.coverage import CoverageFloor, FloorReport
from recstack.control.exposure import ExposureDiscount
from recstack.features.keys import Col
from recstack.features.schema import EventType
from recstack.features.settings import ChannelSettings, ServingSettings, Settings
from recstack.models.artifact import ItemNeighbors
from recstack.models.ensemble import EnsembleConfig, fit_ensemble
from recstack.models.evaluation import Interactions
from recstack.models.index import VectorIndex
from recstack.models.recall import RecallData, item_neighbors
from recstack.offline.ingest import IngestReport, Progress, no_progress
from recstack.offline.ingest.movielens import ingest_movielens
from recstack.offline.jobs.embeddings import NEIGHBORS, read_profiles
from recstack.offline.jobs.train import publish_release, release_catalog
from recstack.offline.lake import EventLake
from recstack.online.contracts import RequestContext
from recstack.online.pipeline import Recommender, ServingRelease

HEADER = ("user_id", "item_id", "score", "rank")


@dataclass(frozen=True)
class ExportConfig:
    k: int = 10
    seed: int = 42
    ensemble: EnsembleConfig = EnsembleConfig()
    exposure_discount: float = 0.0  # λ of the ExposureDiscount control stage; 0 turns it off
    coverage_floor: float = 0.36  # the CoverageFloor's target: this share of the catalog gets a slot; 0 = off
    floor_depth: int = 50  # candidates per user below the top k that the floor may swap in
    diversify: bool = False  # keep the service's genre-window re-rank (costs ~0.007 nDCG@10 on ml-100k)
    channels: tuple[str, ...] = ("embedding",)  # kinds of the serving channels to run (the service's defaults
    # add item2item, genre, ... which only matter for users the ensemble cannot place)


@dataclass(frozen=True)
class ExportReport:
    out: Path
    users: int
    rows: int
    items_covered: int
    ingest: IngestReport
    model_version: str
    seconds: dict[str, float]
    floor: FloorReport | None = None


def rating_interactions(lake_root: Path) -> Interactions:
    """Every valid rating of the lake as (user, item, unix s, rating / 5)."""
    events = EventLake(lake_root).read_events()
    ratings = events.filter(pc.equal(events[Col.EVENT_TYPE], EventType.RATING.value))
    if ratings.num_rows == 0:
        raise ValueError(f"no valid ratings in {lake_root}: nothing to train on")
    ts = ratings[Col.TS].cast("int64").to_numpy() // 1000
    return Interactions(
        users=ratings[Col.USER_ID].to_numpy().astype(np.int64), items=ratings[Col.ITEM_ID].to_numpy().astype(np.int64),
        ts=ts.astype(np.int64), weight=ratings[Col.VALUE].to_numpy().astype(np.float64) / 5.0,
    )  # fmt: skip


def _serving_settings(base: ServingSettings, cfg: ExportConfig) -> ServingSettings:
    wanted = [c for c in base.channels if c.kind in cfg.channels]
    if not wanted:
        wanted = [
            ChannelSettings(name=f"export/{kind}", kind=kind, quota=base.recall_size) for kind in cfg.channels
        ]  # type: ignore[arg-type]
    # a batch job has no request deadline: every channel runs to completion
    update: dict[str, object] = {"channels": [c.model_copy(update={"timeout_ms": 60_000.0}) for c in wanted],
                                 "ranker": "embedding"}  # fmt: skip
    if not cfg.diversify:  # a window of one item never breaks the genre rule: score order
        update["rerank"] = base.rerank.model_copy(update={"window": 1, "max_same_genre": 1})
    return base.model_copy(update=update)


def export_recommendations(settings: Settings, data: Path, out: Path, cfg: ExportConfig = ExportConfig(),
                           workdir: Path | None = None, progress: Progress = no_progress) -> ExportReport:  # fmt: skip
    """Train on ``data`` and write the top ``cfg.k`` unseen items of every user to ``out`` (see module docs)."""
    if cfg.k <= 0:
        raise ValueError(f"--k must be positive, got {cfg.k}")
    work = Path(workdir) if workdir else settings.home / "export"
    shutil.rmtree(work, ignore_errors=True)
    seconds: dict[str, float] = {}

    t0 = time.perf_counter()
    progress(f"[1/4] ingest {data}")
    lake_root = work / "lake"
    report = ingest_movielens(data, EventLake(lake_root), settings.data, progress=progress)
    interactions = rating_interactions(lake_root)
    users, items = read_profiles(lake_root)
    seconds["ingest"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    version = f"export-{dt.datetime.now(dt.UTC).strftime('%Y%m%dT%H%M%S')}"
    progress(f"[2/4] train the recall ensemble on {len(interactions):,} ratings")
    rdata = RecallData.build(interactions, users, items, lineage={"data": str(data), "job": "export"})
    ens = dataclasses.replace(cfg.ensemble, base_seed=cfg.seed)
    was = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(
        True
    )  # GraphSAGE's CPU scatter-adds differ by ~1e-6 run to run otherwise
    try:
        artifact = fit_ensemble(rdata, ens, version, progress=progress)
    finally:
        torch.use_deterministic_algorithms(was)
    seconds["train"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    progress("[3/4] publish the serving release (model, index, neighbours, catalog)")
    index = VectorIndex.build(artifact.item_vectors, artifact.item_ids, version)
    neighbors = ItemNeighbors(
        artifact.item_ids, *item_neighbors(artifact.item_vectors, artifact.item_ids, NEIGHBORS)
    )
    release_dir = publish_release(work / "serving", version, artifact, index, neighbors,
                                  release_catalog(lake_root, artifact))  # fmt: skip
    release = ServingRelease.load(release_dir)
    seconds["publish"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    user_ids = np.unique(interactions.users)
    order = user_ids[np.random.default_rng(cfg.seed).permutation(len(user_ids))]
    control = [ExposureDiscount(cfg.exposure_discount)] if cfg.exposure_discount > 0 else []
    recommender = Recommender(release, _serving_settings(settings.serving, cfg), control=list(control))
    context = RequestContext(time=dt.datetime.fromtimestamp(int(interactions.ts.max()) + 1, dt.UTC))
    lists: dict[int, list[tuple[int, float]]] = {}
    progress(f"[4/4] recommend for {len(order):,} users")
    try:
        for n, user in enumerate(order.tolist(), 1):
            rec = recommender.recommend(
                user, cfg.k + (cfg.floor_depth if cfg.coverage_floor > 0 else 0), context
            )
            picked = [(it.item_id, it.score) for it in rec.items]
            for hook in control:
                hook.record(np.array([i for i, _ in picked[: cfg.k]], np.int64))
            lists[user] = picked
            if n % 500 == 0 or n == len(order):
                progress(f"recommended for {n:,}/{len(order):,} users")
    finally:
        recommender.close()
    floor: FloorReport | None = None
    if cfg.coverage_floor > 0:
        lists, floor = CoverageFloor(math.ceil(cfg.coverage_floor * len(artifact.item_ids))).apply(
            lists, cfg.k
        )
        progress(f"coverage floor: {floor.items_before:,} -> {floor.items_after:,} items by {floor.swaps:,} swaps "
                 f"(score loss {floor.score_loss:.1f})")  # fmt: skip
    lists = {u: lst[: cfg.k] for u, lst in lists.items()}
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    rows = 0
    with tmp.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(HEADER)
        for user in user_ids.tolist():
            for rank, (item, score) in enumerate(lists[user], 1):
                writer.writerow((user, item, f"{score:.6f}", rank))
                rows += 1
    tmp.replace(out)
    seconds["recommend"] = time.perf_counter() - t0
    covered = len({i for lst in lists.values() for i, _ in lst})
    return ExportReport(out, len(user_ids), rows, covered, report, version, seconds, floor)


def evaluate_export(recs_csv: Path, test: Path, train: Path, k: int = 10) -> dict[str, float]:
    """Score an exported CSV against a held-out split file (user, item, rating, ts; tab-separated) with the
    protocol of ``models/evaluation.evaluate``: binary relevance, averaged over every test user."""
    import pandas as pd
    from recstack.models.evaluation import TopK, evaluate, read_split_tsv

    recs = pd.read_csv(recs_csv)
    if list(recs.columns) != list(HEADER):
        raise ValueError(f"{recs_csv}: header must be {','.join(HEADER)}, got {','.join(recs.columns)}")
    recs = recs.sort_values(["user_id", "rank"])
    users = np.unique(recs["user_id"].to_numpy(np.int64))
    table = np.full((len(users), k), -1, np.int64)
    row = np.searchsorted(users, recs["user_id"].to_numpy(np.int64))
    pos = recs["rank"].to_numpy(np.int64) - 1
    ok = pos < k
    table[row[ok], pos[ok]] = recs["item_id"].to_numpy(np.int64)[ok]
    tr, te = read_split_tsv(Path(train)), read_split_tsv(Path(test))
    return evaluate(TopK(users=users, items=table), te, tr, k)
