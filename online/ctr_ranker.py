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

The codes go through ``CtrEncoder.encode``, the function ``transform`` uses in training, so serving and
training encode alike. Score = ``Σ_t w_t · log σ(logit_t)`` = ``log Π_t p_t^{w_t}`` over the model's tasks
(``serving.ranker_weights``, e.g. click 1, like 0.5); a task the model lacks is ignored.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from recstack.features.definitions import FEATURES_BY_NAME
from recstack.features.keys import Col
from recstack.models.artifact import ArtifactError
from recstack.models.ctr import CtrBatch, CtrEncoder, MoEConfig, MoERanker, WideDeep
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


class CtrRanker:
    """``Ranker``: one batched forward of a Wide&Deep / MoE model over the request's candidates."""

    name = "ctr"

    def __init__(self, model: torch.nn.Module, enc: CtrEncoder, snapshot: FeatureSnapshot,
                 weights: dict[str, float] | None = None, version: str = "") -> None:  # fmt: skip
        self.model = model.eval()
        self.enc = enc
        self.snapshot = snapshot
        self.weights = weights or {"click": 1.0}
        self.version = version
        self.field_pos = {f: j for j, f in enumerate(enc.fields)}
        self.rt_pos = [(enc.dense.index(n), k) for k, n in enumerate(RT_USER) if n in enc.dense]
        self.rt_item_pos = [(enc.dense.index(n), k) for k, n in enumerate(RT_ITEM) if n in enc.dense]
        mean = np.array([enc.dense_stats[d][0] for d in enc.dense], np.float64)
        self.dense_mean = mean  # what a missing value is replaced by (0 after normalisation)

    def _context_codes(self, batch: RankBatch) -> np.ndarray:
        codes = np.zeros(len(self.enc.fields), np.int64)
        values = {"hour": batch.hour, "weekday": batch.weekday, "page": batch.page, "slot": 0, "device": batch.device}
        for f, v in values.items():
            j = self.field_pos.get(f)
            if j is not None and v is not None:
                codes[j] = self.enc.vocab[f].get(v, 0)
        return codes

    def encode(self, batch: RankBatch) -> CtrBatch:
        s, n = self.snapshot, len(batch)
        urow = int(s.users.rows(np.array([batch.user_id], np.int64))[0])
        irows = s.items.rows(batch.item_ids)
        known = irows >= 0
        safe = np.where(known, irows, 0)
        codes = np.where(known[:, None], s.item_codes[safe], 0) + self._context_codes(batch)[None, :]
        dense = np.where(known[:, None], s.item_dense[safe], np.nan)
        multi = np.where(known[:, None], s.item_multi[safe], 0)
        if urow >= 0:
            codes = codes + s.user_codes[urow][None, :]
            dense = np.where(np.isnan(dense), s.user_dense[urow][None, :], dense)
        for j, k in self.rt_pos:
            dense[:, j] = batch.user_realtime[k]
        for j, k in self.rt_item_pos:
            dense[:, j] = batch.item_realtime[:, k]
        dense = np.where(np.isnan(dense), self.dense_mean[None, :], dense)
        return self.enc.encode(codes, multi, dense.reshape(n, -1))

    def score(self, batch: RankBatch) -> np.ndarray:
        with torch.inference_mode():
            out = self.model(self.encode(batch))
            total = torch.zeros(len(batch), dtype=torch.float64)
            for task, w in self.weights.items():
                if task in out and w:
                    total += w * torch.nn.functional.logsigmoid(out[task].double())
        return total.numpy()


def load_ranker_file(path: Path, weights: dict[str, float] | None = None) -> CtrRanker:
    """A ``CtrRanker`` from a ``ranker.pt`` written by ``recstack train --model widedeep|moe``."""
    try:
        saved = torch.load(path, map_location="cpu", weights_only=False)  # our own artifact, from our registry
        enc: CtrEncoder = saved["encoder"]
        net: torch.nn.Module = WideDeep(enc) if saved["kind"] == "widedeep" else MoERanker(enc, MoEConfig())
        net.load_state_dict(saved["state"])
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
