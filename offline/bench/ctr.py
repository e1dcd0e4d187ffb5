"""``recstack bench ctr``: Wide&Deep and the MoE ranker against DeepCTR-Torch's WDL and DeepFM, same run.

Protocol (the issue's): MovieLens-100K ratings with rating 3 dropped; label ``click`` = rating >= 4; a random
80/10/10 split with seed 42; features = user and item ids, demographics (gender, age bucket, occupation, zip
prefix), genres (multi-valued) and release year. The MoE ranker's second task ``like`` is rating == 5 (a
strong like among the positives). Every model trains with early stopping on the validation AUC (patience 3,
at most 10 epochs) and is scored on the test split at its best epoch. Throughput = training samples per
second of training time (evaluation excluded), same batch size for every model.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from recstack.features.definitions import age_bucket, zip_prefix
from recstack.models.ctr import (
    CtrEncoder,
    MoEConfig,
    MoERanker,
    TrainConfig,
    WideDeep,
    auc,
    logloss,
    predict,
    train_ctr,
)
from recstack.offline.bench.embeddings import read_profiles

FIELDS = ["user_id", "item_id", "gender", "age_bucket", "occupation", "zip_prefix", "release_year"]
CROSSES = [("user_id", "genres"), ("item_id", "gender"), ("item_id", "age_bucket"), ("item_id", "occupation"),
           ("gender", "genres"), ("age_bucket", "genres"), ("occupation", "genres"), ("user_id", "release_year")]  # fmt: skip
BATCH = 256
PATIENCE = 3  # epochs without a better validation AUC before stopping (every model)
Progress = Callable[[str], None]


def load_ratings(data: Path) -> pd.DataFrame:
    """Ratings of an ml-100k directory joined with the user and item profiles, rating 3 dropped."""
    data = Path(data)
    if not (data / "u.data").exists():
        raise FileNotFoundError(f"{data} is not a MovieLens-100K directory (no u.data)")
    r = pd.read_csv(data / "u.data", sep="\t", header=None, names=["user_id", "item_id", "rating", "ts"])
    users, items = read_profiles(data)
    if users is None or items is None:
        raise FileNotFoundError(f"{data} needs u.user and u.item for the demographic and genre features")
    r = r[r["rating"] != 3].reset_index(drop=True)
    users = users.assign(age_bucket=users["age"].map(lambda a: age_bucket(None if pd.isna(a) else int(a))),
                         zip_prefix=users["zip_code"].map(zip_prefix))  # fmt: skip
    items = items.assign(release_year=pd.to_datetime(items["release_date"]).dt.year.fillna(0).astype(int))
    r = r.merge(users[["user_id", "gender", "age_bucket", "occupation", "zip_prefix"]], on="user_id", how="left")
    r = r.merge(items[["item_id", "genres", "release_year"]], on="item_id", how="left")
    r["genres"] = r["genres"].map(lambda g: g if isinstance(g, list) else [])
    r["click"] = (r["rating"] >= 4).astype(np.float32)
    r["like"] = (r["rating"] == 5).astype(np.float32)
    return r


def split(frame: pd.DataFrame, seed: int = 42) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    order = np.random.default_rng(seed).permutation(len(frame))
    a, b = int(0.8 * len(frame)), int(0.9 * len(frame))
    return frame.iloc[order[:a]], frame.iloc[order[a:b]], frame.iloc[order[b:]]


def _ours(name: str, model: torch.nn.Module, enc: CtrEncoder, train: pd.DataFrame, val: pd.DataFrame,
          test: pd.DataFrame, tasks: list[str], progress: Progress) -> dict[str, Any]:  # fmt: skip
    tr, va, te = enc.transform(train), enc.transform(val), enc.transform(test)
    result = train_ctr(model, tr, {t: train[t].to_numpy() for t in tasks}, va, {t: val[t].to_numpy() for t in tasks},
                       TrainConfig(batch_size=BATCH, patience=PATIENCE), progress=lambda m: progress(f"{name}: {m}"))  # fmt: skip
    preds = predict(model, te)
    out = {"test_auc": round(auc(test["click"].to_numpy(), preds["click"]), 4),
           "test_logloss": round(logloss(test["click"].to_numpy(), preds["click"]), 4),
           "samples_per_s": round(result.samples_per_s), "best_epoch": result.best_epoch,
           "train_s": round(result.train_seconds, 1)}  # fmt: skip
    if "like" in preds:
        out["like_auc"] = round(auc(test["like"].to_numpy(), preds["like"]), 4)
    if isinstance(model, MoERanker):
        out["expert_utilisation"] = model.utilisation()
    return out


def _deepctr(kind: str, train: pd.DataFrame, val: pd.DataFrame, test: pd.DataFrame, enc: CtrEncoder,
             progress: Progress) -> dict[str, Any]:  # fmt: skip
    """DeepCTR-Torch's WDL / DeepFM on the same features (its own defaults: embedding 4, DNN 256-128)."""
    from deepctr_torch.inputs import SparseFeat, VarLenSparseFeat
    from deepctr_torch.models import WDL, DeepFM

    def inputs(frame: pd.DataFrame) -> dict[str, np.ndarray]:
        codes = enc.codes(frame)
        x = {f: codes[:, j] for j, f in enumerate(enc.fields)}
        x["genres"] = enc.transform(frame).multi.numpy()
        return x

    sparse = [SparseFeat(f, c, embedding_dim=16) for f, c in zip(enc.fields, enc.cardinalities, strict=True)]
    var = [VarLenSparseFeat(SparseFeat("genres", enc.multi_cardinality, embedding_dim=16), maxlen=enc.max_multi,
                            combiner="mean")]  # fmt: skip
    columns = sparse + var
    cls = WDL if kind == "wdl" else DeepFM
    torch.manual_seed(42)
    model = cls(columns, columns, task="binary", device="cpu", seed=42)
    model.compile("adam", "binary_crossentropy")
    xtr, xva, xte = inputs(train), inputs(val), inputs(test)
    best, best_state, best_epoch, waited, seconds, seen = -1.0, None, 0, 0, 0.0, 0
    import copy

    for epoch in range(10):
        start = time.perf_counter()
        model.fit(xtr, train["click"].to_numpy(), batch_size=BATCH, epochs=1, verbose=0)
        seconds += time.perf_counter() - start
        seen += len(train)
        score = auc(val["click"].to_numpy(), model.predict(xva, batch_size=8192).ravel())
        progress(f"deepctr_{kind}: epoch {epoch}: val_auc {score:.4f}")
        if score > best:
            best, best_epoch, waited, best_state = score, epoch, 0, copy.deepcopy(model.state_dict())
        else:
            waited += 1
            if waited >= PATIENCE:
                break
    if best_state is not None:
        model.load_state_dict(best_state)
    p = model.predict(xte, batch_size=8192).ravel()
    return {"test_auc": round(auc(test["click"].to_numpy(), p), 4),
            "test_logloss": round(logloss(test["click"].to_numpy(), p), 4),
            "samples_per_s": round(seen / seconds), "best_epoch": best_epoch, "train_s": round(seconds, 1)}  # fmt: skip


