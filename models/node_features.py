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

Columns = dict[str, list[list[str]]]
"""Feature name → per row, the values that are set (one for one-hot, any number for multi-hot)."""


def _user_columns(users: pd.DataFrame) -> Columns:
    n = len(users)

    def col(name: str) -> pd.Series:
        return users[name] if name in users else pd.Series([None] * n, index=users.index)

    def one(values: pd.Series, fn: Any = str) -> list[list[str]]:
        return [[] if pd.isna(v) else [str(fn(v))] for v in values]

    return {
        "age_bucket": [[str(age_bucket(None if pd.isna(a) else int(a)))] for a in col(Col.AGE)],
        "gender": one(col(Col.GENDER)),
        "occupation": one(col(Col.OCCUPATION)),
        "zip_prefix": one(col(Col.ZIP_CODE), lambda z: zip_prefix(str(z))),
    }


def _item_columns(items: pd.DataFrame) -> Columns:
    n = len(items)
    genres = items[Col.GENRES] if Col.GENRES in items else pd.Series([None] * n, index=items.index)
    release = (
        items[Col.RELEASE_DATE] if Col.RELEASE_DATE in items else pd.Series([None] * n, index=items.index)
    )
    return {
        "genre": [[str(x) for x in g] if isinstance(g, list | np.ndarray) else [] for g in genres],
        "decade": [[] if pd.isna(d) else [str(pd.Timestamp(d).year // 10 * 10)] for d in release],
    }


def _fit(columns: Columns, vocab_max: int) -> dict[str, list[str]]:
    """The ``vocab_max`` most frequent values of each feature, sorted."""
    out = {}
    for name, rows in columns.items():
        counts = pd.Series([v for vs in rows for v in vs], dtype=object).value_counts()
        out[name] = sorted(counts.index[:vocab_max].astype(str).tolist())
    return out


def _encode(columns: Columns, vocab: dict[str, list[str]]) -> np.ndarray:
    n = len(next(iter(columns.values()))) if columns else 0
    out = np.zeros((n, sum(len(v) for v in vocab.values())), np.float32)
    offset = 0
    for name, rows in columns.items():
        slot = {v: j for j, v in enumerate(vocab[name])}
        for r, vs in enumerate(rows):
            for v in vs:
                j = slot.get(v)
                if j is not None:
                    out[r, offset + j] = 1.0
        offset += len(slot)
    return out


@dataclass
class FeatureEncoder:
    """Fitted vocabularies; ``user_matrix`` / ``item_matrix`` map profile frames to float32 features."""

    vocab_max: int = 100
    user_vocab: dict[str, list[str]] = field(default_factory=dict)
    item_vocab: dict[str, list[str]] = field(default_factory=dict)

    def fit(self, users: pd.DataFrame, items: pd.DataFrame) -> FeatureEncoder:
        self.user_vocab = _fit(_user_columns(users), self.vocab_max)
        self.user_vocab["age_bucket"] = [str(b) for b in range(len(AGE_EDGES) + 1)]
        self.item_vocab = _fit(_item_columns(items), self.vocab_max)
        return self

    @property
    def user_dim(self) -> int:
        return sum(len(v) for v in self.user_vocab.values())

    @property
    def item_dim(self) -> int:
        return sum(len(v) for v in self.item_vocab.values())

    def user_matrix(self, users: pd.DataFrame) -> np.ndarray:
        return _encode(_user_columns(users), self.user_vocab).reshape(len(users), self.user_dim)

    def item_matrix(self, items: pd.DataFrame) -> np.ndarray:
        return _encode(_item_columns(items), self.item_vocab).reshape(len(items), self.item_dim)

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
