"""MovieLens ingestion: tiny fixtures of each format made here (with bad rows), and the real ml-100k."""

from __future__ import annotations

from pathlib import Path

import pyarrow.compute as pc
import pytest
from recstack.features.keys import Col
from recstack.features.settings import DataSettings
from recstack.offline.ingest.movielens import MovieLensFormatError, ingest_movielens
from recstack.offline.lake import EventLake

SLATE = 4
EVENTS_PER_RATING_MAX = SLATE + 2  # slate impressions + click + rating


def _write_100k(folder: Path) -> None:
    folder.mkdir()
    items = [
        "1|Toy Story (1995)|01-Jan-1995||http://x|0|0|0|1|1|1|0|0|0|0|0|0|0|0|0|0|0|0|0",
        "2|GoldenEye (1995)|01-Jan-1995||http://x|0|1|1|0|0|0|0|0|0|0|0|0|0|0|0|0|1|0|0",
        "3|Four Rooms (1995)|01-Jan-1995||http://x|0|0|0|0|0|0|0|0|0|0|0|0|0|0|0|0|1|0|0",
        "4|Get Shorty (1995)|01-Jan-1995||http://x|0|1|0|0|0|1|0|0|1|0|0|0|0|0|0|0|0|0|0",
        "5|Copycat (1995)|01-Jan-1995||http://x|0|0|0|0|0|0|1|0|1|0|0|0|0|0|0|0|1|0|0",
        "6|Shanghai (1995)|01-Jan-1995||http://x|0|0|0|0|0|0|0|0|1|0|0|0|0|0|0|0|0|0|0",
        "x|Broken item|01-Jan-1995||http://x|0|0|0|0|0|0|0|0|1|0|0|0|0|0|0|0|0|0|0",
    ]
    (folder / "u.item").write_text("\n".join(items) + "\n", encoding="latin-1")
    (folder / "u.user").write_text("1|24|M|technician|85711\n2|53|F|other|94043\n3|23|M|writer|32067\n")
    ratings = [
        "1\t1\t5\t881250949", "1\t2\t3\t881250950", "2\t3\t4\t881251000", "2\t1\t2\t881252000",
        "3\t4\t5\t881253000", "3\t5\t1\t881254000",
        "1\t99\t4\t881250960",  # unknown item
        "9\t1\t4\t881250960",  # unknown user
        "2\t2\t9\t881250960",  # rating out of range
        "2\tfoo\t4\t881250960",  # invalid item
        "3\t6\t4\tsoon",  # invalid ts
    ]  # fmt: skip
    (folder / "u.data").write_text("\n".join(ratings) + "\n")


def _write_csv(folder: Path) -> None:
    folder.mkdir()
    (folder / "movies.csv").write_text(
        'movieId,title,genres\n10,"Heat (1995)",Action|Crime|Thriller\n20,"Sabrina (1995)",Comedy|Romance\n'
        '30,"Balto (1995)",Adventure|Animation\n40,"Nixon, The Movie (1995)",Drama\n50,Untitled,(no genres listed)\n'
    )
    (folder / "ratings.csv").write_text(
        "userId,movieId,rating,timestamp\n"
        "100,10,4.5,1500000000\n100,20,2.0,1500000100\n200,10,3.5,1500000200\n200,30,5.0,1500000300\n"
        "300,40,4.0,1500000400\n300,50,0.5,1500000500\n"
        "300,60,4.0,1500000600\n"  # unknown movie
        "400,10,,1500000700\n"  # missing rating
        "400,20,4.0,-5\n"  # timestamp before 1990
    )
    (folder / "tags.csv").write_text(
        "userId,movieId,tag,timestamp\n100,10,heist,1500000000\n200,10,Heist,1500000001\n"
    )


def _ingest(folder: Path, lake_dir: Path):  # type: ignore[no-untyped-def]
    lake = EventLake(lake_dir)
    return lake, ingest_movielens(folder, lake, DataSettings(impressions_per_request=SLATE, seed=7))


def test_100k_format_quarantines_bad_rows_and_writes_events(tmp_path: Path) -> None:
    _write_100k(tmp_path / "ml")
    lake, report = _ingest(tmp_path / "ml", tmp_path / "lake")
    assert report.format == "ml-100k"
    assert report.records_read == 11
    assert dict(report.quarantined) == {
        "unknown item_id": 1,
        "unknown user_id": 1,
        "rating out of range": 1,
        "invalid item_id": 2,
        "invalid ts": 1,
    }  # fmt: skip  (one invalid item_id is the broken u.item row)
    quarantine = lake.read_quarantine()
    assert len(quarantine) == report.quarantined_total
    events = lake.read_events()
    types = events[Col.EVENT_TYPE].to_pylist()
    assert types.count("rating") == 6 and types.count("click") == 6
    assert 6 <= types.count("impression") <= 6 * SLATE
    ratings = events.filter(pc.equal(events[Col.EVENT_TYPE], "rating"))
    assert sorted(ratings[Col.LABEL].to_pylist()) == [0, 0, 0, 1, 1, 1]
    assert report.users == 3 and report.items == 6
    assert lake.read_users()[Col.GENDER].tolist() == ["M", "F", "M"]


