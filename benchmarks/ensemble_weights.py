"""How the export ensemble's iALS and EASE weights were chosen: on an inner split of the training ratings only.

The ml-100k reference split's ``train.tsv`` is split again per user (80 / 20, seed 7). On the inner 80 % the
script trains each family of the export's ensemble apart, folded as the export folds it (3 DeepWalk seeds,
3 GraphSAGE seeds, one iALS, one rating-weighted DLAE at rank 256; each family's members standardised per user and averaged),
then scores every blend ``DeepWalk + GraphSAGE + w_ials · iALS + w_ease · EASE + β · popularity`` of a small
grid on the held-out 20 % (nDCG@10 over the inner users, ``models.evaluation``). The best inner blend and the
graph-only blend (``w_ials = w_ease = 0``, β 0.2: the previous default) are then refitted on all of
``train.tsv`` and scored once on ``test.tsv``, before the export's coverage floor. The export's defaults are
the inner winner; nothing here looks at ``test.tsv`` to choose.

Usage: ``.venv/bin/python benchmarks/ensemble_weights.py --split ../shared/data/ml-100k-split --profiles
../shared/data/ml-100k [--json out.json]`` (~8 min on 2 cores).
"""

from __future__ import annotations

import itertools
import json
import time

import numpy as np
import pandas as pd
import reference_split  # benchmarks/reference_split.py, beside this script
import torch
from recstack.models.ensemble import EnsembleConfig, fit_ensemble, popularity_prior
from recstack.models.evaluation import Interactions, TopK, evaluate
from recstack.models.recall import RecallData

FAMILIES = {
    "deepwalk": {"deepwalk_seeds": 3, "graphsage_seeds": 0, "ials_seeds": 0, "ease_weight": 0.0},
    "graphsage": {"deepwalk_seeds": 0, "graphsage_seeds": 3, "ials_seeds": 0, "ease_weight": 0.0},
    "ials": {
        "deepwalk_seeds": 0,
        "graphsage_seeds": 0,
        "ials_seeds": 1,
        "ials_weight": 1.0,
        "ease_weight": 0.0,
    },
    "ease": {"deepwalk_seeds": 0, "graphsage_seeds": 0, "ials_seeds": 0, "ease_weight": 1.0},
}
GRID = {"ials": (0.0, 0.25, 0.5, 1.0), "ease": (0.0, 0.125, 0.25, 0.5), "beta": (0.0, 0.1, 0.2)}


def family_scores(
    train: Interactions, users: pd.DataFrame, items: pd.DataFrame, seed: int
) -> dict[str, object]:
    """(U, I) score matrix of each family as the export folds it, the prior, and the data's ids."""
    torch.use_deterministic_algorithms(True)
    data = RecallData.build(train, users, items)
    out: dict[str, object] = {"user_ids": data.user_ids, "item_ids": data.item_ids}
    for name, kw in FAMILIES.items():
        cfg = EnsembleConfig(base_seed=seed, popularity_weight=0.0, **kw)  # type: ignore[arg-type]
        art = fit_ensemble(data, cfg, f"weights-{name}", print)
        out[name] = art.user_vectors.astype(np.float64) @ art.item_vectors.T.astype(np.float64)
    out["prior"] = popularity_prior(data)[None, :]
    return out


def blend(s: dict[str, object], w_ials: float, w_ease: float, beta: float) -> np.ndarray:
    return (s["deepwalk"] + s["graphsage"] + w_ials * s["ials"] + w_ease * s["ease"]  # type: ignore[operator]
            + beta * s["prior"])  # fmt: skip


def top10(s: dict[str, object], score: np.ndarray, train: Interactions) -> TopK:
    uid, iid = s["user_ids"], s["item_ids"]
    assert isinstance(uid, np.ndarray) and isinstance(iid, np.ndarray)
    masked = score.copy()
    masked[np.searchsorted(uid, train.users), np.searchsorted(iid, train.items)] = -np.inf
    best = np.argsort(-masked, axis=1, kind="stable")[:, :10]
    return TopK(uid, iid[best])


def main() -> None:
    args = reference_split.parser(__doc__.splitlines()[0]).parse_args()
    t0 = time.perf_counter()
    data = reference_split.load(args)
    train, test, inner_train, inner_held = data.train, data.test, data.inner_train, data.inner_held
    users, items = data.users, data.items
    inner = family_scores(inner_train, users, items, args.seed)
    single = {f: round(evaluate(top10(inner, inner[f], inner_train), inner_held, inner_train)["ndcg@10"], 4)  # type: ignore[arg-type]
              for f in FAMILIES}  # fmt: skip
    grid = []
    for w_i, w_e, beta in itertools.product(GRID["ials"], GRID["ease"], GRID["beta"]):
        m = evaluate(top10(inner, blend(inner, w_i, w_e, beta), inner_train), inner_held, inner_train)
        grid.append({"ials": w_i, "ease": w_e, "beta": beta, "ndcg@10": round(m["ndcg@10"], 4)})
        print(json.dumps(grid[-1]), flush=True)
    best = max(grid, key=lambda g: g["ndcg@10"])
    full = family_scores(train, users, items, args.seed)
    on_test = {}
    for name, (w_i, w_e, beta) in (("graphs_only_beta_0.2", (0.0, 0.0, 0.2)),
                                    ("inner_best", (best["ials"], best["ease"], best["beta"]))):  # fmt: skip
        m = evaluate(top10(full, blend(full, w_i, w_e, beta), train), test, train)
        on_test[name] = {"ials": w_i, "ease": w_e, "beta": beta, "ndcg@10": round(m["ndcg@10"], 4),
                         "items_covered": int(m["coverage_items"])}  # fmt: skip
    result = {"inner_single_family_ndcg@10": single, "inner_grid": grid, "inner_best": best,
              "test_before_coverage_floor": on_test, "seconds": round(time.perf_counter() - t0, 1)}  # fmt: skip
    reference_split.report(args, result)


if __name__ == "__main__":
    main()
