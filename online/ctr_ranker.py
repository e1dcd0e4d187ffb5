"""The fine-rank stage with a trained Wide&Deep or MoE ranker (``recstack train --model widedeep|moe``).

The ranker artifact (``ranker.pt`` in the MLflow run of ``recstack-ranker-<model>``) carries the model, its
``CtrEncoder`` and a **feature snapshot**: the lake's latest ``user_features`` / ``item_features`` rows
(profile + statistics after the last event of the training data), encoded once into per-user and per-item
arrays. A request then needs no feature lookups beyond the real-time counts the pipeline already read:

* user fields / dense values: one row of the user snapshot (unknown user: code 0 = unknown, dense = the
  training mean, i.e. 0 after normalisation);
* item fields, genres (multi-valued) and dense values: rows of the item snapshot;
* context: hour, weekday, page, device of the request; slot = 0 (the list position is not known before
  ranking, and 0 is what the top of the list was trained with);
* real-time windows: ``RankBatch.user_realtime`` / ``item_realtime`` (log1p, as in the samples).

``CtrRanker.encode`` builds every candidate's model input through ``CtrEncoder.encode``, the function
``transform`` uses in training; ``CtrRanker.score`` computes the same forward by parts (see the class) and is
tested equal to the model's own forward on that input. Score = ``Σ_t w_t · log σ(logit_t)`` = ``log Π_t p_t^{w_t}`` over the model's tasks
(``serving.ranker_weights``, e.g. click 1, like 0.5); a task the model lacks is ignored.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from recstack.features.definitions import FEATURES_BY_NAME
from recstack.features.keys import Col
from recstack.models.artifact import ArtifactError
from recstack.models.ctr import (
    LEFT_FACTOR,
    RIGHT_FACTOR,
    CtrBatch,
    CtrEncoder,
    cross_bucket,
    fused,
    ranker_from_saved,
)
from recstack.models.ids import IdIndex
from recstack.online.ranking import RT_ITEM, RT_USER, RankBatch

CONTEXT_FIELDS = ("hour", "weekday", "page", "slot", "device")


def _dense_value(frame: pd.DataFrame, name: str) -> np.ndarray:
    col = frame[name].astype(float).fillna(0.0).to_numpy() if name in frame else np.zeros(len(frame))
    return np.log1p(np.clip(col, 0, None)) if FEATURES_BY_NAME[name].log1p else col


@dataclass
class FeatureSnapshot:
    """Encoded per-user and per-item features, aligned with sorted ids (codes before table offsets)."""

    users: IdIndex
    user_codes: np.ndarray  # (U, F) codes of the user fields, 0 elsewhere
    user_dense: np.ndarray  # (U, D) raw (log1p where declared) user dense values, NaN elsewhere
    items: IdIndex
    item_codes: np.ndarray  # (I, F)
    item_multi: np.ndarray  # (I, max_multi)
    item_dense: np.ndarray  # (I, D)

    @classmethod
    def build(cls, enc: CtrEncoder, users: pd.DataFrame, items: pd.DataFrame) -> FeatureSnapshot:
        """From the latest ``user_features`` / ``item_features`` frames (USER_ID / ITEM_ID + feature columns)."""
        users = users.drop_duplicates(Col.USER_ID, keep="last").sort_values(Col.USER_ID)
        items = items.drop_duplicates(Col.ITEM_ID, keep="last").sort_values(Col.ITEM_ID)

        def block(frame: pd.DataFrame, group: str) -> tuple[np.ndarray, np.ndarray]:
            codes = np.zeros((len(frame), len(enc.fields)), np.int64)
            for j, f in enumerate(enc.fields):
                if FEATURES_BY_NAME[f].group == group and f in frame:
                    codes[:, j] = frame[f].map(enc.vocab[f]).fillna(0).to_numpy(np.int64)
            dense = np.full((len(frame), len(enc.dense)), np.nan)
            for j, d in enumerate(enc.dense):
                if FEATURES_BY_NAME[d].group == group:
                    dense[:, j] = _dense_value(frame, d)
            return codes, dense

        uc, ud = block(users, "user")
        ic, idn = block(items, "item")
        genres = items[enc.multi_field] if enc.multi_field and enc.multi_field in items else pd.Series([[]] * len(items))
        multi = enc.multi_codes([list(g) if g is not None else [] for g in genres])
        return cls(IdIndex(users[Col.USER_ID].to_numpy(np.int64)), uc, ud,
                   IdIndex(items[Col.ITEM_ID].to_numpy(np.int64)), ic, multi, idn)  # fmt: skip


def _starts(sizes: np.ndarray) -> np.ndarray:
    """Where each of consecutive blocks of these sizes starts."""
    return (np.cumsum(sizes) - sizes).astype(np.int64)


class _CrossPlan:
    """How the online ranker sums the wide weights of the hashed crosses, by the sides of each cross.

    A cross column's bucket is ``cross_bucket(item part + request part + salt)`` (``CtrEncoder.cross_linear``:
    the first step of the hash is linear, mod 2^64). By where its two fields live:

    * both on the item (``item_only``): folded into the item's wide sum at load;
    * both on the request (``request_only``): one weight per request;
    * an item field against a request field of at most ``small`` values (``by_request``: gender × genres,
      item × occupation, ...): per item, a column per value of the request field, summing the weights of
      all its crosses with that value; a request selects one column per such field;
    * an item side of at most ``small`` values against a large request field (``by_item``: user × genres):
      per item, a count of each item value (the slots of a multi-valued field that hold it); a request hashes
      the weight of every item value once (a few dozen) and takes the counts' dot product with them;
    * both large (``hashed``, e.g. user × item): the item's part of the hash is kept and each candidate's
      hash is finished per request.

    The item side of the first three is one (items, ``width``) float32 matrix ``[wide sum | by_request columns
    | by_item counts]``; a request builds the matching vector (``request_vector``), so a candidate's wide part
    is one gathered row times that vector.
    """

    def __init__(self, enc: CtrEncoder, item_field: np.ndarray, small: int = 64) -> None:
        left, right, _, from_multi = enc._cross_plan
        n_f = len(enc.fields)
        cards = np.array(enc.cardinalities + [enc.multi_cardinality] * enc.max_multi, np.int64)
        on_item = np.concatenate([item_field, np.ones(enc.max_multi, bool)])  # the multi-valued field is the item's
        self.salt = enc.cross_salt
        self.left, self.right = left, right
        self.left_on_request, self.right_on_request = ~on_item[left], ~on_item[right]
        item_l, item_r = on_item[left], on_item[right]
        mixed = item_l != item_r
        self.item_side = np.where(item_l, left, right)  # the item's column of a mixed cross ([codes | multi])
        request_side = np.where(item_l, right, left)
        small_request = mixed & (cards[request_side] <= small)
        small_item = mixed & ~small_request & (cards[self.item_side] <= small)
        cols = np.arange(len(left))
        self.item_only, self.request_only = cols[item_l & item_r], cols[~item_l & ~item_r]
        self.by_request, self.by_item = cols[small_request], cols[small_item]
        self.hashed = cols[mixed & ~small_request & ~small_item]
        # by_request: a block of card(f) columns per request field f (after the wide-sum column 0)
        self.request_fields = np.unique(request_side[self.by_request])  # fields (< n_f): requests carry no multi
        assert (self.request_fields < n_f).all()
        self.field_base = 1 + _starts(cards[self.request_fields])
        base_of = dict(zip(self.request_fields.tolist(), self.field_base.tolist(), strict=True))
        # (column of the item matrix, cross, the request value's part of the hash): summed into that column
        self.request_value_columns: list[tuple[int, int, np.uint64]] = []
        with np.errstate(over="ignore"):
            for j in self.by_request:
                f = int(request_side[j])
                mult = LEFT_FACTOR if self.left_on_request[j] else RIGHT_FACTOR  # the request field's factor in the hash
                self.request_value_columns += [(base_of[f] + v, int(j), np.uint64(v) * mult) for v in range(cards[f])]
        by_item_base = 1 + int(cards[self.request_fields].sum())
        # by_item: groups of columns that hash alike (same salt and request field, the item side's values and
        # factor): the slots of one multi-valued cross; one block of item-value counts per group
        item_mult = np.where(self.left_on_request, RIGHT_FACTOR, LEFT_FACTOR)  # the item side's factor in the hash
        groups: dict[tuple[int, ...], list[int]] = {}
        for j in self.by_item:
            key = (int(self.salt[j]), int(request_side[j]), int(item_mult[j]), int(cards[self.item_side[j]]),
                   bool(from_multi[j]), int(self.item_side[j]) if not from_multi[j] else -1)  # fmt: skip
            groups.setdefault(key, []).append(int(j))
        self.groups = list(groups.values())
        widths = np.array([cards[self.item_side[g[0]]] for g in self.groups], np.int64)
        self.group_base = by_item_base + _starts(widths)
        self.width = by_item_base + int(widths.sum())
        first = np.array([g[0] for g in self.groups], np.int64)  # one cross stands for its group
        self.value_group = np.repeat(np.arange(len(self.groups)), widths)  # per item value: its group
        value = np.arange(int(widths.sum())) - np.repeat(_starts(widths), widths)
        self.value_cross = first[self.value_group]
        with np.errstate(over="ignore"):  # each item value's part of the hash, with the salt
            self.value_parts = value.astype(np.uint64) * item_mult[self.value_cross] + self.salt[self.value_cross]
        # 0 for the padding value of a multi-valued field: no cross
        self.value_present = ((value > 0) | ~from_multi[self.value_cross]).astype(np.float32)

    def item_matrix(self, enc: CtrEncoder, codes: np.ndarray, multi: np.ndarray, wide_sum: np.ndarray,
                    weight: Callable[[np.ndarray], np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:  # fmt: skip
        """The rows of the item matrix of these items (codes, multi values, their plain wide sum), and their
        part and presence of each hashed cross."""
        part, present = enc.cross_linear(codes, multi), enc.cross_present(multi)
        out = np.zeros((len(codes), self.width), np.float32)
        with np.errstate(over="ignore"):
            items = (weight(part[:, self.item_only] + self.salt[self.item_only]) * present[:, self.item_only]).sum(1)
            out[:, 0] = wide_sum + items
            for col, j, req_part in self.request_value_columns:  # cross j with one value of its request field
                out[:, col] += weight(part[:, j] + (req_part + self.salt[j])) * present[:, j]
        values = np.hstack([codes, multi])
        rows = np.arange(len(codes))
        for g, base in zip(self.groups, self.group_base, strict=True):
            for j in g:
                np.add.at(out, (rows, base + values[:, self.item_side[j]]), 1.0)
        return out, part[:, self.hashed], present[:, self.hashed]

    def request_part(self, codes: np.ndarray) -> np.ndarray:
        """The request's part of every cross's hash from its field codes (item fields 0; no multi values)."""
        with np.errstate(over="ignore"):
            left = np.where(self.left_on_request, codes[self.left], 0).astype(np.uint64) * LEFT_FACTOR
            right_codes = np.where(self.right_on_request, codes[np.minimum(self.right, len(codes) - 1)], 0)
            return left + right_codes.astype(np.uint64) * RIGHT_FACTOR

    def request_vector(self, codes: np.ndarray, req_part: np.ndarray,
                       weight: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:  # fmt: skip
        """The vector whose dot product with an item's row is its wide sum plus its by_request and by_item
        cross weights for this request."""
        v = np.zeros(self.width, np.float32)
        v[0] = 1.0
        v[self.field_base + codes[self.request_fields]] = 1.0
        if self.groups:
            v[self.group_base[0] :] = weight(req_part[self.value_cross] + self.value_parts) * self.value_present
        return v


class CtrRanker:
    """``Ranker``: a Wide&Deep / MoE model (its ``fused`` inference form) over the request's candidates.

    Scored by parts, equal to the model's forward on ``encode(batch)`` (tested) at a fraction of its cost.
    The input row is three disjoint blocks of columns: the item's own features (item fields, genres, the
    item's dense statistics), the request's (user fields and statistics, context, the user's real-time
    counts: the same on every row of a request) and the item's real-time counts. The first layer is linear,
    so ``x @ W`` = item part + request part + real-time part, and so is the wide part (a sum of weights):

    * item part: precomputed per item when the ranker loads (as an item tower's outputs are): its first-layer
      contribution, and a row of wide weights by the sides of each cross (``_CrossPlan``): the item's wide
      sum, a column per value of each small request field it is crossed with, counts of its values crossed
      with a large request field: ~1.5 KB per item for the default MoE (150 MB at 100K items); the snapshot
      is frozen with the ranker, so a row never goes stale;
    * request part: one row of embeddings and dense values, multiplied once, and the vector that picks and
      weighs the item's wide row (the request's weight of each item value is hashed here, a few dozen);
    * per candidate: the real-time columns (a (B, 4) product), one wide row times that vector, and the end
      of the hash of any cross of two large fields (none by default). What is left
      of the network runs on the summed first layer (``after_first``)."""

    name = "ctr"

    def __init__(self, model: torch.nn.Module, enc: CtrEncoder, snapshot: FeatureSnapshot,
                 weights: dict[str, float] | None = None, version: str = "", cross_small: int = 64) -> None:  # fmt: skip
        self.model = model.eval()
        self.net = fused(model)
        self.enc = enc
        self.snapshot = snapshot
        self.weights = weights or {"click": 1.0}
        self.version = version
        self.field_pos = {f: j for j, f in enumerate(enc.fields)}
        self.rt_pos = [(enc.dense.index(n), k) for k, n in enumerate(RT_USER) if n in enc.dense]
        # (dense column, RankBatch.item_realtime column), in dense-column order (the order of W's rows below)
        self.rt_item_pos = sorted((enc.dense.index(n), k) for k, n in enumerate(RT_ITEM) if n in enc.dense)
        self.dense_mean = np.array([enc.dense_stats[d][0] for d in enc.dense], np.float64)  # fills a missing value
        self.dense_std = np.array([enc.dense_stats[d][1] for d in enc.dense], np.float64)
        self.offsets = enc.offsets
        # the input columns by block: item, per-candidate real-time, request (the rest)
        dim, n_f = self.net.inputs.emb.embedding_dim, len(enc.fields)
        self.item_field = np.array([FEATURES_BY_NAME[f].group == "item" for f in enc.fields])
        item_dense = np.array([FEATURES_BY_NAME[d].group == "item" for d in enc.dense], bool)
        rt_dense = np.zeros(len(enc.dense), bool)
        rt_dense[[j for j, _ in self.rt_item_pos]] = True
        item_dense &= ~rt_dense  # a real-time value overrides the snapshot's (as in ``encode``)
        self.request_dense = ~item_dense & ~rt_dense
        item_cols = np.concatenate([np.repeat(self.item_field, dim), np.ones(dim, bool), item_dense])
        rt_cols = np.concatenate([np.zeros((n_f + 1) * dim, bool), rt_dense])
        w, self.bias = self.net.first_layer()
        self.w_first, self.w_rt = w, w[torch.from_numpy(rt_cols)].contiguous()
        self.item_mask = torch.from_numpy(item_cols.astype(np.float32))
        self.emb = self.net.inputs.emb.weight.detach().numpy()
        self.rt_idx = np.array([k for _, k in self.rt_item_pos], np.int64)
        self.rt_mean = self.dense_mean[rt_dense].astype(np.float32)
        self.rt_std = self.dense_std[rt_dense].astype(np.float32)
        wide = self.net.wide
        # the wide part's weights (empty without one: then there is no cross plan and nothing reads them)
        self.wide_table: np.ndarray = wide.table.weight.detach().numpy()[:, 0] if wide is not None else np.zeros(0)
        self.wide_bias = float(wide.bias.detach()) if wide is not None else 0.0
        self.h = w.shape[1]
        self.w_first_t = w.t().contiguous()
        n_items = len(snapshot.item_codes)  # + one row for items the snapshot does not know
        self.item_first = torch.empty((n_items + 1, self.h), dtype=torch.float32)
        self.cross = _CrossPlan(enc, self.item_field, cross_small) if wide is not None else None
        if self.cross is not None:
            c = self.cross
            self.item_wide = np.zeros((n_items + 1, c.width), np.float32)  # [wide sum | by_request | by_item]
            self.item_cross = np.zeros((n_items + 1, len(c.hashed)), np.uint64)  # the item's part of the hash
            self.item_cross_present = np.ones((n_items + 1, len(c.hashed)), bool)
        for lo in range(0, n_items + 1, 8192):
            self._fill_items(np.arange(lo, min(lo + 8192, n_items + 1)))

    def _context_codes(self, batch: RankBatch) -> np.ndarray:
        codes = np.zeros(len(self.enc.fields), np.int64)
        values = {"hour": batch.hour, "weekday": batch.weekday, "page": batch.page, "slot": 0, "device": batch.device}
        for f, v in values.items():
            j = self.field_pos.get(f)
            if j is not None and v is not None:
                codes[j] = self.enc.vocab[f].get(v, 0)
        return codes

    def _request(self, batch: RankBatch) -> tuple[np.ndarray, np.ndarray]:
        """The request's field codes (item fields 0) and raw dense values (item columns NaN)."""
        s = self.snapshot
        urow = int(s.users.rows(np.array([batch.user_id], np.int64))[0])
        codes = self._context_codes(batch)
        dense = np.full(len(self.enc.dense), np.nan)
        if urow >= 0:
            codes = codes + s.user_codes[urow]
            dense = s.user_dense[urow].copy()
        for j, k in self.rt_pos:
            dense[j] = batch.user_realtime[k]
        return codes, dense

    def encode(self, batch: RankBatch) -> CtrBatch:
        """The model input of every candidate, as training encodes a sample (what ``score`` equals)."""
        s, n = self.snapshot, len(batch)
        req_codes, req_dense = self._request(batch)
        irows = s.items.rows(batch.item_ids)
        known = irows >= 0
        safe = np.where(known, irows, 0)
        codes = np.where(known[:, None], s.item_codes[safe], 0) + req_codes[None, :]
        multi = np.where(known[:, None], s.item_multi[safe], 0)
        dense = np.where(known[:, None], s.item_dense[safe], np.nan)
        dense = np.where(np.isnan(dense), req_dense[None, :], dense)
        for j, k in self.rt_item_pos:
            dense[:, j] = batch.item_realtime[:, k]
        dense = np.where(np.isnan(dense), self.dense_mean[None, :], dense)
        return self.enc.encode(codes, multi, dense.reshape(n, -1))

    def _fill_items(self, slots: np.ndarray) -> None:
        """The item side of the first layer, of the wide weights and of every cross hash, for these table
        slots (snapshot rows; the last slot = an item the snapshot does not know: code 0, no genres, mean
        statistics)."""
        s = self.snapshot
        known = slots < len(s.item_codes)
        safe = np.where(known, slots, 0)
        codes = np.where(known[:, None], s.item_codes[safe], 0)
        multi = np.where(known[:, None], s.item_multi[safe], 0)
        dense = np.where(known[:, None], s.item_dense[safe], np.nan)
        dense = np.where(np.isnan(dense), self.dense_mean[None, :], dense)
        with torch.inference_mode():
            x = self.net.inputs(self.enc.encode(codes, multi, dense)) * self.item_mask
            self.item_first[torch.from_numpy(slots)] = x @ self.w_first
        if self.cross is not None:
            ids = (codes + self.offsets)[:, self.item_field]
            mb = self.net.wide.multi_base
            wide = self.wide_table[ids].sum(1) + np.where(multi > 0, self.wide_table[multi + mb], 0.0).sum(1)
            rows, part, present = self.cross.item_matrix(self.enc, codes, multi, wide, self._cross_weight)
            self.item_wide[slots], self.item_cross[slots], self.item_cross_present[slots] = rows, part, present

    def _cross_weight(self, x: np.ndarray) -> np.ndarray:
        with np.errstate(over="ignore"):
            return self.wide_table[cross_bucket(x) + self.net.wide.cross_base]

    def first_and_wide(self, batch: RankBatch) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``inputs(b) @ W + bias`` of the fused model (B, H) and its wide logit (B,), assembled by parts."""
        s = self.snapshot
        irows = s.items.rows(batch.item_ids)
        slots = np.where(irows >= 0, irows, len(s.item_codes))
        req_codes, req_dense = self._request(batch)
        req_ids = req_codes + self.offsets
        e = self.emb[req_ids] * (~self.item_field)[:, None]
        d = np.where(np.isnan(req_dense), self.dense_mean, req_dense)
        d = np.where(self.request_dense, (d - self.dense_mean) / self.dense_std, 0.0)
        x0 = np.concatenate([e.ravel(), np.zeros(self.emb.shape[1], np.float32), d.astype(np.float32)])
        rt = batch.item_realtime[:, self.rt_idx]
        rt = ((np.where(np.isnan(rt), self.rt_mean, rt) - self.rt_mean) / self.rt_std).astype(np.float32)
        with torch.inference_mode():
            first = torch.index_select(self.item_first, 0, torch.from_numpy(slots))
            first.add_(torch.addmv(self.bias, self.w_first_t, torch.from_numpy(x0)))
            first.addmm_(torch.from_numpy(rt), self.w_rt)
        if self.cross is None:
            return first, None
        c = self.cross
        req_part = c.request_part(req_codes)  # the request's part of each cross's hash (uint64)
        weight = self._cross_weight
        request_wide = (self.wide_table[req_ids[~self.item_field]].sum() + self.wide_bias
                        + weight(req_part[c.request_only] + c.salt[c.request_only]).sum())  # fmt: skip
        wide = np.take(self.item_wide, slots, 0) @ c.request_vector(req_codes, req_part, weight)
        wide += np.float32(request_wide)
        if len(c.hashed):  # both sides large: the end of the hash per candidate
            x = self.item_cross[slots] + (req_part[c.hashed] + c.salt[c.hashed])
            wide += (weight(x) * self.item_cross_present[slots]).sum(1)
        return first, torch.from_numpy(wide)

    def score(self, batch: RankBatch) -> np.ndarray:
        with torch.inference_mode():
            out = self.net.after_first(*self.first_and_wide(batch))
            terms = [torch.nn.functional.logsigmoid(out[t].double()).mul_(w)
                     for t, w in self.weights.items() if t in out and w]  # fmt: skip
            if not terms:
                return np.zeros(len(batch))
            total = terms[0] if len(terms) == 1 else torch.stack(terms).sum(0)
        return total.numpy()


def load_ranker_file(path: Path, weights: dict[str, float] | None = None) -> CtrRanker:
    """A ``CtrRanker`` from a ``ranker.pt`` written by ``recstack train --model widedeep|moe``."""
    try:
        saved = torch.load(path, map_location="cpu", weights_only=False)  # our own artifact, from our registry
        enc: CtrEncoder = saved["encoder"]
        net = ranker_from_saved(saved)
        snap = saved["snapshot"]
    except ArtifactError:
        raise
    except Exception as exc:
        raise ArtifactError(f"cannot load the ranker {path}: {exc}") from exc
    return CtrRanker(net, enc, FeatureSnapshot.build(enc, snap["users"], snap["items"]), weights,
                     saved.get("version", ""))  # fmt: skip


class SwappableRanker:
    """``Ranker`` that forwards to the current ranker; a promotion swaps it with one reference assignment, so
    a request in flight finishes on the ranker it started with."""

    def __init__(self, current: CtrRanker) -> None:
        self.current = current

    @property
    def name(self) -> str:
        return self.current.name

    def score(self, batch: RankBatch) -> np.ndarray:
        return self.current.score(batch)


class ChampionRanker:
    """The ranker at ``recstack-ranker-<model>@<alias>`` in the MLflow registry, re-checked by ``check``."""

    def __init__(self, tracking_uri: str, model: str, alias: str, cache_dir: Path,
                 weights: dict[str, float] | None = None) -> None:  # fmt: skip
        from mlflow.tracking import MlflowClient

        self.client = MlflowClient(tracking_uri)
        self.tracking_uri, self.alias, self.cache_dir, self.weights = tracking_uri, alias, Path(cache_dir), weights
        self.model_name = f"recstack-ranker-{model}"
        self.version: str | None = None
        self.ranker: SwappableRanker | None = None

    def _load(self, version: str) -> CtrRanker:
        import mlflow

        source = self.client.get_model_version(self.model_name, version).source
        target = self.cache_dir / self.model_name / version
        got = Path(mlflow.artifacts.download_artifacts(artifact_uri=source, dst_path=str(target),
                                                       tracking_uri=self.tracking_uri))  # fmt: skip
        path = got / "ranker.pt" if got.is_dir() else got
        return load_ranker_file(path, self.weights)

    def check(self) -> bool:
        """Load the alias's version if it moved; True when a new ranker was swapped in. A version that cannot
        be loaded is refused (raises ``ArtifactError``) and the current one keeps serving."""
        mv = self.client.get_model_version_by_alias(self.model_name, self.alias)
        if str(mv.version) == self.version:
            return False
        ranker = self._load(str(mv.version))
        if self.ranker is None:
            self.ranker = SwappableRanker(ranker)
        else:
            self.ranker.current = ranker
        self.version = str(mv.version)
        return True
