"""A seed ensemble of graph-embedding recall models, folded into one inner-product artifact.

Each member ``m`` scores ``s_m(u, i) = u_m · i_m``. The ensemble score is a weighted sum of the members'
per-user standardised scores::

    S(u, i) = Σ_m w_m · (s_m(u, i) − μ_m(u)) / σ_m(u)

where μ_m(u), σ_m(u) are the mean and standard deviation of user u's scores over the whole catalog. Only the
per-user constant μ depends on nothing item-side, so it does not change a user's ranking and is dropped, and
σ_m(u)² = u_mᵀ Σ_m u_m with Σ_m the covariance of member m's item vectors (a d × d matrix: no catalog-wide
scoring). The result is one ``EmbeddingArtifact`` with

    user vector = [w_1 u_1 / σ_1(u), ..., w_M u_M / σ_M(u)]      item vector = [i_1, ..., i_M]

so the FAISS index, the pre-rank and the ``embedding`` ranker of the service serve the ensemble unchanged.

Why: on the ml-100k reference split one DeepWalk scores nDCG@10 0.436 and one GraphSAGE 0.426, three seeds
of each 0.465 and 0.445, and the three-plus-three ensemble 0.492 (a single DeepWalk with 3x the walks: 0.448).
The members' errors are largely independent (random walks, negative samples, initialisation), so averaging
standardised scores removes variance that no single longer run removes.

**Popularity prior** (``popularity_weight`` β, default 0.2): one more dimension, user side β, item side the
item's standardised ``log(1 + interactions)``, adds ``β · pop(i)`` to every score. The members keep popularity
(uniform negatives) but slightly under-weight it: on the reference split β = 0.1 / 0.2 / 0.3 move the 3+3
ensemble from 0.492 to 0.495 / 0.496 / 0.496 (and six plus six seeds from 0.496 to 0.498 / 0.499 / 0.499),
at lower coverage, which the export's coverage floor buys back cheaply.

**Other model families** (defaults: one iALS member at weight 1, one rating-weighted DLAE member at 0.5,
β 0.2; DeepWalk and GraphSAGE weigh 1 each). Alone, iALS scores 0.492 on the reference split in seconds and
EASE (served at rank 64) 0.477, but their lists overlap the graph members'. The item–item member is a DLAE
(``ENSEMBLE_EASE``: Steck's dropout-penalised linear autoencoder, p 0.25, λ 500, X holding each rating's
strength r / 5, served at rank 256; ``models/ease.py``), which replaced a rating-weighted EASE at rank 64 and
weight 0.25 on 2026-12-02. The weights and β were chosen by ``benchmarks/ensemble_weights.py`` on an inner
80/20 split of the training ratings (not on the test set): 0.2405 for the graph families alone, 0.2486 for
the blend with the EASE member, 0.2505 for the chosen blend with the DLAE; once refitted on all of
``train.tsv``, 0.4936 → 0.5025 on the test before the export's coverage floor (0.5016 after it, 596 items).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from recstack.models.artifact import EmbeddingArtifact
from recstack.models.deepwalk import DeepWalkConfig
from recstack.models.ease import EASEConfig
from recstack.models.graphsage import SageConfig
from recstack.models.ials import IALSConfig
from recstack.models.recall import (
    DEFAULT_DEEPWALK,
    DEFAULT_EASE,
    DEFAULT_GRAPHSAGE,
    DEFAULT_IALS,
    RecallData,
    fit_deepwalk,
    fit_ease,
    fit_graphsage,
    fit_ials,
)

Progress = Callable[[str], None]
ENSEMBLE_EASE = dataclasses.replace(DEFAULT_EASE, weighted=True, dropout=0.25, zero_diagonal=False, rank=256)
"""The ensemble's item–item member: a DLAE (``models/ease.py``; dropout 0.25, λ 500) over X holding the
interactions' strengths (a rating r counts r / 5), served at rank 256."""