def test_csv_format_works_without_demographics_and_reads_tags(tmp_path: Path) -> None:
    _write_csv(tmp_path / "ml")
    lake, report = _ingest(tmp_path / "ml", tmp_path / "lake")
    assert report.format == "ml-csv"
    assert dict(report.quarantined) == {"unknown item_id": 1, "rating without value": 1, "ts out of range": 1}
    users = lake.read_users()
    assert sorted(users[Col.USER_ID]) == [100, 200, 300]
    assert users[Col.AGE].isna().all()
    items = lake.read_items().set_index(Col.ITEM_ID)
    assert list(items.loc[10, Col.GENRES]) == ["Action", "Crime", "Thriller"]
    assert list(items.loc[10, Col.TAGS]) == ["heist"]
    assert list(items.loc[50, Col.GENRES]) == []
    assert str(items.loc[40, Col.RELEASE_DATE]) == "1995-01-01"
    events = lake.read_events()
    assert events[Col.EVENT_TYPE].to_pylist().count("rating") == 6


def test_reingest_replaces_partitions_instead_of_appending(tmp_path: Path) -> None:
    _write_100k(tmp_path / "ml")
    lake, first = _ingest(tmp_path / "ml", tmp_path / "lake")
    before = sorted(lake.read_events()[Col.EVENT_ID].to_pylist())
    _, second = _ingest(tmp_path / "ml", tmp_path / "lake")
    after = sorted(lake.read_events()[Col.EVENT_ID].to_pylist())
    assert before == after  # same seed: identical simulated events, no duplicates
    assert first.partitions == second.partitions


def test_not_a_movielens_directory(tmp_path: Path) -> None:
    with pytest.raises(MovieLensFormatError, match="not a MovieLens directory"):
        _ingest(tmp_path, tmp_path / "lake")


@pytest.mark.integration
def test_real_ml100k(ml100k: Path, tmp_path: Path) -> None:
    lake = EventLake(tmp_path / "lake")
    report = ingest_movielens(ml100k, lake, DataSettings(impressions_per_request=5, seed=42))
    assert report.records_read == 100_000
    assert report.quarantined_total == 0
    assert (report.users, report.items) == (943, 1682)
    events = lake.read_events()
    types = events[Col.EVENT_TYPE].value_counts().to_pylist()
    counts = {d["values"]: d["counts"] for d in types}
    assert counts["rating"] == 100_000 and counts["click"] == 100_000
    assert counts["impression"] > 0.99 * 500_000
    ratings = events.filter(pc.equal(events[Col.EVENT_TYPE], "rating"))
    assert pc.sum(ratings[Col.LABEL]).as_py() == 55_375  # ratings >= 4 in ml-100k
    # negatives never show an item the user rated
    imps = events.filter(pc.equal(events[Col.EVENT_TYPE], "impression")).to_pandas()
    rated = set(zip(ratings[Col.USER_ID].to_pylist(), ratings[Col.ITEM_ID].to_pylist(), strict=True))
    without_slot = imps[~imps[Col.EVENT_ID].str.endswith(tuple(f":imp:{s}" for s in range(5)))]
    assert without_slot.empty  # every impression id carries its slot
    consumed = imps.apply(lambda r: r[Col.REQUEST_ID].split(":")[3] == str(r[Col.ITEM_ID]), axis=1)
    shown_not_consumed = imps[~consumed]
    assert not any(
        (u, i) in rated
        for u, i in zip(shown_not_consumed[Col.USER_ID], shown_not_consumed[Col.ITEM_ID], strict=True)
    )


def test_dat_format_of_ml_1m(tmp_path: Path) -> None:
    folder = tmp_path / "ml"
    folder.mkdir()
    (folder / "movies.dat").write_text(
        "1::Toy Story (1995)::Animation|Children's|Comedy\n2::Jumanji (1995)::Adventure\n3::Heat (1995)::Action\n"
    )
    (folder / "users.dat").write_text("1::F::1::10::48067\n2::M::56::16::70072\n")
    (folder / "ratings.dat").write_text(
        "1::1::5::978300760\n1::2::3::978302109\n2::3::4::978301968\n2::1::x::978301968\n"
    )
    lake, report = _ingest(folder, tmp_path / "lake")
    assert report.format == "ml-dat"
    assert dict(report.quarantined) == {"invalid value": 1}
    assert report.users == 2 and report.items == 3
    assert lake.read_events()[Col.EVENT_TYPE].to_pylist().count("rating") == 3
