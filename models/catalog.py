"""The serving catalog (a release part): item and user side data the recall channels, filters and re-rank read.

Built offline from the lake (profile tables + the latest graph snapshot) when a release is published, saved
beside the model as ``catalog/`` (``arrays.npz`` + ``manifest.json`` with checksums, like the model artifact),
and loaded whole into every service worker. It holds:

* items (sorted ids): genres and tags (CSR over vocabularies), title, first-seen time, release year, the
  time-decayed popularity (``trending``), the moderation state (approved unless the control stage says
  otherwise) and the session co-occurrence neighbours (``item_item`` of the graph snapshot);
* users (sorted ids): the demographic segment (age bucket × gender) of each profiled user;
* per segment: its most popular items (decayed interaction weight of the segment's users).

The inverted indexes the channels use (genre → items, keyword → items, segment → items) are derived at load.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
from recstack.features.definitions import age_bucket
from recstack.features.keys import Col, LakeTable
from recstack.models.artifact import ArtifactError, finish_artifact, read_manifest
from recstack.models.ids import IdIndex

APPROVED, PENDING, REJECTED = 1, 0, 2
"""Moderation states of ``Catalog.state``: only approved items are ever served."""
SEGMENT_TOP = 500
"""Items kept per demographic segment."""
COOCCUR_TOP = 50
"""Co-occurrence neighbours kept per item."""
UNKNOWN_SEGMENT = -1
CATALOG_DIR = "catalog"
"""Folder of the catalog inside a release."""
_TOKEN = re.compile(r"[a-z0-9]+")
_STOP = frozenset(["the", "a", "an", "of", "and", "in", "on", "to", "for", "with", "at", "by", "from", "is", "it", "la", "le", "de", "el"])


def tokens(text: str | None) -> list[str]:
    """Lower-case word tokens of a title or tag, without stop words, numbers-only years and 1-letter words."""
    if not text:
        return []
    return [t for t in _TOKEN.findall(text.lower()) if len(t) > 1 and t not in _STOP and not t.isdigit()]


def segment_of(age: int | None, gender: str | None) -> str:
    """The demographic segment key of a user: ``<age bucket>|<gender>``."""
    return f"{age_bucket(age)}|{gender or 'unknown'}"


def _csr(lists: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
    indptr = np.zeros(len(lists) + 1, dtype=np.int64)
    indptr[1:] = np.cumsum([len(x) for x in lists])
    flat = np.fromiter((v for x in lists for v in x), dtype=np.int64, count=int(indptr[-1]))
    return indptr, flat


def _vocab_csr(values: list[list[str]]) -> tuple[list[str], np.ndarray, np.ndarray]:
    vocab = sorted({v for vs in values for v in vs})
    pos = {v: i for i, v in enumerate(vocab)}
    indptr, flat = _csr([[pos[v] for v in vs] for vs in values])
    return vocab, indptr, flat


@dataclass
class Catalog:
    """Arrays of the catalog; see the module docstring. CSR pairs are ``(indptr, indices)``."""

    item_ids: np.ndarray  # (I,) int64, sorted
    genre_names: list[str]
    genre_indptr: np.ndarray
    genre_idx: np.ndarray
    tag_names: list[str]
    tag_indptr: np.ndarray
    tag_idx: np.ndarray
    titles: list[str]
    first_seen_s: np.ndarray  # (I,) int64 epoch seconds, -1 unknown
    release_year: np.ndarray  # (I,) int32, 0 unknown
    trending: np.ndarray  # (I,) float32 decayed popularity
    state: np.ndarray  # (I,) int8 moderation state
    cooccur_indptr: np.ndarray  # rows of item_ids -> neighbour item ids, heaviest first
    cooccur_items: np.ndarray
    cooccur_weights: np.ndarray
    user_ids: np.ndarray  # (U,) int64, sorted
    user_segment: np.ndarray  # (U,) int32 index into segment_names
    segment_names: list[str]
    segment_indptr: np.ndarray  # segment -> popular item ids, best first
    segment_items: np.ndarray
    as_of: str = ""
    built_at: str = field(default_factory=lambda: dt.datetime.now(dt.UTC).isoformat())

    # -- lookups --------------------------------------------------------------------------------------------
    def __post_init__(self) -> None:
        self._derived: dict[str, Any] = {}

    @property
    def num_items(self) -> int:
        return len(self.item_ids)

    def rows_of(self, item_ids: np.ndarray) -> np.ndarray:
        """Catalog rows of ``item_ids`` (-1 for ids not in the catalog)."""
        index = self._derived.get("item_index")
        if index is None:
            index = self._derived["item_index"] = IdIndex(self.item_ids)
        return index.rows(item_ids)  # type: ignore[no-any-return]

    def segment_of_user(self, user_id: int) -> int:
        index = self._derived.get("user_index")
        if index is None:
            index = self._derived["user_index"] = IdIndex(self.user_ids)
        row = index.row(user_id)
        return int(self.user_segment[row]) if row >= 0 else UNKNOWN_SEGMENT

    def segment_popular(self, segment: int) -> np.ndarray:
        if segment < 0:
            return np.empty(0, np.int64)
        return self.segment_items[self.segment_indptr[segment] : self.segment_indptr[segment + 1]]

    def cooccurring(self, row: int) -> tuple[np.ndarray, np.ndarray]:
        lo, hi = self.cooccur_indptr[row], self.cooccur_indptr[row + 1]
        return self.cooccur_items[lo:hi], self.cooccur_weights[lo:hi]

    @property
    def genre_matrix(self) -> np.ndarray:
        """(I, G) float32 multi-hot of genres (built on first use)."""
        if "genre_matrix" not in self._derived:
            m = np.zeros((self.num_items, max(len(self.genre_names), 1)), dtype=np.float32)
            rows = np.repeat(np.arange(self.num_items), np.diff(self.genre_indptr))
            m[rows, self.genre_idx] = 1.0
            self._derived["genre_matrix"] = m
        return self._derived["genre_matrix"]  # type: ignore[no-any-return]

    @property
    def primary_genre(self) -> np.ndarray:
        """(I,) int32 first genre of each item, -1 for none (the re-rank's diversity key)."""
        if "primary_genre" not in self._derived:
            has = np.diff(self.genre_indptr) > 0
            first = np.full(self.num_items, -1, dtype=np.int32)
            first[has] = self.genre_idx[self.genre_indptr[:-1][has]]
            self._derived["primary_genre"] = first
        return self._derived["primary_genre"]  # type: ignore[no-any-return]

    def by_genre(self, genre: int) -> np.ndarray:
        """Catalog rows of the approved items of ``genre``, most trending first (inverted index)."""
        return self._inverted("genre", self.genre_indptr, self.genre_idx, len(self.genre_names))[genre]

    def _keywords(self) -> dict[str, Any]:
        """The keyword index, built once: token vocabulary, token → rows (most trending first), each row's
        token ids (CSR) and each token's IDF, as arrays (no per-row Python objects stay alive)."""
        kw = self._derived.get("keyword")
        if kw is None:
            vocab: dict[str, int] = {}
            row_ids: list[list[int]] = []
            tag_names = self.tag_names
            for row in range(self.num_items):
                words = set(tokens(self.titles[row]))
                for t in self.tag_idx[self.tag_indptr[row] : self.tag_indptr[row + 1]]:
                    words.update(tokens(tag_names[t]))
                row_ids.append([vocab.setdefault(w, len(vocab)) for w in sorted(words)])
            indptr, flat = _csr(row_ids)
            del row_ids
            rows = np.repeat(np.arange(self.num_items), np.diff(indptr))
            order = np.argsort(flat, kind="stable")
            bounds = np.searchsorted(flat[order], np.arange(len(vocab) + 1))
            lists = [self._by_trend(rows[order[bounds[t] : bounds[t + 1]]]) for t in range(len(vocab))]
            df = np.diff(bounds)
            idf = np.where(df > 0, np.log((1 + self.num_items) / (1 + df)), 0.0)
            kw = {"vocab": vocab, "indptr": indptr, "ids": flat, "lists": lists, "idf": idf}
            self._derived["keyword"] = kw
        return kw  # type: ignore[no-any-return]

    def by_keyword(self, token: str) -> np.ndarray:
        """Catalog rows of the approved items whose title or tags hold ``token``, most trending first."""
        kw = self._keywords()
        t = kw["vocab"].get(token)
        return kw["lists"][t] if t is not None else np.empty(0, np.int64)  # type: ignore[no-any-return]

    def keyword_ids(self, words: list[str]) -> np.ndarray:
        vocab = self._keywords()["vocab"]
        return np.array([vocab[w] for w in words if w in vocab], np.int64)

    def row_keyword_ids(self, rows: np.ndarray) -> np.ndarray:
        """Token ids of the titles and tags of ``rows`` (concatenated)."""
        kw = self._keywords()
        rows = rows[rows >= 0]
        if len(rows) == 0:
            return np.empty(0, np.int64)
        return np.concatenate([kw["ids"][kw["indptr"][r] : kw["indptr"][r + 1]] for r in rows])

    def keyword_rows(self, token_id: int) -> np.ndarray:
        return self._keywords()["lists"][token_id]  # type: ignore[no-any-return]

    def keyword_idf_of(self, token_ids: np.ndarray) -> np.ndarray:
        return self._keywords()["idf"][token_ids]  # type: ignore[no-any-return]

    def warm(self) -> None:
        """Build every derived structure now (at release load) instead of on the first requests."""
        _ = self.genre_matrix, self.primary_genre
        if self.genre_names:
            self.by_genre(0)
        self._keywords()
        self.trending_rows()
        self.rows_of(self.item_ids[:1])
        self.segment_of_user(0)

    def keyword_idf(self, token: str) -> float:
        ids = self.keyword_ids([token])
        return float(self.keyword_idf_of(ids)[0]) if len(ids) else 0.0

    def _by_trend(self, rows: np.ndarray) -> np.ndarray:
        rows = rows[self.state[rows] == APPROVED]
        return rows[np.argsort(-self.trending[rows], kind="stable")]

    def _inverted(self, name: str, indptr: np.ndarray, idx: np.ndarray, size: int) -> list[np.ndarray]:
        if name not in self._derived:
            rows = np.repeat(np.arange(self.num_items), np.diff(indptr))
            order = np.argsort(idx, kind="stable")
            bounds = np.searchsorted(idx[order], np.arange(size + 1))
            self._derived[name] = [self._by_trend(rows[order[bounds[g] : bounds[g + 1]]]) for g in range(size)]
        return self._derived[name]  # type: ignore[no-any-return]

    def trending_rows(self) -> np.ndarray:
        """Approved rows by decayed popularity, best first."""
        if "trending" not in self._derived:
            self._derived["trending"] = self._by_trend(np.arange(self.num_items))
        return self._derived["trending"]  # type: ignore[no-any-return]

    def fresh_rows(self, now_s: int, max_age_days: float) -> np.ndarray:
        """Approved rows first seen within ``max_age_days`` before ``now_s`` (or never seen: brand new items),
        most trending first: the cold-start items channel. Computed once per hour of ``now_s``."""
        key = ("fresh", now_s // 3600, max_age_days)
        cached = self._derived.get("fresh")
        if cached is None or cached[0] != key:
            at = (now_s // 3600) * 3600
            age = at - self.first_seen_s
            fresh = (self.first_seen_s < 0) | ((age >= 0) & (age <= max_age_days * 86400))
            cached = (key, self._by_trend(np.flatnonzero(fresh)))
            self._derived["fresh"] = cached
        return cached[1]  # type: ignore[no-any-return]

    # -- persistence ----------------------------------------------------------------------------------------
    _ARRAYS = ("item_ids", "genre_indptr", "genre_idx", "tag_indptr", "tag_idx", "first_seen_s", "release_year",
               "trending", "state", "cooccur_indptr", "cooccur_items", "cooccur_weights", "user_ids",
               "user_segment", "segment_indptr", "segment_items")  # fmt: skip

    def validate(self) -> None:
        n = self.num_items
        checks = [
            (bool(np.all(np.diff(self.item_ids) > 0)), "item_ids sorted and unique"),
            (bool(np.all(np.diff(self.user_ids) > 0)), "user_ids sorted and unique"),
            (len(self.genre_indptr) == n + 1 and len(self.tag_indptr) == n + 1, "item CSR lengths"),
            (len(self.cooccur_indptr) == n + 1, "co-occurrence CSR length"),
            (all(len(a) == n for a in (self.first_seen_s, self.release_year, self.trending, self.state)), "item arrays"),
            (len(self.titles) == n, "titles"),
            (len(self.user_segment) == len(self.user_ids), "user segments"),
            (len(self.segment_indptr) == len(self.segment_names) + 1, "segment CSR length"),
        ]  # fmt: skip
        bad = [name for ok, name in checks if not ok]
        if bad:
            raise ArtifactError(f"inconsistent catalog: {', '.join(bad)}")

    def save(self, path: Path | str) -> Path:
        self.validate()
        path = Path(path)
        tmp = path.parent / f".{path.name}.{uuid.uuid4().hex}"
        tmp.mkdir(parents=True)
        np.savez(tmp / "arrays.npz", **{k: getattr(self, k) for k in self._ARRAYS})
        (tmp / "strings.json").write_text(json.dumps(
            {"genre_names": self.genre_names, "tag_names": self.tag_names, "titles": self.titles,
             "segment_names": self.segment_names}))  # fmt: skip
        fields = {"as_of": self.as_of, "built_at": self.built_at, "items": self.num_items, "users": len(self.user_ids)}
        return finish_artifact(tmp, path, "catalog", ["arrays.npz", "strings.json"], fields)

    @classmethod
    def load(cls, path: Path | str) -> Catalog:
        path = Path(path)
        manifest = read_manifest(path, kind="catalog")
        try:
            with np.load(path / "arrays.npz") as z:
                arrays = {k: z[k] for k in cls._ARRAYS}
            strings = json.loads((path / "strings.json").read_text())
        except Exception as exc:  # a damaged file raises several types
            raise ArtifactError(f"cannot read catalog {path}: {exc}") from exc
        cat = cls(**arrays, **strings, as_of=manifest.get("as_of", ""), built_at=manifest["built_at"])
        cat.validate()
        return cat

    @classmethod
    def minimal(cls, item_ids: np.ndarray, popularity: dict[int, float] | None = None) -> Catalog:
        """A catalog with ids only (every item approved), for releases published without one."""
        ids = np.unique(np.asarray(item_ids, np.int64))
        pop = popularity or {}
        n = len(ids)
        empty = np.empty(0, np.int64)
        zeros = np.zeros(n + 1, np.int64)
        return cls(
            item_ids=ids, genre_names=[], genre_indptr=zeros, genre_idx=empty, tag_names=[], tag_indptr=zeros,
            tag_idx=empty, titles=[""] * n, first_seen_s=np.zeros(n, np.int64),
            release_year=np.zeros(n, np.int32), trending=np.array([pop.get(int(i), 0.0) for i in ids], np.float32),
            state=np.full(n, APPROVED, np.int8), cooccur_indptr=zeros, cooccur_items=empty,
            cooccur_weights=np.empty(0, np.float32), user_ids=empty, user_segment=np.empty(0, np.int32),
            segment_names=[], segment_indptr=np.zeros(1, np.int64), segment_items=empty,
        )  # fmt: skip


def build_catalog(
    items: pd.DataFrame | None, users: pd.DataFrame | None, user_item: pd.DataFrame, item_item: pd.DataFrame | None,
    as_of: str = "", extra_item_ids: np.ndarray | None = None,
) -> Catalog:  # fmt: skip
    """The catalog from profile tables and graph edges (pandas frames with the lake's column names).

    ``user_item`` needs ``user_id, item_id, decayed_weight, first_ts``; ``item_item`` ``src, dst, weight``.
    Every item of the profiles, the edges and ``extra_item_ids`` (e.g. the model's) is in the catalog.
    """
    id_sets = [user_item[Col.ITEM_ID].to_numpy(np.int64)]
    if items is not None:
        id_sets.append(items[Col.ITEM_ID].to_numpy(np.int64))
    if extra_item_ids is not None:
        id_sets.append(np.asarray(extra_item_ids, np.int64))
    item_ids = np.unique(np.concatenate(id_sets))
    n = len(item_ids)
    prof = (items.set_index(Col.ITEM_ID).reindex(item_ids) if items is not None
            else pd.DataFrame(index=pd.Index(item_ids, name=Col.ITEM_ID)))  # fmt: skip

    def lists(col: str) -> list[list[str]]:
        if col not in prof:
            return [[] for _ in range(n)]
        return [[str(v) for v in x] if isinstance(x, list | np.ndarray) else [] for x in prof[col].tolist()]

    genre_names, genre_indptr, genre_idx = _vocab_csr(lists(Col.GENRES))
    tag_names, tag_indptr, tag_idx = _vocab_csr(lists(Col.TAGS))
    titles = [t if isinstance(t, str) else "" for t in prof[Col.TITLE].tolist()] if Col.TITLE in prof else [""] * n
    years = np.zeros(n, np.int32)
    if Col.RELEASE_DATE in prof:
        rd = pd.to_datetime(prof[Col.RELEASE_DATE], errors="coerce")
        years = rd.dt.year.fillna(0).astype(np.int32).to_numpy()

    rows = np.searchsorted(item_ids, user_item[Col.ITEM_ID].to_numpy(np.int64))
    decayed = user_item["decayed_weight"].to_numpy(np.float64)
    trending = np.bincount(rows, weights=decayed, minlength=n).astype(np.float32)
    first = (pd.to_datetime(user_item["first_ts"], utc=True).astype("int64") // 1_000_000_000).to_numpy()
    first_seen = np.full(n, np.iinfo(np.int64).max, np.int64)
    np.minimum.at(first_seen, rows, first)
    first_seen[first_seen == np.iinfo(np.int64).max] = -1

    # co-occurrence neighbours, heaviest first
    co_lists: list[list[int]] = [[] for _ in range(n)]
    co_w: list[list[float]] = [[] for _ in range(n)]
    if item_item is not None and len(item_item):
        ii = item_item.sort_values(["src", "weight", "dst"], ascending=[True, False, True])
        ii = ii.groupby("src", sort=False).head(COOCCUR_TOP)
        src_rows = np.searchsorted(item_ids, ii["src"].to_numpy(np.int64))
        for r, d, w in zip(src_rows, ii["dst"].to_numpy(np.int64), ii["weight"].to_numpy(np.float64), strict=True):
            co_lists[r].append(int(d))
            co_w[r].append(float(w))
    co_indptr, co_items = _csr(co_lists)
    co_weights = np.fromiter((w for ws in co_w for w in ws), np.float32, count=int(co_indptr[-1]))

    # users -> segments; segment -> popular items
    if users is not None and len(users):
        u = users.drop_duplicates(Col.USER_ID).sort_values(Col.USER_ID)
        keys = [segment_of(None if pd.isna(a) else int(a), None if pd.isna(g) else str(g))
                for a, g in zip(u[Col.AGE].tolist(), u[Col.GENDER].tolist(), strict=True)]  # fmt: skip
        segment_names = sorted(set(keys))
        seg_pos = {s: i for i, s in enumerate(segment_names)}
        user_ids = u[Col.USER_ID].to_numpy(np.int64)
        user_segment = np.array([seg_pos[k] for k in keys], np.int32)
        ui_users = user_item[Col.USER_ID].to_numpy(np.int64)
        upos = np.minimum(np.searchsorted(user_ids, ui_users), len(user_ids) - 1)
        known = user_ids[upos] == ui_users
        frame = pd.DataFrame({"seg": user_segment[upos[known]], "row": rows[known], "w": decayed[known]})
        agg = frame.groupby(["seg", "row"], as_index=False)["w"].sum()
        agg = agg.sort_values(["seg", "w", "row"], ascending=[True, False, True]).groupby("seg").head(SEGMENT_TOP)
        seg_lists: list[list[int]] = [[] for _ in segment_names]
        for s, r in zip(agg["seg"].to_numpy(), agg["row"].to_numpy(), strict=True):
            seg_lists[int(s)].append(int(item_ids[r]))
        segment_indptr, segment_items = _csr(seg_lists)
    else:
        user_ids, user_segment = np.empty(0, np.int64), np.empty(0, np.int32)
        segment_names, segment_indptr, segment_items = [], np.zeros(1, np.int64), np.empty(0, np.int64)

    return Catalog(
        item_ids=item_ids, genre_names=genre_names, genre_indptr=genre_indptr, genre_idx=genre_idx,
        tag_names=tag_names, tag_indptr=tag_indptr, tag_idx=tag_idx, titles=titles, first_seen_s=first_seen,
        release_year=years, trending=trending, state=np.full(n, APPROVED, np.int8), cooccur_indptr=co_indptr,
        cooccur_items=co_items, cooccur_weights=co_weights, user_ids=user_ids, user_segment=user_segment,
        segment_names=segment_names, segment_indptr=segment_indptr, segment_items=segment_items, as_of=as_of,
    )  # fmt: skip


def build_catalog_from_lake(lake_root: Path, extra_item_ids: np.ndarray | None = None) -> Catalog:
    """The catalog as of the latest graph snapshot of the lake (profiles + ``user_item`` + ``item_item``)."""
    from recstack.offline.jobs.graphs import latest_graphs_dir

    gdir = latest_graphs_dir(lake_root)
    path = gdir / "user_item"
    if not path.exists():
        raise ArtifactError(f"missing {path}: run `recstack graphs` first")
    user_item = pq.read_table(path, columns=[Col.USER_ID, Col.ITEM_ID, "decayed_weight", "first_ts"]).to_pandas()
    ii_path = gdir / "item_item"
    item_item = pq.read_table(ii_path, columns=["src", "dst", "weight"]).to_pandas() if ii_path.exists() else None
    profiles = []
    for table in (LakeTable.ITEMS, LakeTable.USERS):
        p = Path(lake_root) / table
        profiles.append(pq.read_table(p).to_pandas() if p.exists() else None)
    return build_catalog(profiles[0], profiles[1], user_item, item_item, as_of=gdir.name.split("=", 1)[1],
                         extra_item_ids=extra_item_ids)  # fmt: skip