def bench_ctr(data: Path, progress: Progress = print, peers: bool = True) -> dict[str, Any]:
    torch.set_num_threads(max(1, torch.get_num_threads()))
    frame = load_ratings(data)
    train, val, test = split(frame)
    progress(f"{len(frame):,} ratings (3 dropped): train {len(train):,}, val {len(val):,}, test {len(test):,}; "
             f"positives {frame['click'].mean():.3f}")  # fmt: skip
    enc = CtrEncoder(FIELDS, "genres", CROSSES).fit(train)
    out: dict[str, Any] = {"split": "random 80/10/10, seed 42", "rows": len(frame)}
    torch.manual_seed(42)
    out["widedeep"] = _ours("widedeep", WideDeep(enc), enc, train, val, test, ["click"], progress)
    torch.manual_seed(42)
    out["moe"] = _ours("moe", MoERanker(enc, MoEConfig()), enc, train, val, test, ["click", "like"], progress)
    if peers:
        try:
            import deepctr_torch  # noqa: F401
        except ImportError:
            progress("deepctr-torch not installed (pip install -e '.[bench]'): peers skipped")
        else:
            out["deepctr_wdl"] = _deepctr("wdl", train, val, test, enc, progress)
            out["deepctr_deepfm"] = _deepctr("deepfm", train, val, test, enc, progress)
    if "deepctr_wdl" in out:
        out["widedeep_speedup_vs_deepctr_wdl"] = round(out["widedeep"]["samples_per_s"]
                                                        / out["deepctr_wdl"]["samples_per_s"], 2)  # fmt: skip
    return out
