"""The online CTR ranker: its fused inference form and item-side first-layer table score exactly what the
trained model's own forward scores."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from recstack.features.definitions import DENSE_FEATURES, FEATURES_BY_NAME
from recstack.models.ctr import (
    CtrEncoder,
    MoEConfig,
    MoERanker,
    WideDeep,
    build_ranker,
    fused,
    model_config,
    ranker_from_saved,
)
from recstack.offline.jobs.rank import CROSSES, FIELDS
from recstack.online.ctr_ranker import CtrRanker, FeatureSnapshot
from recstack.online.ranking import RT_ITEM, RT_USER, RankBatch


def _world(seed: int = 0, dense: list[str] | None = None,
           crosses: list[tuple[str, str]] | None = None) -> tuple[CtrEncoder, pd.DataFrame, pd.DataFrame]:  # fmt: skip
    rng = np.random.default_rng(seed)
    n_u, n_i = 60, 80
    users = pd.DataFrame({"user_id": np.arange(n_u) * 3, "age_bucket": rng.integers(1, 8, n_u),
                          "gender": rng.choice(["M", "F"], n_u), "occupation": rng.choice(["a", "b", "c"], n_u),
                          "zip_prefix": rng.choice(["01", "02"], n_u)})  # fmt: skip
    items = pd.DataFrame({"item_id": np.arange(n_i) * 5, "release_year": rng.integers(1980, 2000, n_i),
                          "genres": [list(rng.choice(["g1", "g2", "g3", "g4"], rng.integers(0, 3), replace=False))
                                     for _ in range(n_i)]})  # fmt: skip
    for d in DENSE_FEATURES:
        group = FEATURES_BY_NAME[d].group
        if group == "user":
            users[d] = rng.gamma(2.0, 5.0, n_u)
        elif group == "item":
            items[d] = np.where(rng.random(n_i) < 0.1, np.nan, rng.gamma(2.0, 50.0, n_i))  # some missing
    n = 400
    fit = pd.concat([users.iloc[np.arange(n) % n_u].reset_index(drop=True),
                     items.iloc[np.arange(n) % n_i].reset_index(drop=True)], axis=1)  # fmt: skip
    fit = fit.assign(hour=np.arange(n) % 24, weekday=np.arange(n) % 7, page=rng.choice(["home", "detail"], n),
                     slot=np.arange(n) % 10, device=rng.choice(["ios", "web"], n))  # fmt: skip
    for d in DENSE_FEATURES:
        if d not in fit or fit[d].isna().any():
            fit[d] = np.log1p(rng.poisson(1.0, n)).astype(float)
    enc = CtrEncoder(FIELDS, "genres", crosses or CROSSES, dense=dense or list(DENSE_FEATURES))
    return enc.fit(fit), users, items


def _batch(rng: np.random.Generator, user_id: int, item_ids: np.ndarray) -> RankBatch:
    n = len(item_ids)
    return RankBatch(user_vector=None, item_vectors=np.zeros((n, 4), np.float32), has_vector=np.zeros(n, bool),
                     recall_prior=np.zeros(n), channel=np.zeros(n, np.int64), trending=np.zeros(n),
                     genre_match=np.zeros(n), user_realtime=np.log1p(rng.poisson(3.0, len(RT_USER))).astype(np.float32),
                     item_realtime=np.log1p(rng.poisson(2.0, (n, len(RT_ITEM)))).astype(np.float32),
                     hour=int(rng.integers(24)), weekday=int(rng.integers(7)), user_id=user_id, item_ids=item_ids,
                     page="home", device=str(rng.choice(["ios", "web", "tv"])))  # fmt: skip


def _perturb(model: torch.nn.Module, seed: int) -> None:
    """Weights away from the initialisation (zero wide table, zero biases would hide mistakes)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=gen))
        if isinstance(model, MoERanker):
            model.route_bias.copy_(0.3 * torch.randn(model.route_bias.shape, generator=gen))


# every way the ranker sums a cross's wide weight (``_CrossPlan``) with "small" = 8 values: request-only
# (device × hour), by request value (item × gender), by item value (user × genres, hour × genres: two
# groups), item-only (release year × genres) and hashed per candidate (user × item, hour × release year)
EVERY_CROSS_KIND = [*CROSSES, ("user_id", "item_id"), ("release_year", "genres"), ("hour", "release_year"),
                    ("hour", "genres")]  # fmt: skip


@pytest.mark.parametrize("kind", ["widedeep", "widedeep-every-cross-kind", "moe-topk", "moe-dense", "moe-deep",
                                  "moe-no-wide-reordered"])  # fmt: skip
