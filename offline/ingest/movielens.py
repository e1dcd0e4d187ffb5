"""MovieLens directories → event lake.

Formats, detected from the files present:

* ``ml-100k``: ``u.data`` (tab: user, item, rating, unix s), ``u.user`` (``|``), ``u.item`` (``|``, 19 genre
  flags, latin-1), optional ``u.genre``;
* ``ml-dat`` (ml-1m / ml-10m): ``ratings.dat``, ``movies.dat``, optional ``users.dat`` (``::``);
* ``ml-csv`` (ml-latest / ml-20m / ml-25m): ``ratings.csv``, ``movies.csv``, optional ``tags.csv``; no
  demographics.

A rating becomes the events of one simulated request (see ``offline.ingest.impressions``): the slate of
impressions it was chosen from, a click, and the rating itself with its label (rating >= 4 is positive).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
from recstack.features.keys import Col
from recstack.features.schema import EventType, empty_event_frame, quarantine_frame, validate_events
from recstack.features.settings import DataSettings
from recstack.offline.ingest import IngestReport, Progress, no_progress
from recstack.offline.ingest.impressions import RatingLog, expand_ratings
from recstack.offline.lake import EventLake

ML100K_GENRES = [
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary", "Drama",
    "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western",
]  # fmt: skip
_YEAR = re.compile(r"\((\d{4})\)\s*$")
CHUNK_ROWS = 1_000_000


class MovieLensFormatError(ValueError):
    """The directory holds no MovieLens files recstack knows."""


def detect_format(folder: Path) -> str:
    if (folder / "u.data").exists():
        return "ml-100k"
    if (folder / "ratings.dat").exists():
        return "ml-dat"
    if (folder / "ratings.csv").exists():
        return "ml-csv"
    raise MovieLensFormatError(
        f"{folder} is not a MovieLens directory: expected u.data (100K), ratings.dat (1M/10M) or ratings.csv"
    )


def _read_delimited(
    path: Path,
    sep: str,
    names: list[str],
    encoding: str = "utf-8",
    header: bool = False,
    chunksize: int | None = None,
) -> pd.DataFrame | Iterator[pd.DataFrame]:
    """Read every field as text; rows with the wrong field count are kept with NaN so validation sees them."""
    return pd.read_csv(
        path, sep=sep, names=names, header=0 if header else None, dtype=str, keep_default_na=False,
        na_values=[""], encoding=encoding, engine="python" if len(sep) > 1 else "c", chunksize=chunksize,
        on_bad_lines="warn", quoting=0 if sep == "," else 3,
    )  # fmt: skip


def _quarantine_frame(raw: pd.DataFrame, reasons: pd.Series, source: str) -> pd.DataFrame:
    bad = (reasons != "").to_numpy()
    return quarantine_frame(raw[bad], reasons[bad], source)


def _id_reasons(ids: pd.Series, what: str) -> tuple[pd.Series, pd.Series]:
    num = pd.to_numeric(ids, errors="coerce")
    reasons = pd.Series("", index=ids.index, dtype=object)
    reasons[num.isna() | (num < 0) | (num % 1 != 0)] = f"invalid {what}"
    reasons[(reasons == "") & num.duplicated(keep="first")] = f"duplicate {what}"
    return num, reasons


def _load_items(folder: Path, fmt: str, lake: EventLake, report: IngestReport, run_id: str) -> np.ndarray:
    if fmt == "ml-100k":
        names = ["item", "title", "release", "video", "url", *[f"g{i}" for i in range(19)]]
        raw = _read_delimited(folder / "u.item", "|", names, encoding="latin-1")
        assert isinstance(raw, pd.DataFrame)
        genre_names = ML100K_GENRES
        if (folder / "u.genre").exists():
            g = pd.read_csv(folder / "u.genre", sep="|", names=["name", "idx"], encoding="latin-1").dropna()
            genre_names = [str(n) for n in g.sort_values("idx")["name"]]
        flags = raw[[f"g{i}" for i in range(19)]].to_numpy() == "1"
        genres = [
            [genre_names[j] for j in np.flatnonzero(row) if genre_names[j] != "unknown"] for row in flags
        ]
        release = pd.to_datetime(raw["release"], format="%d-%b-%Y", errors="coerce").dt.date
        tags: list[list[str]] = [[] for _ in range(len(raw))]
        source = str(folder / "u.item")
    else:
        if fmt == "ml-dat":
            raw = _read_delimited(
                folder / "movies.dat", "::", ["item", "title", "genres"], encoding="latin-1"
            )
        else:
            raw = _read_delimited(folder / "movies.csv", ",", ["item", "title", "genres"], header=True)
        assert isinstance(raw, pd.DataFrame)
        genres = [
            [] if not isinstance(s, str) or s == "(no genres listed)" else s.split("|") for s in raw["genres"]
        ]
        years = raw["title"].fillna("").str.extract(_YEAR)[0]
        release = pd.to_datetime(years + "-01-01", errors="coerce").dt.date
        tags = _load_tags(folder, len(raw), raw["item"]) if fmt == "ml-csv" else [[] for _ in range(len(raw))]
        source = str(folder / ("movies.dat" if fmt == "ml-dat" else "movies.csv"))
    ids, reasons = _id_reasons(raw["item"], "item_id")
    good = reasons == ""
    report.quarantined.update(reasons[~good].value_counts().to_dict())
    lake.write_quarantine(_quarantine_frame(raw, reasons, source), source, run_id)
    release = pd.Series(release, index=raw.index).where(pd.notna(release), None)
    items = pd.DataFrame(
        {
            Col.ITEM_ID: ids[good].astype("int64").to_numpy(),
            Col.TITLE: raw["title"][good].to_numpy(),
            Col.RELEASE_DATE: release[good].to_numpy(),
            Col.GENRES: [g for g, ok in zip(genres, good, strict=True) if ok],
            Col.TAGS: [t for t, ok in zip(tags, good, strict=True) if ok],
        }
    )
    lake.write_items(items)
    report.items = len(items)
    return np.sort(items[Col.ITEM_ID].to_numpy())


def _load_tags(folder: Path, n: int, item_ids: pd.Series) -> list[list[str]]:
    path = folder / "tags.csv"
    if not path.exists():
        return [[] for _ in range(n)]
    tags = pd.read_csv(path, dtype=str, keep_default_na=False)
    if not {"movieId", "tag"} <= set(tags.columns):
        return [[] for _ in range(n)]
    tags["tag"] = tags["tag"].str.strip().str.lower()
    tags = tags[tags["tag"] != ""]
    top = (
        tags.groupby(["movieId", "tag"]).size().rename("n").reset_index()
        .sort_values(["movieId", "n", "tag"], ascending=[True, False, True])
        .groupby("movieId").head(20).groupby("movieId")["tag"].apply(list)
    )  # fmt: skip
    return [list(top.get(i, [])) for i in item_ids]


def _load_users(
    folder: Path, fmt: str, lake: EventLake, report: IngestReport, run_id: str
) -> np.ndarray | None:
    """Writes the user table; returns the known user ids, or None where the format has no user file."""
    if fmt == "ml-100k":
        path = folder / "u.user"
        raw = _read_delimited(path, "|", ["user", "age", "gender", "occupation", "zip"])
    elif fmt == "ml-dat" and (folder / "users.dat").exists():
        path = folder / "users.dat"
        raw = _read_delimited(path, "::", ["user", "gender", "age", "occupation", "zip"])
    else:
        return None
    assert isinstance(raw, pd.DataFrame)
    ids, reasons = _id_reasons(raw["user"], "user_id")
    good = reasons == ""
    report.quarantined.update(reasons[~good].value_counts().to_dict())
    lake.write_quarantine(_quarantine_frame(raw, reasons, str(path)), str(path), run_id)
    age = pd.to_numeric(raw["age"], errors="coerce")
    users = pd.DataFrame(
        {
            Col.USER_ID: ids[good].astype("int64").to_numpy(),
            Col.AGE: age[good].astype("Int16").to_numpy(),
            Col.GENDER: raw["gender"][good].to_numpy(),
            Col.OCCUPATION: raw["occupation"][good].to_numpy(),
            Col.ZIP_CODE: raw["zip"][good].to_numpy(),
            Col.CITY: None,
        }
    )
    lake.write_users(users)
    report.users = len(users)
    return np.sort(users[Col.USER_ID].to_numpy())


def _rating_chunks(folder: Path, fmt: str) -> tuple[str, Iterator[pd.DataFrame]]:
    names = ["user", "item", "rating", "ts"]
    if fmt == "ml-100k":
        path = folder / "u.data"
        chunks = _read_delimited(path, "\t", names, chunksize=CHUNK_ROWS)
    elif fmt == "ml-dat":
        path = folder / "ratings.dat"
        chunks = _read_delimited(path, "::", names, chunksize=CHUNK_ROWS)
    else:
        path = folder / "ratings.csv"
        chunks = _read_delimited(path, ",", names, header=True, chunksize=CHUNK_ROWS)
    assert not isinstance(chunks, pd.DataFrame)
    return str(path), chunks


def ingest_movielens(
    folder: Path | str,
    lake: EventLake,
    settings: DataSettings | None = None,
    progress: Progress = no_progress,
) -> IngestReport:
    """Ingest a MovieLens directory into ``lake``; returns what was written and quarantined."""
    folder = Path(folder)
    if not folder.is_dir():
        raise MovieLensFormatError(f"{folder} is not a directory")
    settings = settings or DataSettings()
    fmt = detect_format(folder)
    report = IngestReport(source=str(folder), format=fmt)
    with lake.stage() as stage:
        # Profiles first: ratings of unknown items (or users, where the format has users) are quarantined.
        progress(f"reading item and user profiles ({fmt})")
        known_items = _load_items(folder, fmt, lake, report, stage.run_id)
        known_users = _load_users(folder, fmt, lake, report, stage.run_id)

        # Pass 1: parse and validate the ratings in chunks; keep the valid ones compactly.
        source, chunks = _rating_chunks(folder, fmt)
        parts = []
        for chunk in chunks:
            report.records_read += len(chunk)
            cand = empty_event_frame(len(chunk))
            cand[Col.EVENT_ID] = "rating"  # final ids are assigned when the request is simulated
            cand[Col.EVENT_TYPE] = EventType.RATING.value
            cand[Col.USER_ID] = chunk["user"].to_numpy()
            cand[Col.ITEM_ID] = chunk["item"].to_numpy()
            cand[Col.VALUE] = chunk["rating"].to_numpy()
            secs = pd.to_numeric(chunk["ts"], errors="coerce")
            cand[Col.TS] = pd.to_datetime(
                secs.where(secs % 1 == 0), unit="s", utc=True, errors="coerce"
            ).to_numpy()
            result = validate_events(
                cand, source, raw=chunk, known_users=known_users, known_items=known_items
            )
            report.quarantined.update(result.reasons)
            lake.write_quarantine(result.quarantined, source, stage.run_id)
            v = result.valid
            parts.append(
                pd.DataFrame(
                    {
                        "user": v[Col.USER_ID].to_numpy(),
                        "item": v[Col.ITEM_ID].to_numpy(),
                        "ts": v[Col.TS].cast(pa.int64()).to_numpy() // 1000,
                        "rating": v[Col.VALUE].to_numpy(),
                    }
                )
            )
            progress(f"validated {report.records_read:,} ratings ({report.quarantined_total:,} quarantined)")
        ratings = pd.concat(parts, ignore_index=True)
        # Duplicate (user, item, ts) ratings are one event: keep the last, quarantine the rest as duplicates.
        dup = ratings.duplicated(["user", "item", "ts"], keep="last")
        if dup.any():
            report.quarantined["duplicate rating"] += int(dup.sum())
            dups = ratings[dup]
            lake.write_quarantine(
                _quarantine_frame(dups, pd.Series("duplicate rating", index=dups.index), source), source,
                stage.run_id,
            )  # fmt: skip
            ratings = ratings[~dup]

        # Pass 2: simulate the request around each rating and stage the events.
        log = RatingLog.from_frame(ratings)
        tag = "ml"
        for events in expand_ratings(log, settings.impressions_per_request, settings.seed, tag):
            stage.write(events)
            progress(f"staged {stage.rows:,} events")
        report.events_written = stage.rows
        report.partitions = stage.commit()
    if known_users is None:
        # Formats without a user file: the user table lists the ids seen, with no attributes.
        users = pd.DataFrame({Col.USER_ID: np.unique(log.user)})
        for col in (Col.AGE, Col.GENDER, Col.OCCUPATION, Col.ZIP_CODE, Col.CITY):
            users[col] = None
        lake.write_users(users)
        report.users = len(users)
    progress(report.summary())
    return report
