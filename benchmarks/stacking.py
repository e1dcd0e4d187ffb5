"""Does a learned re-ranker stacked on the export's recall ensemble beat the ensemble's own order?

Measured on the ml-100k reference split (the export benchmark's protocol: top 10 unseen items per user,
binary relevance against ``test.tsv``, averaged over all 943 users), in one run, side by side:

* **ensemble**: the export's recall model (3 DeepWalk + 3 GraphSAGE seeds, popularity prior 0.2), top 10 by
  its score over the whole catalogue (no coverage floor);
* **stacked**: a LightGBM LambdaRank model re-ordering the ensemble's top ``--candidates`` per user with
  17 features: the ensemble score, its DeepWalk and GraphSAGE halves, rank and margin to the 10th item,
  EASE (lambda 500) score and rank, item-kNN cosine score, item popularity and mean rating, user activity and
  mean rating, genre affinity, release year and its distance to the user's mean year, age, gender.

Stacking needs scores the re-ranker did not see trained on: the ensemble and every feature are fitted on a
random 80 % of each user's training ratings, the re-ranker learns to put the other 20 % first (early stopping
on a fifth of the users), then the ensemble and features are refitted on all of ``train.tsv`` and the
re-ranker re-orders their candidates. The JSON also reports both orders on the early-stopping users of the
inner split (in-domain, no refit), so a loss from the refit's shift is told apart from no signal at all.

Usage: ``.venv/bin/python benchmarks/stacking.py --split ../shared/data/ml-100k-split --profiles
../shared/data/ml-100k [--json out.json]`` (needs the ``bench`` extra for LightGBM; ~10 min on 2 cores).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import pandas as pd
import reference_split  # benchmarks/reference_split.py, beside this script
import torch
from recstack.models.ensemble import EnsembleConfig, fit_ensemble
from recstack.models.evaluation import Interactions, TopK, evaluate
from recstack.models.recall import RecallData


@dataclass
class Block:
    """Candidates (user row, item column) with features and labels, for one training set."""

    features: pd.DataFrame
    labels: np.ndarray
    cols: np.ndarray  # (U, N) candidate item columns
    user_ids: np.ndarray
    item_ids: np.ndarray


def build_block(train: Interactions, held: Interactions, users: pd.DataFrame, items: pd.DataFrame, n: int,
                seed: int) -> Block:  # fmt: skip
    torch.use_deterministic_algorithms(True)
    art = fit_ensemble(
        # the ensemble this benchmark measured: 3 DeepWalk + 3 GraphSAGE and the prior (the export's default before
        # iALS and EASE joined it); the feature columns below rely on that layout
        RecallData.build(train, users, items),
        EnsembleConfig(base_seed=seed, ials_seeds=0, ease_weight=0.0),
        "stacking",
        print,
    )
    uid, iid = art.user_ids, art.item_ids
    n_u, n_i = len(uid), len(iid)
    ur, ic = np.searchsorted(uid, train.users), np.searchsorted(iid, train.items)
    x = np.zeros((n_u, n_i), np.float32)
    x[ur, ic] = 1
    rating = np.zeros((n_u, n_i), np.float32)
    rating[ur, ic] = train.weight * 5
    uv, iv = art.user_vectors, art.item_vectors
    d = (uv.shape[1] - 1) // 6  # 3 DeepWalk + 3 GraphSAGE members of equal width, then the prior
    score = uv @ iv.T
    s_dw, s_sg = uv[:, : 3 * d] @ iv[:, : 3 * d].T, uv[:, 3 * d : 6 * d] @ iv[:, 3 * d : 6 * d].T
    gram = x.T @ x
    p = np.linalg.inv(gram + 500.0 * np.eye(n_i, dtype=np.float32))
    b = -p / np.diag(p)[None, :]
    np.fill_diagonal(b, 0)
    s_ease = x @ b
    norm = np.sqrt(np.diag(gram)) + 1e-9
    cos = gram / norm[:, None] / norm[None, :]
    np.fill_diagonal(cos, 0)
    s_knn = x @ cos / np.maximum(x.sum(1, keepdims=True), 1)
    count = x.sum(0)
    item_mean = np.where(count > 0, rating.sum(0) / np.maximum(count, 1), 0)
    activity = x.sum(1)
    user_mean = rating.sum(1) / np.maximum(activity, 1)
    prof = items.set_index("item_id").reindex(iid)
    names = sorted({g for gs in prof["genres"] for g in gs})
    gm = np.zeros((n_i, len(names)), np.float32)
    for c, gs in enumerate(prof["genres"]):
        gm[c, [names.index(g) for g in gs]] = 1
    year = prof["release_date"].dt.year.fillna(1990).to_numpy(np.float32)
    user_year = (x @ year) / np.maximum(activity, 1)
    ug = x @ gm
    ug /= np.maximum(np.linalg.norm(ug, axis=1, keepdims=True), 1e-9)
    affinity = ug @ (gm / np.maximum(np.linalg.norm(gm, axis=1, keepdims=True), 1e-9)).T
    up = users.set_index("user_id").reindex(uid)

    def ranks(m: np.ndarray) -> np.ndarray:
        order = np.argsort(-np.where(x > 0, -np.inf, m), axis=1)
        r = np.empty_like(order)
        r[np.arange(n_u)[:, None], order] = np.arange(n_i)[None, :]
        return r

    masked = np.where(x > 0, -np.inf, score)
    cols = np.argsort(-masked, axis=1)[:, :n]
    rows, flat = np.repeat(np.arange(n_u), n), cols.ravel()
    tenth = np.take_along_axis(masked, cols[:, 9:10], 1).ravel()
    features = pd.DataFrame({
        "s_ens": score[rows, flat], "s_dw": s_dw[rows, flat], "s_sg": s_sg[rows, flat],
        "rank_ens": np.tile(np.arange(n), n_u), "margin10": score[rows, flat] - np.repeat(tenth, n),
        "s_ease": s_ease[rows, flat], "rank_ease": ranks(s_ease)[rows, flat], "s_knn": s_knn[rows, flat],
        "pop": np.log1p(count)[flat], "imean": item_mean[flat], "uact": np.log1p(activity)[rows],
        "umean": user_mean[rows], "gaff": affinity[rows, flat], "year": year[flat],
        "dyear": year[flat] - user_year[rows], "age": up["age"].to_numpy(np.float32)[rows],
        "male": (up["gender"] == "M").to_numpy(np.float32)[rows],
    })  # fmt: skip
    hu = np.minimum(np.searchsorted(uid, held.users), n_u - 1)
    hi = np.minimum(np.searchsorted(iid, held.items), n_i - 1)
    known = (uid[hu] == held.users) & (iid[hi] == held.items)  # items new in ``held`` are never candidates
    held_pairs = set(zip(hu[known].tolist(), hi[known].tolist(), strict=True))
    labels = np.fromiter(((r, c) in held_pairs for r, c in zip(rows.tolist(), flat.tolist(), strict=True)),
                         np.int8, count=len(rows))  # fmt: skip
    return Block(features, labels, cols, uid, iid)


def top10(block: Block, score: np.ndarray) -> TopK:
    n_u, n = block.cols.shape
    best = np.argsort(-score.reshape(n_u, n), axis=1, kind="stable")[:, :10]
    return TopK(block.user_ids, block.item_ids[np.take_along_axis(block.cols, best, 1)])


def main() -> None:
    import lightgbm as lgb

    ap = reference_split.parser(__doc__.splitlines()[0])
    ap.add_argument("--candidates", type=int, default=100)
    args = ap.parse_args()
    t0 = time.perf_counter()
    data = reference_split.load(args)
    train, test, inner_train, inner_held = data.train, data.test, data.inner_train, data.inner_held
    users, items = data.users, data.items
    inner = build_block(inner_train, inner_held, users, items, args.candidates, args.seed)
    full = build_block(train, test, users, items, args.candidates, args.seed)
    n_u, n = inner.cols.shape
    val = np.random.default_rng(0).random(n_u) < 0.2
    vm = np.repeat(val, n)
    params = {"objective": "lambdarank", "metric": "ndcg", "eval_at": [10], "learning_rate": 0.03,
              "num_leaves": 31, "min_data_in_leaf": 50, "feature_fraction": 0.8, "bagging_fraction": 0.8,
              "bagging_freq": 1, "lambdarank_truncation_level": 20, "verbose": -1, "num_threads": 2,
              "seed": 1, "deterministic": True}  # fmt: skip
    x, y = inner.features, inner.labels
    probe = lgb.train(params, lgb.Dataset(x[~vm], y[~vm], group=[n] * int((~val).sum())), 2000,
                      valid_sets=[lgb.Dataset(x[vm], y[vm], group=[n] * int(val.sum()))],
                      callbacks=[lgb.early_stopping(100, verbose=False)])  # fmt: skip
    val_held = inner_held.take(np.isin(inner_held.users, inner.user_ids[val]))
    probe_scores = np.full(len(y), -np.inf)
    probe_scores[vm] = probe.predict(x[vm])
    in_domain = {
        name: round(evaluate(top10(inner, score), val_held, inner_train)["ndcg@10"], 4)
        for name, score in (("ensemble", x["s_ens"].to_numpy()), ("stacked", probe_scores))
    }
    model = lgb.train(params, lgb.Dataset(x, y, group=[n] * n_u), probe.best_iteration)
    result: dict[str, object] = {"candidates": n, "best_iteration": probe.best_iteration,
                                 "candidate_recall_full": round(float(full.labels.sum()) / len(test.users), 4),
                                 "in_domain_ndcg@10": in_domain}  # fmt: skip
    for name, score in (
        ("ensemble", full.features["s_ens"].to_numpy()),
        ("stacked", model.predict(full.features)),
    ):
        m = evaluate(top10(full, score), test, train)
        result[name] = {"ndcg@10": round(m["ndcg@10"], 4), "recall@10": round(m["recall@10"], 4),
                        "items_covered": int(m["coverage_items"])}  # fmt: skip
    gain = model.feature_importance("gain")
    result["feature_gain_share"] = {
        c: round(float(g / gain.sum()), 3) for c, g in zip(x.columns, gain, strict=True)
    }
    result["seconds"] = round(time.perf_counter() - t0, 1)
    reference_split.report(args, result)


if __name__ == "__main__":
    main()