def test_ranker_scores_equal_the_models_own_forward(kind: str) -> None:
    # the last case: no wide part, one task, and the dense features in another order (real-time columns of
    # the item reversed, so their order differs from RankBatch.item_realtime's)
    dense = list(reversed(DENSE_FEATURES)) if kind == "moe-no-wide-reordered" else None
    every = kind == "widedeep-every-cross-kind"
    enc, users, items = _world(dense=dense, crosses=EVERY_CROSS_KIND if every else None)
    torch.manual_seed(0)
    if kind.startswith("widedeep"):
        model: torch.nn.Module = WideDeep(enc)
    else:
        cfg = {"moe-topk": MoEConfig(), "moe-dense": MoEConfig(top_k=None, shared_experts=0),
               "moe-deep": MoEConfig(expert_hidden=(32, 16, 8), shared_experts=2, top_k=1),
               "moe-no-wide-reordered": MoEConfig(wide_task=None, tasks=("click",), expert_hidden=(16,))}[kind]  # fmt: skip
        model = MoERanker(enc, cfg)
    _perturb(model, 1)
    ranker = CtrRanker(model, enc, FeatureSnapshot.build(enc, users, items), {"click": 1.0, "like": 0.5},
                       cross_small=8 if every else 64)  # fmt: skip
    if every:
        plan = ranker.cross
        assert plan is not None
        kinds = [plan.request_only, plan.by_request, plan.by_item, plan.item_only, plan.hashed]
        assert all(len(k) for k in kinds) and sum(map(len, kinds)) == len(enc.cross_salt)
        assert len(plan.groups) == 2
    rng = np.random.default_rng(2)
    for user in (3, 9, 10**9):  # known users and an unknown one
        # known items, an unknown item, a repeated item
        ids = np.concatenate([rng.choice(items.item_id.to_numpy(), 30), [7, 10**8, 5, 5]]).astype(np.int64)
        for nan in (False, True):
            batch = _batch(rng, user, ids)
            if nan:  # a real-time count that could not be read: the training mean, as ``encode`` fills it
                batch.item_realtime[3, 1] = np.nan
            with torch.inference_mode():
                out = model(ranker.encode(batch))
            want = sum(w * torch.nn.functional.logsigmoid(out[t].double()) for t, w in ranker.weights.items() if t in out)
            got = ranker.score(batch)
            np.testing.assert_allclose(got, want.numpy(), rtol=1e-5, atol=1e-5)
    # the fused form alone, on the same rows
    b = ranker.encode(_batch(rng, 3, ids))
    with torch.inference_mode():
        a, c = model(b), fused(model)(b)
    for t in a:
        torch.testing.assert_close(a[t], c[t], rtol=1e-5, atol=1e-5)


def test_saved_architecture_is_rebuilt_and_an_unknown_kind_is_refused() -> None:
    enc, _, _ = _world()
    model = MoERanker(enc, MoEConfig(expert_hidden=(24, 12), routed_experts=3, top_k=1))
    saved = {"kind": "moe", "encoder": enc, "state": model.state_dict(), "config": model_config(model)}
    again = ranker_from_saved(saved)
    assert isinstance(again, MoERanker) and again.cfg == model.cfg
    with pytest.raises(ValueError, match="unknown ranker kind"):
        build_ranker("gbdt", enc)
    # a ranker saved before the architecture was stored: the architecture it was trained with
    legacy = MoERanker(enc, MoEConfig(expert_hidden=(256, 128)))
    old = ranker_from_saved({"kind": "moe", "encoder": enc, "state": legacy.state_dict()})
    assert old.cfg.expert_hidden == (256, 128)
    with pytest.raises(ValueError, match="unknown ranker kind"):
        ranker_from_saved({"kind": "gbdt", "encoder": enc, "state": {}})
    # the encoder's derived cross plan is not pickled into artifacts
    import pickle

    enc.cross_ids(np.zeros((1, len(enc.fields)), np.int64), np.zeros((1, enc.max_multi), np.int64))
    assert "_cross_plan" in enc.__dict__ and "_cross_plan" not in pickle.loads(pickle.dumps(enc)).__dict__


def test_cross_hash_is_the_documented_formula_and_splits_by_side() -> None:
    """The buckets trained models were fitted with: x = (a * 1000003 + b + salt * MIX) * MIX mod 2^64,
    x ^= x >> 29, 1 + x mod (2^20 - 1), written here with Python integers; and the per-side parts add up."""
    from recstack.models.ctr import CROSS_BUCKETS, cross_bucket, hash_cross

    mix, mask = 0x9E3779B97F4A7C15, (1 << 64) - 1

    def reference(a: int, b: int, salt: int) -> int:
        x = ((a * 1_000_003 + b + salt * mix) * mix) & mask
        x ^= x >> 29
        return 1 + x % (CROSS_BUCKETS - 1)

    rng = np.random.default_rng(5)
    a, b = rng.integers(0, 10**6, 50), rng.integers(0, 10**6, 50)
    got = hash_cross(a, b, 3)
    assert got.tolist() == [reference(int(x), int(y), 3) for x, y in zip(a, b, strict=True)]
    enc, users, items = _world()
    codes = np.stack([rng.integers(0, c, 40) for c in enc.cardinalities], axis=1)
    multi = np.where(rng.random((40, enc.max_multi)) < 0.5, rng.integers(1, enc.multi_cardinality, (40, enc.max_multi)), 0)
    item = np.array([FEATURES_BY_NAME[f].group == "item" for f in enc.fields])
    with np.errstate(over="ignore"):
        parts = enc.cross_linear(codes * item, multi) + enc.cross_linear(codes * ~item, np.zeros_like(multi))
        split = np.where(enc.cross_present(multi), cross_bucket(parts + enc.cross_salt), 0)
    np.testing.assert_array_equal(split, enc.cross_ids(codes, multi))
    assert (split == 0).any() and (split > 0).any()
