"""Would another member or signal lift the export ensemble? Each candidate measured on the inner split only.

The ml-100k reference split's ``train.tsv`` is split again per user (80 / 20, seed 7, as in
``ensemble_weights.py``). On the inner 80 % the script trains the export's families (3 DeepWalk, 3 GraphSAGE,
one iALS, one rating-weighted DLAE at rank 256, the popularity prior) and forms the default blend
``DeepWalk + GraphSAGE + iALS + 0.5 · DLAE + 0.2 · prior`` (``EnsembleConfig``'s defaults). Each candidate
below is scored on the held-out 20 % alone and added to (or swapped into) the default blend; nDCG@10 over the
inner users (``models.evaluation``). Nothing here reads ``test.tsv``.

Candidates (benchmark-only implementations, each a few lines, unless they became the default):

* ``ials_dim128``, ``ials_3_seeds``: the iALS member wider, or averaged over three seeds (swapped in);
* ``ease_weighted_*``: the rating-weighted EASE (the item–item member of 2026-12-02: rank 64, weight 0.25), at
  full rank, weight 0.5, or λ 250 / 1000 (swapped in for the DLAE);
* ``ease_binary_*``: the binary EASE (every interaction 1, the default before 2026-12-02) at rank 64 / full
  rank, weight 0.125 (swapped in);
* ``edlae_*``: the default's dropout penalty with EASE's zero diagonal kept (Steck's EDLAE; swapped in);
* ``dlae_grid``: the grid the default member came from (dropout p 0.1–0.5 × λ 250 / 500 / 1000 × served rank
  64 / 256 / full, each swapped in at weight 0.25 / 0.5 / 0.75);
* ``rp3beta_*``: RP3β item–item random walks (Paudel et al., 2016) with α 1 and β 0.5 / 0.7;
* ``time_cooccur_600s``: item–item co-occurrence within a user weighted by exp(−|Δt| / 600 s), items rated in
  the same sitting, RP3β-normalised (β 0.5);
* ``multvae``: Mult-VAE (Liang et al., 2018; 600-200 encoder, KL weight annealed to 0.2, 200 epochs);
* ``prior_by_activity``: the prior's weight scaled by (n_u / median n)^−γ per user, γ 0.5 / 1;
* ``availability_mask``: items first rated (in train) after the user's last rating pushed down;
* ``segment_prior_*``: the popularity of each item among the user's demographic segment (age bucket and
  gender, occupation, zip prefix; the user left out), added as a second prior.

Usage: ``.venv/bin/python benchmarks/ensemble_candidates.py --split ../shared/data/ml-100k-split --profiles
../shared/data/ml-100k [--json out.json]`` (~10 min on 2 cores).
"""

from __future__ import annotations

import dataclasses
import itertools
import time

import ensemble_weights as ew  # benchmarks/ensemble_weights.py, beside this script
import numpy as np
import pandas as pd
import reference_split
import torch
import torch.nn.functional as F
from recstack.models.ease import EASEConfig
from recstack.models.ensemble import EnsembleConfig, fit_ensemble
from recstack.models.evaluation import evaluate
from recstack.models.ials import IALSConfig
from recstack.models.recall import DEFAULT_EASE, RecallData

WEIGHTS = (0.125, 0.25, 0.5, 1.0)


def standardised(score: np.ndarray) -> np.ndarray:
    """Per user: zero mean, unit standard deviation over the items (as the ensemble folds its members)."""
    centred = score - score.mean(1, keepdims=True)
    return centred / np.maximum(centred.std(1, keepdims=True), 1e-12)


def member(data: RecallData, **kw: object) -> np.ndarray:
    """A member of the export ensemble (``EnsembleConfig`` fields in ``kw``) alone, standardised."""
    fields: dict[str, object] = {"deepwalk_seeds": 0, "graphsage_seeds": 0, "ials_seeds": 0, "ease_weight": 0.0,
                                 "popularity_weight": 0.0, **kw}  # fmt: skip
    art = fit_ensemble(data, EnsembleConfig(**fields), "candidate")  # type: ignore[arg-type]
    return standardised(art.user_vectors.astype(np.float64) @ art.item_vectors.T.astype(np.float64))


def rp3beta(x: np.ndarray, co: np.ndarray | None = None, beta: float = 0.5) -> np.ndarray:
    """Item–item walk probabilities (or a given co-occurrence) divided by the target's popularity^β."""
    pop = np.maximum(x.sum(0), 1.0)
    if co is None:
        co = (x / pop).T @ (x / np.maximum(x.sum(1, keepdims=True), 1.0))
    else:
        co = co / pop[:, None] ** (1 - beta)
    w = co / pop[None, :] ** beta
    np.fill_diagonal(w, 0.0)
    return standardised(x @ w)


