"""``recstack bench embeddings``: pure embedding recall of DeepWalk and GraphSAGE on the MovieLens reference split.

``--data`` is a MovieLens-100K directory (``u.data``, ``u.user``, ``u.item``) or a split directory
(``train.tsv``, ``test.tsv``). The reference split is looked up as ``train.tsv`` / ``test.tsv`` in the
directory itself or in its sibling ``ml-100k-split``; side information as ``u.user`` / ``u.item`` in the
directory itself or in its sibling ``ml-100k``. Without a reference split the bench makes the same kind of
split itself (per user, 75 % train, seeded) and says so in the output (``"split"``).

Each model recommends the top 10 unseen items for every test user by inner product of its user and item
vectors (the FAISS recall the service runs). In the same run: popularity (the bare baseline) and, when the
``bench`` extra (cornac) is installed, cornac's BPR as the peer.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from recstack.features.keys import Col
from recstack.models.evaluation import (
    Interactions,
    evaluate,
    popularity_topk,
    read_split_tsv,
    topk_from_scores,
)
from recstack.models.recall import (
    DEFAULT_DEEPWALK,
    DEFAULT_EASE,
    DEFAULT_GRAPHSAGE,
    DEFAULT_IALS,
    RecallData,
    evaluate_artifact,
    fit_deepwalk,
    fit_ease,
    fit_graphsage,
    fit_ials,
)

K = 10


@dataclass(frozen=True)
class BenchInput:
    train: Interactions
    test: Interactions
    users: pd.DataFrame | None
    items: pd.DataFrame | None
    split: str


def read_profiles(folder: Path) -> tuple[pd.DataFrame | None, pd.DataFrame | None]:
    """``u.user`` / ``u.item`` of a MovieLens-100K directory as profile frames (None where absent)."""
    users = items = None
    if (folder / "u.user").exists():
        raw = pd.read_csv(
            folder / "u.user", sep="|", header=None, names=["u", "age", "g", "occ", "zip"], dtype=str
        )
        users = pd.DataFrame({
            Col.USER_ID: raw["u"].astype(np.int64), Col.AGE: pd.to_numeric(raw["age"], errors="coerce"),
            Col.GENDER: raw["g"], Col.OCCUPATION: raw["occ"], Col.ZIP_CODE: raw["zip"],
        })  # fmt: skip
    if (folder / "u.item").exists():
        raw = pd.read_csv(folder / "u.item", sep="|", header=None, encoding="latin-1", dtype=str)
        flags = raw.iloc[:, 5:24].astype(int).to_numpy()
        genres = [[f"g{j}" for j in np.flatnonzero(row) if j != 0] for row in flags]
        items = pd.DataFrame({
            Col.ITEM_ID: raw[0].astype(np.int64),
            Col.RELEASE_DATE: pd.to_datetime(raw[2], format="%d-%b-%Y", errors="coerce"),
            Col.GENRES: genres,
        })  # fmt: skip
    return users, items


def stratified_split(
    data: Interactions, ratio: float = 0.75, seed: int = 42
) -> tuple[Interactions, Interactions]:
    rng = np.random.default_rng(seed)
    key = rng.random(len(data))
    df = pd.DataFrame({"u": data.users, "k": key})
    rank = df.groupby("u")["k"].rank(method="first")
    size = df.groupby("u")["u"].transform("size")
    train_mask = (rank <= np.round(size * ratio)).to_numpy()
    return data.take(train_mask), data.take(~train_mask)


def load_input(path: Path) -> BenchInput:
    path = Path(path)
    if not path.is_dir():
        raise ValueError(f"{path} is not a directory")
    split_dir = next((d for d in (path, path.parent / "ml-100k-split") if (d / "train.tsv").exists()), None)
    side_dir = next((d for d in (path, path.parent / "ml-100k") if (d / "u.user").exists()), None)
    users, items = read_profiles(side_dir) if side_dir else (None, None)
    if split_dir is not None:
        return BenchInput(read_split_tsv(split_dir / "train.tsv"), read_split_tsv(split_dir / "test.tsv"),
                          users, items, "reference")  # fmt: skip
    if not (path / "u.data").exists():
        raise ValueError(f"{path} has neither train.tsv/test.tsv nor u.data")
    data = read_split_tsv(path / "u.data")
    train, test = stratified_split(data)
    return BenchInput(train, test, users, items, "stratified-75-seed42")


def cornac_bpr(inp: BenchInput, test_users: np.ndarray) -> tuple[Any, np.ndarray, np.ndarray, float] | None:
    """The peer: cornac's BPR with the reference settings (k 200, 100 epochs, lr 0.01, reg 0.001), when the
    ``bench`` extra is installed. Returns (score function, item ids, train seconds)."""
    try:
        import cornac
        from cornac.models import BPR
    except ImportError:
        return None
    triples = list(zip(inp.train.users.astype(str), inp.train.items.astype(str),
                       (inp.train.weight * 5).astype(float), strict=True))  # fmt: skip
    ds = cornac.data.Dataset.from_uir(triples, seed=42)
    t0 = time.perf_counter()
    model = BPR(k=200, max_iter=100, learning_rate=0.01, lambda_reg=0.001, seed=42, verbose=False).fit(ds)
    train_s = time.perf_counter() - t0
    item_ids = np.array([int(i) for i in sorted(ds.iid_map, key=ds.iid_map.get)], np.int64)
    u, v, b = (
        torch.as_tensor(np.asarray(x, np.float32)) for x in (model.u_factors, model.i_factors, model.i_biases)
    )
    rows = np.array([ds.uid_map.get(str(x), -1) for x in test_users.tolist()])
    return (lambda r: u[torch.as_tensor(r)] @ v.T + b), rows, item_ids, train_s


def bench_embeddings(path: Path, progress: Any = None) -> dict[str, Any]:
    inp = load_input(path)
    data = RecallData.build(inp.train, inp.users, inp.items, lineage={"data": str(path), "split": inp.split})
    test_users = np.unique(inp.test.users)
    catalog = len(np.union1d(data.item_ids, inp.test.items))

    def rounded(metrics: dict[str, float], train_s: float) -> dict[str, float]:
        return {**{k: round(v, 4) for k, v in metrics.items()}, "train_s": round(train_s, 1)}

    out: dict[str, Any] = {"split": inp.split, "users": int(len(test_users)), "items": int(catalog)}
    t0 = time.perf_counter()
    recs = popularity_topk(inp.train, test_users, K)
    out["popularity"] = rounded(evaluate(recs, inp.test, inp.train, K, catalog), time.perf_counter() - t0)
    peer = cornac_bpr(inp, test_users)
    if peer is not None:
        fn, peer_rows, peer_items, peer_s = peer
        col = {int(i): c for c, i in enumerate(peer_items.tolist())}
        peer_seen = {
            u: np.array([col[int(data.item_ids[c])] for c in cols], np.int64)
            for u, cols in data.seen_rows().items()
        }
        recs = topk_from_scores(fn, test_users, peer_rows, peer_items, peer_seen, K)
        out["cornac_bpr"] = rounded(evaluate(recs, inp.test, inp.train, K, catalog), peer_s)
    t0 = time.perf_counter()
    art = fit_deepwalk(data, DEFAULT_DEEPWALK, "bench", progress=progress)
    out["deepwalk"] = rounded(evaluate_artifact(art, data, inp.test, K, catalog), time.perf_counter() - t0)
    t0 = time.perf_counter()
    art, _ = fit_graphsage(data, DEFAULT_GRAPHSAGE, "bench", progress=progress)
    out["graphsage"] = rounded(evaluate_artifact(art, data, inp.test, K, catalog), time.perf_counter() - t0)
    t0 = time.perf_counter()
    art = fit_ials(data, DEFAULT_IALS, "bench", progress=progress)
    out["ials"] = rounded(evaluate_artifact(art, data, inp.test, K, catalog), time.perf_counter() - t0)
    t0 = time.perf_counter()
    art = fit_ease(data, DEFAULT_EASE, "bench")
    out["ease_rank64"] = rounded(evaluate_artifact(art, data, inp.test, K, catalog), time.perf_counter() - t0)
    return out
