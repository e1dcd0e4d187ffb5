"""Content safety against a real Redis (no mocks): the machine review on crafted titles, the review queue and
its API, and the moderation states enforced on a real catalog through the recall merge."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import numpy as np
import pandas as pd
import pytest
import redis
from fastapi import FastAPI
from fastapi.testclient import TestClient
from recstack.control.safety import (
    ContentReviewer,
    Decision,
    ItemContent,
    ModerationStore,
    ModerationSync,
    NotQueuedError,
    apply_moderation,
    item_contents,
)
from recstack.features.keys import Col, RedisKey
from recstack.features.settings import SafetySettings
from recstack.models.catalog import APPROVED, PENDING, REJECTED, build_catalog
from recstack.online.recall import Candidates, merge
from recstack.online.review import make_review_router

pytestmark = pytest.mark.integration  # a real redis-server


def item(
    item_id: int, title: str | None, tags: tuple[str, ...] = (), genres: tuple[str, ...] = ("Drama",)
) -> ItemContent:
    return ItemContent(item_id, title, tags, genres)


@pytest.fixture(scope="module")
def reviewer() -> ContentReviewer:
    return ContentReviewer(SafetySettings())


@pytest.fixture
def store(client: redis.Redis) -> ModerationStore:
    return ModerationStore(client, RedisKey(f"test-safety-{uuid.uuid4().hex[:8]}"))  # own key space per test


@pytest.mark.parametrize(
    ("title", "reason"),
    [
        ("P0rn Star Adventures", "banned_word:porn(obfuscated)"),
        ("best p.o.r.n here", "banned_word:porn(obfuscated)"),
        ("P O R N night", "banned_word:porn(obfuscated)"),
        ("pooorn", "banned_word:porn(obfuscated)"),
        ("Just k1ll y0urself", "banned_word:kill yourself(obfuscated)"),
        ("Porn Stars", "banned_word:porn"),
        ("p\u043ern \u200bclips", "banned_word:porn(obfuscated)"),  # a Cyrillic o, a zero-width space
        ("ｐｏｒｎ", "banned_word:porn"),  # full-width letters are plain letters after NFKD
    ],
)
def test_banned_words_are_rejected_through_obfuscation(
    reviewer: ContentReviewer, title: str, reason: str
) -> None:
    verdict = reviewer.review(item(1, title))
    assert verdict.decision == Decision.REJECT and reason in verdict.reasons
    assert verdict.score == 1.0


@pytest.mark.parametrize(
    ("title", "tags", "reason"),
    [
        ("Best deals at www.cheap-stuff.com", (), "url"),
        ("Watch free at moviez.xyz", (), "url"),
        ("Call 555-123-4567 now", (), "phone"),
        ("Write to promo@deals.example", (), "email"),
        ("THE GREATEST MOVIE EVER", (), "all_caps"),
        ("Sooooo goood!!!!!!", (), "repeated_chars"),
        ("Nice film", ("drama", "DRAMA"), "tag_stuffing"),
        ("Nice film", ("visit bit.ly now",), "url"),
        ("$3x Tape", (), "suspicious_word:sex(obfuscated)"),
        ("Sex, Lies, and Videotape (1989)", (), "suspicious_word:sex"),
        ("xXx (2002)", (), "suspicious_word:xxx"),
        (None, (), "missing_title"),
    ],
)
def test_spam_and_suspicious_items_wait_for_review(
    reviewer: ContentReviewer, title: str | None, tags: tuple[str, ...], reason: str
) -> None:
    verdict = reviewer.review(item(2, title, tags))
    assert verdict.decision == Decision.QUEUE, verdict
    assert reason in verdict.reasons


@pytest.mark.parametrize(
    "title",
    ["Toy Story (1995)", "Essex Boys (2000)", "Sussex Gardens", "2001: A Space Odyssey (1968)", "Se7en (1995)",
     "M*A*S*H (1970)", "Death Race 2000 (1975)", "Wow! What a Ride", "JFK (1991)", "Malcolm X (1992)",
     "Scunthorpe United", "Pornographers Anonymous"],
)  # fmt: skip
def test_clean_titles_are_approved(reviewer: ContentReviewer, title: str) -> None:
    verdict = reviewer.review(item(3, title, ("classic", "comedy")))
    assert verdict.decision == Decision.APPROVE, verdict
    assert verdict.score < SafetySettings().queue_score


def test_hard_rules_are_configurable() -> None:
    lenient = ContentReviewer(SafetySettings(reject_rules=[]))
    assert lenient.review(item(1, "p0rn")).decision == Decision.QUEUE
    strict = ContentReviewer(SafetySettings(reject_rules=["banned_word", "url"]))
    assert strict.review(item(1, "see www.example.com")).decision == Decision.REJECT
    assert ContentReviewer(SafetySettings(enabled=False)).review(item(1, "p0rn")).decision == Decision.APPROVE
    missing_genres = ContentReviewer().review(item(1, "Fine Title", genres=()))
    assert missing_genres.decision == Decision.APPROVE and missing_genres.reasons == ("missing_genres",)


def test_item_contents_read_the_items_table() -> None:
    frame = pd.DataFrame({Col.ITEM_ID: [1, 2], Col.TITLE: ["A Film", None], Col.GENRES: [["Drama"], None],
                          Col.TAGS: [np.array(["x", "y"]), None]})  # fmt: skip
    assert item_contents(frame) == [
        ItemContent(1, "A Film", ("x", "y"), ("Drama",)),
        ItemContent(2, None, (), ()),
    ]


def test_queue_is_ordered_by_risk_and_states_are_recorded(
    reviewer: ContentReviewer, store: ModerationStore
) -> None:
    verdicts = reviewer.review_many([
        item(10, "Toy Story (1995)"),
        item(11, "Call 555-123-4567 now"),  # phone: 0.5
        item(12, "FREE MONEY AT WWW.SCAM.COM"),  # url + all caps + suspicious: 1.0
        item(13, "p0rn"),  # rejected, never queued
        item(14, "Sooooo goood!!!!!!"),  # repeated chars: 0.3
    ])  # fmt: skip
    counts = store.submit(verdicts)
    assert (counts["approve"], counts["queue"], counts["reject"], counts["changed"]) == (1, 3, 1, 5)
    queue = store.queue()
    assert [q.item_id for q in queue] == [12, 11, 14]
    assert (
        queue[0].score == 1.0 and "url" in queue[0].reasons and queue[0].title == "FREE MONEY AT WWW.SCAM.COM"
    )
    assert store.queue(limit=1)[0].item_id == 12 and store.queue_size() == 3
    states = store.states(np.array([10, 11, 12, 13, 14, 99]))
    assert states.tolist() == [APPROVED, PENDING, PENDING, REJECTED, PENDING, APPROVED]  # 99: never reviewed
    assert store.states(np.array([99]), default=PENDING).tolist() == [PENDING]
    version = store.version()
    assert version == 1
    assert store.submit(verdicts)["changed"] == 0 and store.version() == version  # nothing new: no bump
    assert [e.item_id for e in store.audit_log()] == [10, 11, 12, 13, 14]


def test_human_decisions_are_atomic_audited_and_stick(
    reviewer: ContentReviewer, store: ModerationStore
) -> None:
    store.submit(reviewer.review_many([item(20, "Call 555-123-4567 now"), item(21, "Toy Story (1995)")]))
    entry = store.decide(20, "approve", "ana", "a phone-in radio film")
    assert (entry.state, entry.reviewer, entry.note) == (APPROVED, "ana", "a phone-in radio film")
    assert "phone" in entry.reasons  # the machine's findings travel with the human decision
    with pytest.raises(NotQueuedError, match="not awaiting review"):
        store.decide(20, "reject", "bob")  # decided already: the second reviewer is refused
    with pytest.raises(NotQueuedError, match="unknown"):
        store.decide(999, "reject", "bob")
    with pytest.raises(ValueError, match="approve or reject"):
        store.decide(21, "queue", "bob")
    # a machine re-review of the same content leaves the human decision alone, unless asked to re-review
    again = reviewer.review_many([item(20, "Call 555-123-4567 now")])
    assert store.submit(again)["skipped_human"] == 1 and store.state(20) == APPROVED
    assert store.submit(again, rereview=True)["queue"] == 1 and store.state(20) == PENDING
    assert [(e.reviewer, e.decision) for e in store.audit_log(item_id=20)] == [
        ("machine", "queue"), ("ana", "approve"), ("machine", "queue")]  # fmt: skip


@pytest.fixture
def api(store: ModerationStore) -> Iterator[TestClient]:
    app = FastAPI()

    def get_store() -> ModerationStore:
        return store

    app.include_router(make_review_router(get_store))
    with TestClient(app) as c:
        yield c


def test_review_api(reviewer: ContentReviewer, store: ModerationStore, api: TestClient) -> None:
    store.submit(reviewer.review_many([item(30, "Call 555-123-4567 now"), item(31, "www.spam.com FREE MONEY"),
                                       item(32, "Toy Story (1995)")]))  # fmt: skip
    got = api.get("/review/queue", params={"limit": 10})
    assert got.status_code == 200
    body = got.json()
    assert body["total"] == 2 and [i["item_id"] for i in body["items"]] == [31, 30]
    assert "url" in body["items"][0]["reasons"] and body["items"][0]["score"] == 1.0

    ok = api.post("/review/31", json={"decision": "reject", "reviewer": "ana", "note": "spam"})
    assert ok.status_code == 200 and ok.json()["state"] == "rejected"
    assert store.state(31) == REJECTED
    assert (
        api.post("/review/30", json={"decision": "approve", "reviewer": "bob"}).json()["state"] == "approved"
    )
    assert api.get("/review/queue").json() == {"total": 0, "items": []}

    assert (
        api.post("/review/31", json={"decision": "approve", "reviewer": "bob"}).status_code == 404
    )  # decided
    assert (
        api.post("/review/32", json={"decision": "approve", "reviewer": "bob"}).status_code == 404
    )  # approved
    assert (
        api.post("/review/777", json={"decision": "approve", "reviewer": "bob"}).status_code == 404
    )  # unknown
    assert api.post("/review/30", json={"decision": "maybe", "reviewer": "bob"}).status_code == 422
    assert api.post("/review/30", json={"decision": "approve", "reviewer": ""}).status_code == 422
    assert api.get("/review/queue", params={"limit": 0}).status_code == 422

    audit = api.get("/review/audit", params={"item_id": 31}).json()
    assert [(a["reviewer"], a["state"], a["note"]) for a in audit] == [("machine", "pending", None),
                                                                       ("ana", "rejected", "spam")]  # fmt: skip
    assert audit[1]["score"] == 1.0 and "url" in audit[1]["reasons"]


def test_only_approved_items_are_served(
    reviewer: ContentReviewer, store: ModerationStore, api: TestClient
) -> None:
    titles = {40: "Toy Story (1995)", 41: "p0rn night", 42: "Call 555-123-4567 now", 43: "Heat (1995)",
              44: "FREE MONEY AT WWW.SCAM.COM", 45: "Fargo (1996)"}  # fmt: skip
    items = pd.DataFrame({Col.ITEM_ID: list(titles), Col.TITLE: list(titles.values()),
                          Col.GENRES: [["Drama"]] * len(titles), Col.TAGS: [None] * len(titles)})  # fmt: skip
    user_item = pd.DataFrame({Col.USER_ID: [1] * len(titles), Col.ITEM_ID: list(titles),
                              "decayed_weight": [6.0, 5.0, 4.0, 3.0, 2.0, 1.0],
                              "first_ts": pd.Timestamp("2026-03-01", tz="UTC")})  # fmt: skip
    catalog = build_catalog(items, None, user_item, None)
    assert catalog.trending_rows().tolist() == [0, 1, 2, 3, 4, 5]  # all approved before the review

    store.submit(reviewer.review_many(item_contents(items)))
    sync = ModerationSync(store, interval_s=0)
    assert sync.refresh(catalog)
    everything = Candidates(np.array(list(titles), np.int64), np.ones(len(titles), np.float32))

    def served() -> list[int]:
        merged = merge([everything], [100], catalog.rows_of, np.empty(0, np.int64), catalog.state)
        return sorted(merged.items.tolist())

    assert served() == [40, 43, 45]  # rejected 41 and pending 42, 44 never appear
    assert catalog.item_ids[catalog.trending_rows()].tolist() == [40, 43, 45]
    assert catalog.item_ids[catalog.by_genre(0)].tolist() == [40, 43, 45]
    assert not sync.refresh(catalog)  # same version: nothing to do

    # a reviewer approves 42: the next refresh serves it; rejecting 44 keeps it out for good
    assert api.post("/review/42", json={"decision": "approve", "reviewer": "ana"}).status_code == 200
    assert api.post("/review/44", json={"decision": "reject", "reviewer": "ana"}).status_code == 200
    assert sync.refresh(catalog)
    assert served() == [40, 42, 43, 45]
    assert catalog.item_ids[catalog.trending_rows()].tolist() == [40, 42, 43, 45]

    # a new release (a fresh catalog, all approved by default) gets the states on its first refresh
    fresh = build_catalog(items, None, user_item, None)
    assert sync.refresh(fresh) and fresh.state.tolist() == catalog.state.tolist()
    assert apply_moderation(fresh, store) == 0