@dataclass(frozen=True)
class EnsembleConfig:
    """How many seeds of each model, and each family's weight (split evenly over its seeds)."""

    deepwalk_seeds: int = 3
    graphsage_seeds: int = 3
    ials_seeds: int = 1
    deepwalk_weight: float = 1.0
    graphsage_weight: float = 1.0
    ials_weight: float = 1.0
    ease_weight: float = 0.5  # one EASE / DLAE member (deterministic: no seeds) when > 0
    popularity_weight: float = 0.2  # β of the popularity prior (0 = none)
    base_seed: int = 42
    deepwalk: DeepWalkConfig = DEFAULT_DEEPWALK
    graphsage: SageConfig = DEFAULT_GRAPHSAGE
    ials: IALSConfig = DEFAULT_IALS
    ease: EASEConfig = ENSEMBLE_EASE
    # node2vec return parameters the DeepWalk members take in turn: member k has p = ps[k % len(ps)] and seed
    # base_seed + k // len(ps) (so (1.0, 4.0) pairs each seed with both walks); () = the config's own p
    deepwalk_return_ps: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        if any(not p > 0 for p in self.deepwalk_return_ps):
            raise ValueError(f"deepwalk_return_ps must be positive, got {self.deepwalk_return_ps}")
        seeds = (self.deepwalk_seeds, self.graphsage_seeds, self.ials_seeds)
        if min(seeds) < 0 or (sum(seeds) == 0 and not self.ease_weight > 0):
            raise ValueError("an ensemble needs at least one member (deepwalk, graphsage and ials seeds >= 0, "
                             "one of them >= 1, or an EASE weight > 0)")  # fmt: skip
        weights = (self.deepwalk_weight, self.graphsage_weight, self.ials_weight, self.ease_weight)
        if min(*weights, self.popularity_weight) < 0:
            raise ValueError("ensemble weights must be >= 0")


def score_scale(user_vectors: np.ndarray, item_vectors: np.ndarray) -> np.ndarray:
    """σ(u) per user (U,): the standard deviation of u · i over the items, from the item covariance."""
    cov = np.cov(item_vectors.astype(np.float64), rowvar=False, bias=True).reshape(user_vectors.shape[1], -1)
    var = np.einsum("ud,de,ue->u", user_vectors.astype(np.float64), cov, user_vectors.astype(np.float64))
    return np.sqrt(np.maximum(var, 1e-12))


def fold_ensemble(members: Sequence[EmbeddingArtifact], weights: Sequence[float], version: str,
                  params: dict[str, object] | None = None) -> EmbeddingArtifact:  # fmt: skip
    """One artifact whose inner product is the weighted sum of the members' per-user standardised scores.

    Members must share user and item ids (trained on the same ``RecallData``)."""
    if not members or len(members) != len(weights):
        raise ValueError("need one weight per member and at least one member")
    first = members[0]
    for m in members[1:]:
        if not (np.array_equal(m.user_ids, first.user_ids) and np.array_equal(m.item_ids, first.item_ids)):
            raise ValueError(f"member {m.model}/{m.version} has other ids than {first.model}/{first.version}")
    users = [
        (w / score_scale(m.user_vectors, m.item_vectors))[:, None] * m.user_vectors
        for m, w in zip(members, weights, strict=True)
    ]
    return dataclasses.replace(
        first, model="ensemble", version=version,
        user_vectors=np.ascontiguousarray(np.hstack(users), np.float32),
        item_vectors=np.ascontiguousarray(np.hstack([m.item_vectors for m in members]), np.float32),
        params={**(params or {}), "members": [f"{m.model}:{m.params['seed']}" if "seed" in m.params else m.model
                                        for m in members]},
    )  # fmt: skip


def popularity_prior(data: RecallData) -> np.ndarray:
    """log(1 + interactions) of each item of ``data`` (``data.item_ids`` order), standardised over the items."""
    pop = np.log1p(np.bincount(data.item_cols, minlength=data.num_items).astype(np.float64))
    std = pop.std()
    return (pop - pop.mean()) / std if std > 0 else np.zeros_like(pop)


