"""Dense node features for the graph models, built from the profile tables (``features.schema`` USER_SCHEMA /
ITEM_SCHEMA columns) with the transforms of ``features.definitions``.

Users: one-hot age bucket, gender, occupation and zip prefix (the ``vocab_max`` most frequent values, the
rest share an "other" slot). Items: multi-hot genres and one-hot release decade. A missing or unseen value
leaves its block all zero, so a brand-new user or item still gets a (less specific) feature vector.
The vocabularies are part of the trained model: :class:`FeatureEncoder` is fitted once and reused for
inductive inference.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from recstack.features.definitions import AGE_EDGES, age_bucket, zip_prefix
from recstack.features.keys import Col


def _user_columns(users: pd.DataFrame) -> dict[str, list[str | None]]:
    n = len(users)

    def col(name: str) -> pd.Series:
        return users[name] if name in users else pd.Series([None] * n, index=users.index)

    return {
        "age_bucket": [str(age_bucket(None if pd.isna(a) else int(a))) for a in col(Col.AGE)],
        "gender": [None if pd.isna(g) else str(g) for g in col(Col.GENDER)],
        "occupation": [None if pd.isna(o) else str(o) for o in col(Col.OCCUPATION)],
        "zip_prefix": [zip_prefix(None if pd.isna(z) else str(z)) for z in col(Col.ZIP_CODE)],
    }


def _item_columns(items: pd.DataFrame) -> dict[str, list[list[str]]]:
    n = len(items)
    genres = items[Col.GENRES] if Col.GENRES in items else pd.Series([None] * n, index=items.index)
    release = (
        items[Col.RELEASE_DATE] if Col.RELEASE_DATE in items else pd.Series([None] * n, index=items.index)
    )
    decades = [[] if pd.isna(d) else [str(pd.Timestamp(d).year // 10 * 10)] for d in release]
    return {
        "genre": [
            [] if g is None or (not isinstance(g, list | np.ndarray)) else [str(x) for x in g] for g in genres
        ],
        "decade": decades,
    }


@dataclass
class FeatureEncoder:
    """Fitted vocabularies; ``user_matrix`` / ``item_matrix`` map profile frames to float32 features."""

    vocab_max: int = 100
    user_vocab: dict[str, list[str]] = field(default_factory=dict)
    item_vocab: dict[str, list[str]] = field(default_factory=dict)

    def fit(self, users: pd.DataFrame, items: pd.DataFrame) -> FeatureEncoder:
        for name, values in _user_columns(users).items():
            counts = pd.Series([v for v in values if v is not None]).value_counts()
            self.user_vocab[name] = sorted(counts.index[: self.vocab_max].astype(str).tolist())
        self.user_vocab["age_bucket"] = [str(b) for b in range(len(AGE_EDGES) + 1)]
        for name, lists in _item_columns(items).items():
            counts = pd.Series([v for vs in lists for v in vs]).value_counts()
            self.item_vocab[name] = sorted(counts.index[: self.vocab_max].astype(str).tolist())
        return self

    @property
    def user_dim(self) -> int:
        return sum(len(v) for v in self.user_vocab.values())

    @property
    def item_dim(self) -> int:
        return sum(len(v) for v in self.item_vocab.values())

    def user_matrix(self, users: pd.DataFrame) -> np.ndarray:
        out = np.zeros((len(users), self.user_dim), np.float32)
        offset = 0
        for name, values in _user_columns(users).items():
            slot = {v: j for j, v in enumerate(self.user_vocab[name])}
            for r, v in enumerate(values):
                j = slot.get(v) if v is not None else None
                if j is not None:
                    out[r, offset + j] = 1.0
            offset += len(slot)
        return out

    def item_matrix(self, items: pd.DataFrame) -> np.ndarray:
        out = np.zeros((len(items), self.item_dim), np.float32)
        offset = 0
        for name, lists in _item_columns(items).items():
            slot = {v: j for j, v in enumerate(self.item_vocab[name])}
            for r, vs in enumerate(lists):
                for v in vs:
                    j = slot.get(v)
                    if j is not None:
                        out[r, offset + j] = 1.0
            offset += len(slot)
        return out

    def to_dict(self) -> dict[str, object]:
        return {"vocab_max": self.vocab_max, "user_vocab": self.user_vocab, "item_vocab": self.item_vocab}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FeatureEncoder:
        return cls(
            vocab_max=int(d["vocab_max"]), user_vocab=dict(d["user_vocab"]), item_vocab=dict(d["item_vocab"])
        )


def aligned(frame: pd.DataFrame, key: str, ids: np.ndarray) -> pd.DataFrame:
    """Rows of ``frame`` in the order of ``ids`` (missing ids give all-null rows)."""
    return frame.drop_duplicates(key).set_index(key).reindex(pd.Index(ids, name=key)).reset_index()
