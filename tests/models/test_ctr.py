"""Wide&Deep and the MoE ranker on planted data: encoding, learning, routing and load balancing."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from recstack.models.ctr import (
    CROSS_BUCKETS,
    CtrEncoder,
    MoEConfig,
    MoERanker,
    TrainConfig,
    WideDeep,
    auc,
    predict,
    train_ctr,
)


def _planted(n: int, seed: int) -> pd.DataFrame:
    """Users like the genre of their group (genre g<item % 4> with user % 4 == item % 4; a user x genre
    interaction), and items with a second genre 'x' a little more."""
    rng = np.random.default_rng(seed)
    users = rng.integers(0, 200, n)
    items = rng.integers(0, 300, n)
    genres = [[f"g{i % 4}", "x"] if i % 3 == 0 else [f"g{i % 4}"] for i in items]
    logit = 2.5 * (users % 4 == items % 4) - 1.2 + 0.5 * (items % 3 == 0)
    click = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(np.float32)
    like = (click * (rng.random(n) < 0.5 + 0.3 * (users % 2))).astype(np.float32)
    return pd.DataFrame({"user_id": users, "item_id": items, "gender": np.where(users % 2, "F", "M"),
                         "genres": genres, "click": click, "like": like})  # fmt: skip


FIELDS = ["user_id", "item_id", "gender"]
CROSSES = [("user_id", "genres"), ("item_id", "gender")]


def test_encoder_vocabularies_unknowns_and_crosses() -> None:
    train = _planted(500, 0)
    enc = CtrEncoder(FIELDS, "genres", CROSSES).fit(train)
    test = pd.DataFrame({"user_id": [10**9], "item_id": [int(train.item_id[0])], "gender": ["X"],
                         "genres": [["g1", "new-genre"]]})  # fmt: skip
    b = enc.transform(test)
    offsets = np.concatenate([[0], np.cumsum(enc.cardinalities)[:-1]])
    assert b.sparse[0, 0] == offsets[0] and b.sparse[0, 2] == offsets[2]  # unknown user / gender -> code 0
    assert b.sparse[0, 1] > offsets[1]
    assert b.multi[0].tolist()[:2] == [enc.multi_vocab["g1"], 0]  # unknown genre -> 0
    assert b.cross.shape == (1, enc.max_multi + 1)
    assert int(b.cross.min()) >= 0 and int(b.cross.max()) < CROSS_BUCKETS
    assert b.cross[0, 1] == 0  # the padded genre slot has no cross
    same = enc.transform(test)
    assert torch.equal(same.cross, b.cross)  # deterministic


@pytest.mark.parametrize("kind", ["widedeep", "moe-topk", "moe-dense"])
def test_models_learn_the_planted_preference(kind: str) -> None:
    train, val, test = _planted(12_000, 1), _planted(2_000, 2), _planted(3_000, 3)
    enc = CtrEncoder(FIELDS, "genres", CROSSES).fit(train)
    torch.manual_seed(0)
    if kind == "widedeep":
        model: torch.nn.Module = WideDeep(enc)
        tasks = ["click"]
    else:
        model = MoERanker(enc, MoEConfig(top_k=2 if kind == "moe-topk" else None, expert_hidden=(64, 32)))
        tasks = ["click", "like"]
    result = train_ctr(model, enc.transform(train), {t: train[t].to_numpy() for t in tasks}, enc.transform(val),
                       {t: val[t].to_numpy() for t in tasks}, TrainConfig(epochs=6, lr=3e-3))  # fmt: skip
    preds = predict(model, enc.transform(test))
    assert auc(test["click"].to_numpy(), preds["click"]) > 0.70  # ~0.77 is the ceiling; the genre bonus alone ~0.55
    assert result.samples_per_s > 0 and 0 <= result.best_epoch < 6
    if kind != "widedeep":
        assert auc(test["like"].to_numpy(), preds["like"]) > 0.65
        util = model.utilisation()  # type: ignore[operator]
        assert set(util) == {"click", "like"} and all(abs(sum(v) - 1) < 1e-3 for v in util.values())


def test_loss_free_balancing_evens_out_a_skewed_router() -> None:
    enc = CtrEncoder(FIELDS, "genres", CROSSES).fit(_planted(500, 0))
    model = MoERanker(enc, MoEConfig(routed_experts=4, top_k=1, bias_rate=0.005, expert_hidden=(16,)))
    torch.manual_seed(0)
    with torch.no_grad():  # a router whose scores vary per row but that prefers expert 0 for every row
        model.inputs.emb.weight.normal_(std=1.0)
        for gate in model.gates.values():
            gate.weight.normal_(std=0.5)
            gate.bias.copy_(torch.tensor([5.0, 0.0, 0.0, 0.0]))
    batch = enc.transform(_planted(2000, 5))
    model.train()
    model(batch)
    skewed = model.load[0].clone()
    assert skewed[0] > 0.5  # most rows routed to expert 0
    for _ in range(500):
        model(batch)
        model.update_route_bias()
    model(batch)
    assert float(model.load[0].max()) < 0.6  # the bias spread the load without any auxiliary loss
    bias = model.route_bias[0]
    assert float(bias[0]) < float(bias[1:].min())  # by lowering the favourite's selection bias below the rest


def test_auc_matches_the_definition() -> None:
    y = np.array([0, 0, 1, 1, 0, 1])
    s = np.array([0.1, 0.4, 0.35, 0.8, 0.4, 0.9])
    pairs = [(i, j) for i in range(6) for j in range(6) if y[i] == 1 and y[j] == 0]
    expected = sum(1.0 if s[i] > s[j] else 0.5 if s[i] == s[j] else 0.0 for i, j in pairs) / len(pairs)
    assert auc(y, s) == pytest.approx(expected)


def test_row_adam_equals_sparse_adam() -> None:
    """The row-wise lazy Adam gives torch's SparseAdam's result (duplicate rows in a batch included)."""
    from recstack.models.ctr import RowAdam

    torch.manual_seed(0)
    tables = [torch.nn.Embedding(50, 4, sparse=True) for _ in range(2)]
    tables[1].weight.data.copy_(tables[0].weight.data)
    opts = [RowAdam([tables[0].weight], lr=0.05), torch.optim.SparseAdam([tables[1].weight], lr=0.05)]
    for step in range(4):
        idx = torch.tensor([[1, 2, 2, 7], [7, 7, 3, 1]]) + step
        target = torch.randn(2, 4, 4)
        for table, opt in zip(tables, opts, strict=True):
            opt.zero_grad()
            ((table(idx) - target) ** 2).sum().backward()
            opt.step()
    assert torch.allclose(tables[0].weight, tables[1].weight, atol=1e-6)
    assert not torch.equal(tables[0].weight[40], tables[0].weight[1])  # untouched rows stay as they were


@pytest.mark.parametrize("kind", ["widedeep", "moe"])
def test_ddp_on_two_processes_equals_single_process_training(kind: str) -> None:
    """torch DDP (gloo, 2 processes via torch.multiprocessing): each rank trains on half of every batch and
    the averaged gradients give the single-process update (the MoE's balancing bias follows the global load),
    so both end with the same model."""
    from functools import partial

    from recstack.models.ctr import WideDeepConfig, train_ctr_ddp

    train, val, test = _planted(4096, 1), _planted(1000, 2), _planted(1000, 3)
    enc = CtrEncoder(FIELDS, "genres", CROSSES).fit(train)
    cfg = TrainConfig(epochs=2, batch_size=256, lr=3e-3, patience=5)
    if kind == "widedeep":
        build = partial(WideDeep, enc, WideDeepConfig(hidden=(32, 16)))
    else:
        build = partial(MoERanker, enc, MoEConfig(expert_hidden=(32, 16), tower_hidden=8, bias_rate=0.01))
    tasks = ["click"] if kind == "widedeep" else ["click", "like"]
    args = (enc.transform(train), {t: train[t].to_numpy() for t in tasks}, enc.transform(val),
            {t: val[t].to_numpy() for t in tasks}, cfg)  # fmt: skip
    torch.manual_seed(cfg.seed)
    single = build()
    one = train_ctr(single, *args)
    ddp_model, two = train_ctr_ddp(build, *args, world=2)
    p1 = predict(single, enc.transform(test))["click"]
    p2 = predict(ddp_model, enc.transform(test))["click"]
    assert np.allclose(p1, p2, atol=1e-4), np.abs(p1 - p2).max()
    assert one.best_epoch == two.best_epoch
    assert not np.allclose(p1, predict(build(), enc.transform(test))["click"], atol=1e-3)  # it did train


def test_row_adam_touched_rows_and_inverse() -> None:
    """The slot map gives each looked-up row once, maps every lookup back to it, and leaves the map free."""
    from recstack.models.ctr import RowAdam

    gen = torch.Generator().manual_seed(3)
    slot = torch.full((500,), -1, dtype=torch.int64)
    for n in (1, 7, 300, 2000):
        idx = torch.randint(0, 500, (n,), generator=gen)
        rows, inv = RowAdam.touched(idx, slot)
        assert torch.equal(torch.sort(rows).values, torch.unique(idx))
        assert torch.equal(rows[inv], idx)
        assert bool((slot == -1).all())


def test_row_adam_equals_torch_sparse_adam() -> None:
    """Over steps with duplicate lookups, RowAdam moves the weights exactly as torch's SparseAdam (lazy Adam),
    and rows no batch looked up stay untouched."""
    from recstack.models.ctr import RowAdam

    torch.manual_seed(0)
    ours, ref = (torch.nn.Embedding(50, 4, sparse=True) for _ in range(2))
    ref.load_state_dict(ours.state_dict())
    start = ours.weight.detach().clone()
    opt_ours, opt_ref = RowAdam([ours.weight], lr=0.01), torch.optim.SparseAdam([ref.weight], lr=0.01)
    gen = torch.Generator().manual_seed(1)
    for _ in range(25):
        idx = torch.randint(0, 40, (64,), generator=gen)  # rows 40..49 never looked up
        target = torch.randn(64, 4, generator=gen)
        for emb, opt in ((ours, opt_ours), (ref, opt_ref)):
            opt.zero_grad()
            ((emb(idx) - target) ** 2).sum().backward()
            opt.step()
    torch.testing.assert_close(ours.weight, ref.weight, rtol=1e-5, atol=1e-6)
    assert torch.equal(ours.weight[40:], start[40:])
    assert (ours.weight[:40] - start[:40]).abs().max() > 1e-3
