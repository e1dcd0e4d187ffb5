"""A small hand-made release (model, flat FAISS index, neighbour lists, catalog from lake-shaped frames), so
each recall channel's answer can be checked exactly."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from recstack.models.artifact import EmbeddingArtifact, ItemNeighbors
from recstack.models.catalog import Catalog, build_catalog
from recstack.models.index import VectorIndex
from recstack.models.recall import item_neighbors
from recstack.offline.jobs.train import publish_release

GENRES = ["action", "comedy", "drama"]
NOW = dt.datetime(2026, 6, 1, 12, tzinfo=dt.UTC)


@dataclass
class SmallWorld:
    serving_dir: Path
    release_dir: Path
    artifact: EmbeddingArtifact
    catalog: Catalog
    items: pd.DataFrame
    users: pd.DataFrame
    user_item: pd.DataFrame


def build_world(serving_dir: Path, version: str = "small-v1", seed: int = 0, n_items: int = 60,
                n_users: int = 20) -> SmallWorld:  # fmt: skip
    rng = np.random.default_rng(seed)
    item_ids = np.arange(1, n_items + 1, dtype=np.int64) * 10
    user_ids = np.arange(1, n_users + 1, dtype=np.int64)
    words = ["star", "wars", "trek", "love", "story", "night", "city", "ghost"]
    items = pd.DataFrame({
        "item_id": item_ids,
        "title": [f"{words[i % 8]} {words[(i * 3 + 1) % 8]} ({1990 + i % 30})" for i in range(n_items)],
        "release_date": [dt.date(1990 + i % 30, 1, 1) for i in range(n_items)],
        "genres": [[GENRES[i % 3]] if i % 5 else [GENRES[i % 3], GENRES[(i + 1) % 3]] for i in range(n_items)],
        "tags": [["classic"] if i % 7 == 0 else [] for i in range(n_items)],
    })  # fmt: skip
    users = pd.DataFrame({"user_id": user_ids, "age": [15 + 3 * i for i in range(n_users)],
                          "gender": ["F" if i % 2 else "M" for i in range(n_users)]})  # fmt: skip
    # each user interacted with 5 items; the last 5 items are new (never interacted: fresh)
    rows = []
    for u in user_ids:
        for it in rng.choice(item_ids[:-5], 5, replace=False):
            age_days = int(rng.integers(0, 300))
            rows.append((int(u), int(it), float(rng.uniform(0.1, 2.0)), NOW - dt.timedelta(days=age_days)))
    user_item = pd.DataFrame(rows, columns=["user_id", "item_id", "decayed_weight", "first_ts"])
    item_item = pd.DataFrame({"src": item_ids[:-1], "dst": item_ids[1:], "weight": np.arange(1, n_items, dtype=float)})
    catalog = build_catalog(items, users, user_item, item_item, as_of="2026-06-01")
    dim = 8
    iv = rng.standard_normal((n_items, dim)).astype(np.float32)
    uv = rng.standard_normal((n_users, dim)).astype(np.float32)
    seen_lists = [user_item[user_item.user_id == u].item_id.to_numpy(np.int64) for u in user_ids]
    indptr = np.concatenate([[0], np.cumsum([len(s) for s in seen_lists])]).astype(np.int64)
    pop = user_item.groupby("item_id").decayed_weight.sum().sort_values(ascending=False)
    art = EmbeddingArtifact(
        model="small", version=version, user_ids=user_ids, user_vectors=uv, item_ids=item_ids, item_vectors=iv,
        popular_items=pop.index.to_numpy(np.int64), popular_scores=pop.to_numpy(np.float32), seen_indptr=indptr,
        seen_items=np.concatenate(seen_lists),
    )  # fmt: skip
    neighbors = ItemNeighbors(item_ids, *item_neighbors(iv, item_ids, 10))
    index = VectorIndex.build(iv, item_ids, version, kind="flat")
    release = publish_release(serving_dir, version, art, index, neighbors, catalog)
    return SmallWorld(serving_dir, release, art, catalog, items, users, user_item)


@pytest.fixture
def world(tmp_path: Path) -> SmallWorld:
    return build_world(tmp_path / "serving")