def with_prior(artifact: EmbeddingArtifact, prior: np.ndarray, weight: float) -> EmbeddingArtifact:
    """``artifact`` with one more dimension whose inner product adds ``weight · prior[item]`` to every score."""
    if prior.shape != (len(artifact.item_ids),):
        raise ValueError(f"prior has shape {prior.shape}, the artifact {len(artifact.item_ids)} items")
    users = np.hstack([artifact.user_vectors, np.full((len(artifact.user_ids), 1), weight, np.float32)])
    items = np.hstack([artifact.item_vectors, prior.astype(np.float32)[:, None]])
    return dataclasses.replace(artifact, user_vectors=np.ascontiguousarray(users, np.float32),
                               item_vectors=np.ascontiguousarray(items, np.float32))  # fmt: skip


def fit_ensemble(data: RecallData, cfg: EnsembleConfig, version: str,
                 progress: Progress | None = None) -> EmbeddingArtifact:  # fmt: skip
    """Train every member on ``data`` and fold them (see the module docs)."""
    say = progress or (lambda _: None)
    members: list[EmbeddingArtifact] = []
    weights: list[float] = []
    ps = cfg.deepwalk_return_ps or (cfg.deepwalk.return_p,)
    for k in range(cfg.deepwalk_seeds):
        seed, p = cfg.base_seed + k // len(ps), ps[k % len(ps)]
        say(f"ensemble: DeepWalk seed {seed}, return p {p:g} ({k + 1}/{cfg.deepwalk_seeds})")
        dw_cfg = dataclasses.replace(cfg.deepwalk, seed=seed, return_p=p)
        art = fit_deepwalk(data, dw_cfg, f"{version}-dw{seed}-p{p:g}")
        members.append(dataclasses.replace(art, params={**art.params, "seed": seed, "return_p": p}))
        weights.append(cfg.deepwalk_weight / cfg.deepwalk_seeds)
    for k in range(cfg.graphsage_seeds):
        seed = cfg.base_seed + k
        say(f"ensemble: GraphSAGE seed {seed} ({k + 1}/{cfg.graphsage_seeds})")
        art, _ = fit_graphsage(data, dataclasses.replace(cfg.graphsage, seed=seed), f"{version}-sage{seed}")
        members.append(dataclasses.replace(art, params={**art.params, "seed": seed}))
        weights.append(cfg.graphsage_weight / cfg.graphsage_seeds)
    for k in range(cfg.ials_seeds):
        seed = cfg.base_seed + k
        say(f"ensemble: iALS seed {seed} ({k + 1}/{cfg.ials_seeds})")
        art = fit_ials(data, dataclasses.replace(cfg.ials, seed=seed), f"{version}-ials{seed}")
        members.append(dataclasses.replace(art, params={**art.params, "seed": seed}))
        weights.append(cfg.ials_weight / cfg.ials_seeds)
    ease_skipped = cfg.ease_weight > 0 and data.num_items > cfg.ease.max_items
    if ease_skipped:  # EASE inverts an items × items matrix: the other members carry a catalogue this large
        say(f"ensemble: EASE left out ({data.num_items} items > max_items {cfg.ease.max_items})")
    elif cfg.ease_weight > 0:
        say("ensemble: EASE")
        members.append(fit_ease(data, cfg.ease, f"{version}-ease"))
        weights.append(cfg.ease_weight)
    if not members:
        raise ValueError("no ensemble member left to train (EASE alone, over its max_items)")
    params: dict[str, object] = {"deepwalk_seeds": cfg.deepwalk_seeds, "graphsage_seeds": cfg.graphsage_seeds,
                                 "ials_seeds": cfg.ials_seeds, "deepwalk_weight": cfg.deepwalk_weight,
                                 "graphsage_weight": cfg.graphsage_weight, "ials_weight": cfg.ials_weight,
                                 "ease_weight": cfg.ease_weight, "ease_skipped": ease_skipped,
                                 "popularity_weight": cfg.popularity_weight,
                                 "deepwalk_return_ps": list(ps)}  # fmt: skip
    folded = fold_ensemble(members, weights, version, params)
    if cfg.popularity_weight > 0:
        if not np.array_equal(folded.item_ids, data.item_ids):
            raise ValueError("the ensemble's items are not the training data's")
        folded = with_prior(folded, popularity_prior(data), cfg.popularity_weight)
    return folded