def time_cooccurrence(
    rows: np.ndarray, cols: np.ndarray, ts: np.ndarray, n_items: int, tau: float
) -> np.ndarray:
    """Σ over users of exp(−|t_i − t_j| / τ) for each pair of items the user rated (i ≠ j)."""
    order = np.lexsort((ts, rows))
    rows, cols, ts = rows[order], cols[order], ts[order].astype(np.float64)
    acc = np.zeros(n_items * n_items)
    bounds = np.flatnonzero(np.diff(np.r_[-1, rows, -2]))
    for lo, hi in zip(bounds[:-1], bounds[1:], strict=True):
        c, t = cols[lo:hi], ts[lo:hi]
        w = np.exp(-np.abs(t[:, None] - t[None, :]) / tau)
        np.fill_diagonal(w, 0.0)
        acc += np.bincount(
            (c[:, None] * n_items + c[None, :]).ravel(), w.ravel(), minlength=n_items * n_items
        )
    return acc.reshape(n_items, n_items)


def multvae(x: np.ndarray, seed: int, hidden: int = 600, latent: int = 200, epochs: int = 200,
            beta_max: float = 0.2, dropout: float = 0.5, batch: int = 128) -> np.ndarray:  # fmt: skip
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    xt = torch.tensor(x, dtype=torch.float32)
    n_items = x.shape[1]
    enc = torch.nn.Sequential(
        torch.nn.Linear(n_items, hidden), torch.nn.Tanh(), torch.nn.Linear(hidden, 2 * latent)
    )
    dec = torch.nn.Sequential(
        torch.nn.Linear(latent, hidden), torch.nn.Tanh(), torch.nn.Linear(hidden, n_items)
    )
    opt = torch.optim.Adam([*enc.parameters(), *dec.parameters()], lr=1e-3)
    total = epochs * -(-len(xt) // batch)
    step = 0
    for _ in range(epochs):
        perm = torch.randperm(len(xt), generator=gen)
        for lo in range(0, len(xt), batch):
            xb = xt[perm[lo : lo + batch]]
            out = enc(F.dropout(F.normalize(xb, dim=1), dropout, True))
            mu, logvar = out[:, :latent], out[:, latent:]
            z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
            nll = -(F.log_softmax(dec(z), 1) * xb).sum(1).mean()
            kl = (-0.5 * (1 + logvar - mu**2 - logvar.exp()).sum(1)).mean()
            loss = nll + min(beta_max, beta_max * step / (0.5 * total)) * kl
            step += 1
            opt.zero_grad()
            loss.backward()
            opt.step()
    with torch.no_grad():
        return standardised(dec(enc(F.normalize(xt, dim=1))[:, :latent]).double().numpy())


def segment_prior(x: np.ndarray, keys: list[np.ndarray]) -> np.ndarray:
    """log(1 + interactions of each item among the other users of the user's segment), standardised."""
    codes = pd.factorize(pd.Series(list(zip(*keys, strict=True))))[0]
    counts = np.zeros((codes.max() + 1, x.shape[1]))
    np.add.at(counts, codes, x)
    return standardised(np.log1p(counts[codes] - x))


def main() -> None:
    args = reference_split.parser(__doc__.splitlines()[0]).parse_args()
    t0 = time.perf_counter()
    split = reference_split.load(args)
    train, held = split.inner_train, split.inner_held
    s = ew.family_scores(train, split.users, split.items, args.seed)
    data = RecallData.build(train, split.users, split.items)
    rows, cols = np.searchsorted(data.user_ids, train.users), np.searchsorted(data.item_ids, train.items)
    x = np.zeros((data.num_users, data.num_items))
    x[rows, cols] = 1.0

    def ndcg(score: np.ndarray) -> float:
        return round(evaluate(ew.top10(s, score, train), held, train)["ndcg@10"], 4)

    cfg = EnsembleConfig()
    w_ease = cfg.ease_weight
    default = ew.blend(s, cfg.ials_weight, w_ease, cfg.popularity_weight)
    result: dict[str, object] = {"default_blend": ndcg(default)}
    item_item = w_ease * s["ease"]  # type: ignore[operator]  # the default's DLAE member
    weighted = dataclasses.replace(DEFAULT_EASE, weighted=True)  # the EASE member of 2026-12-02
    binary = DEFAULT_EASE
    full = data.num_items

    def ease(w: float, c: EASEConfig) -> np.ndarray:
        return w * member(data, ease_weight=1.0, ease=c)

    swaps = {  # a member of the default blend replaced: (old term, new term)
        "ials_dim128": (s["ials"], member(data, ials_seeds=1, ials=IALSConfig(dim=128))),
        "ials_3_seeds": (s["ials"], member(data, ials_seeds=3)),
        "ease_weighted_rank64_w0.25": (item_item, ease(0.25, weighted)),
        "ease_weighted_full_w0.25": (item_item, ease(0.25, dataclasses.replace(weighted, rank=full))),
        "ease_weighted_full_w0.5": (item_item, ease(0.5, dataclasses.replace(weighted, rank=full))),
        "ease_binary_rank64_w0.125": (item_item, ease(0.125, binary)),
        "ease_binary_full_w0.125": (item_item, ease(0.125, dataclasses.replace(binary, rank=full))),
        "ease_weighted_l2_250_w0.25": (item_item, ease(0.25, dataclasses.replace(weighted, l2=250.0))),
        "ease_weighted_l2_1000_w0.25": (item_item, ease(0.25, dataclasses.replace(weighted, l2=1000.0))),
        "edlae_p0.25_rank256_w0.5": (item_item, ease(0.5, dataclasses.replace(cfg.ease, zero_diagonal=True))),
    }  # fmt: skip
    for name, (old, new) in swaps.items():
        result[name] = {"swapped_in": ndcg(default - old + new)}
        print(name, result[name], flush=True)
    # the DLAE grid the default member was picked from: dropout p x lambda x served rank, each at 3 weights
    grid = {}
    for p, l2, rank in itertools.product((0.1, 0.25, 0.33, 0.5), (250.0, 500.0, 1000.0), (64, 256, full)):
        c = dataclasses.replace(cfg.ease, dropout=p, l2=l2, rank=rank)
        score = member(data, ease_weight=1.0, ease=c)
        key = f"p{p}_l2_{l2:g}_rank{'full' if rank == full else rank}"
        grid[key] = {"alone": ndcg(score),
                     "swapped_in": {str(w): ndcg(default - item_item + w * score) for w in (0.25, 0.5, 0.75)}}  # fmt: skip
        print("dlae", key, grid[key], flush=True)
    result["dlae_grid"] = grid
    added = {
        "rp3beta_0.5": rp3beta(x, beta=0.5),
        "rp3beta_0.7": rp3beta(x, beta=0.7),
        "time_cooccur_600s": rp3beta(x, time_cooccurrence(rows, cols, train.ts, data.num_items, 600.0)),
        "multvae": multvae(x, args.seed),
    }
    for name, score in added.items():
        result[name] = {"alone": ndcg(score), "added": {str(w): ndcg(default + w * score) for w in WEIGHTS}}
        print(name, result[name], flush=True)
    n_u = x.sum(1, keepdims=True)
    prior = s["prior"]
    result["prior_by_activity"] = {
        f"gamma_{g}": {str(b): ndcg(default - cfg.popularity_weight * prior + b * (n_u / np.median(n_u)) ** -g * prior)  # type: ignore[operator]
                       for b in (0.05, 0.1, 0.2)}
        for g in (0.5, 1.0)
    }  # fmt: skip
    first = np.full(data.num_items, np.iinfo(np.int64).max)
    np.minimum.at(first, cols, train.ts.astype(np.int64))
    last = np.zeros(data.num_users, np.int64)
    np.maximum.at(last, rows, train.ts.astype(np.int64))
    result["availability_mask"] = {
        f"margin_{m}s": ndcg(default - 1e3 * (first[None, :] > last[:, None] + m))
        for m in (0, 86400, 30 * 86400)
    }
    profile = split.users.set_index("user_id").loc[data.user_ids]
    age = np.digitize(profile["age"].to_numpy(), [18, 25, 35, 45, 50, 56])
    segments = {
        "age_gender": [age, profile["gender"].to_numpy()],
        "occupation": [profile["occupation"].to_numpy()],
        "zip3": [profile["zip_code"].astype(str).str[:3].to_numpy()],
    }
    for name, keys in segments.items():
        score = segment_prior(x, keys)
        result[f"segment_prior_{name}"] = {
            "alone": ndcg(score),
            "added": {str(w): ndcg(default + w * score) for w in (0.05, 0.1, 0.2, 0.4)},
        }
    result["seconds"] = round(time.perf_counter() - t0, 1)
    reference_split.report(args, result)


if __name__ == "__main__":
    main()
