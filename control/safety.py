"""Content safety: a high-recall machine review of items, a human review queue, and the moderation states
serving enforces (only approved items are ever served).

Use::

    reviewer = ContentReviewer(settings.safety)
    store = ModerationStore(client, RedisKey(prefix), settings.safety)
    store.submit(reviewer.review_many(item_contents(items_frame)))  # approve / queue / reject, audited
    store.queue(limit=50)                       # what reviewers see, riskiest first (``online/review.py``)
    store.decide(42, "approve", "ana", "a film title")             # a human decision, audited
    apply_moderation(catalog, store)            # serving: the catalog's states from Redis
    sync = ModerationSync(store); sync.refresh(catalog)   # ... and again whenever the version moves

**Machine review.** Each fired rule adds its weight to the item's risk score (at most 1). A rule listed in
``safety.reject_rules`` rejects outright (default: ``banned_word``); otherwise a score from
``safety.queue_score`` (0.25) waits for review (state pending); below it the item is approved.

===================  ======  =================================================================================
rule                 weight  fires when the title or a tag ...
===================  ======  =================================================================================
``banned_word``      1.0     holds a ``safety.banned_words`` word / phrase (hard rule by default)
``suspicious_word``  0.5     holds a ``safety.suspicious_words`` word / phrase
``url``              0.6     holds a URL, ``www.``, a bare domain (``name.com``) or ``name [dot] com``
``email``            0.6     holds an e-mail address
``phone``            0.5     holds 9-15 digits in a run of digits, spaces, dots, dashes, parentheses
``repeated_chars``   0.3     repeats a character 5+ times (``!!!!!``, ``sooooo``)
``all_caps``         0.3     is 2+ words and 8+ letters, 90 % of them capitals
``tag_stuffing``     0.3     (tags) number more than ``safety.max_tags`` or repeat one another
``missing_title``    0.5     (the title) is missing or blank
``missing_genres``   0.1     (genres) are missing: alone, below the queue score
===================  ======  =================================================================================

Words match whole words only (``sex`` is not found in ``Sussex``), after normalisation that undoes the usual
obfuscations: accents and invisible characters dropped, Cyrillic / Greek look-alike letters and leetspeak
mapped (``p0rn``, ``$3x``, ``k1ll``), separators between letters skipped (``p.o.r.n``, ``p o r n``,
``p-orn``) and letters stretched (``pooorn``). A match found only after normalisation is reported as
``<rule>:<word>(obfuscated)``. On the 1,682 MovieLens-100K titles the defaults reject none and queue 7
(Casino, Naked, Sex, Lies, and Videotape ...): a reviewer approves them once.

**Redis** (``RedisKey.moderation_*``): a hash item id → state code (``models/catalog.py`` APPROVED / PENDING /
REJECTED), a version counter bumped whenever a state changes (workers poll it), the queue (sorted set by
risk) with each queued item's findings, the human decisions (a machine re-review leaves those items alone
unless asked to), and an audit stream of every decision.
"""

from __future__ import annotations

import json
import logging
import re
import time
import unicodedata
import weakref
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import numpy as np
import pandas as pd
import redis
from recstack.features.keys import Col, RedisKey
from recstack.features.settings import SafetySettings
from recstack.models.catalog import APPROVED, PENDING, REJECTED, Catalog

__all__ = [
    "STATE_NAMES",
    "AuditEntry",
    "ContentReviewer",
    "Decision",
    "ItemContent",
    "ModerationError",
    "ModerationStore",
    "ModerationSync",
    "ModerationVerdict",
    "NotQueuedError",
    "QueuedItem",
    "SafetyRule",
    "apply_moderation",
    "item_contents",
]

log = logging.getLogger(__name__)

STATE_NAMES: dict[int, str] = {APPROVED: "approved", PENDING: "pending", REJECTED: "rejected"}
"""Moderation state codes (``Catalog.state``) by name."""
STATE_CODES: dict[str, int] = {name: code for code, name in STATE_NAMES.items()}
MACHINE = "machine"
"""The reviewer name of machine decisions in the audit stream."""
_CHUNK = 10_000


class SafetyRule(StrEnum):
    """Names of the machine-review rules (the first part of a verdict's reasons)."""

    BANNED_WORD = "banned_word"
    SUSPICIOUS_WORD = "suspicious_word"
    URL = "url"
    EMAIL = "email"
    PHONE = "phone"
    REPEATED_CHARS = "repeated_chars"
    ALL_CAPS = "all_caps"
    TAG_STUFFING = "tag_stuffing"
    MISSING_TITLE = "missing_title"
    MISSING_GENRES = "missing_genres"


RULE_WEIGHTS: dict[SafetyRule, float] = {
    SafetyRule.BANNED_WORD: 1.0, SafetyRule.SUSPICIOUS_WORD: 0.5, SafetyRule.URL: 0.6, SafetyRule.EMAIL: 0.6,
    SafetyRule.PHONE: 0.5, SafetyRule.REPEATED_CHARS: 0.3, SafetyRule.ALL_CAPS: 0.3,
    SafetyRule.TAG_STUFFING: 0.3, SafetyRule.MISSING_TITLE: 0.5, SafetyRule.MISSING_GENRES: 0.1,
}  # fmt: skip
"""Risk added by each rule (once per item, however often it fires)."""


class Decision(StrEnum):
    """What the machine review does with an item."""

    APPROVE = "approve"
    QUEUE = "queue"
    REJECT = "reject"


_DECISION_STATE = {Decision.APPROVE: APPROVED, Decision.QUEUE: PENDING, Decision.REJECT: REJECTED}


class ModerationError(Exception):
    """A moderation request that cannot be carried out."""


class NotQueuedError(ModerationError):
    """A human decision for an item that is not awaiting review (unknown, or decided already)."""


@dataclass(frozen=True)
class ItemContent:
    """What the review reads of an item (the lake's ``items`` table)."""

    item_id: int
    title: str | None
    tags: tuple[str, ...] = ()
    genres: tuple[str, ...] = ()


@dataclass(frozen=True)
class ModerationVerdict:
    """The machine review of one item: ``score`` in [0, 1], ``reasons`` ``<rule>[:<detail>]``."""

    item_id: int
    decision: Decision
    score: float
    reasons: tuple[str, ...]
    title: str | None = None

    @property
    def state(self) -> int:
        return _DECISION_STATE[self.decision]


@dataclass(frozen=True)
class QueuedItem:
    """An item awaiting review, with the machine's findings."""

    item_id: int
    score: float
    reasons: tuple[str, ...]
    title: str | None
    queued_at_ms: int


@dataclass(frozen=True)
class AuditEntry:
    """One moderation decision: ``state`` is the code it set, ``reviewer`` ``machine`` or a person."""

    entry_id: str
    item_id: int
    decision: str
    state: int
    reviewer: str
    note: str | None
    score: float | None
    reasons: tuple[str, ...]
    at_ms: int


def item_contents(items: pd.DataFrame) -> list[ItemContent]:
    """``ItemContent`` of each row of an items frame (``ITEM_SCHEMA`` columns; missing columns are empty)."""

    def texts(value: Any) -> tuple[str, ...]:
        return tuple(str(v) for v in value) if isinstance(value, list | tuple | np.ndarray) else ()

    n = len(items)
    titles = items[Col.TITLE].tolist() if Col.TITLE in items else [None] * n
    tags = items[Col.TAGS].tolist() if Col.TAGS in items else [None] * n
    genres = items[Col.GENRES].tolist() if Col.GENRES in items else [None] * n
    return [
        ItemContent(int(i), t if isinstance(t, str) else None, texts(tg), texts(g))
        for i, t, tg, g in zip(items[Col.ITEM_ID].tolist(), titles, tags, genres, strict=True)
    ]


# -- the machine review -------------------------------------------------------------------------------------
_LEET_DIGITS = str.maketrans({"0": "o", "1": "i", "3": "e", "4": "a", "5": "s", "7": "t", "8": "b", "9": "g"})
_LEET_DIGITS_L = str.maketrans({"1": "l"})  # k1ll: the other reading of 1
_LEET_SYMBOLS = {"@": "a", "$": "s", "!": "i", "|": "l", "+": "t", "€": "e"}
_HOMOGLYPHS = str.maketrans("аеорсухіѕјοαικντ", "aeopcyxisjoaikvt")  # Cyrillic / Greek look-alikes
_SYMBOL = re.compile(r"[@$!|+€](?=[^\W_])")  # a symbol read as a letter only inside a word: not "Wow!"
_SEP = r"[\W_]*"  # what may stand between the letters of an obfuscated word
_URL = re.compile(
    r"(?:https?://|www\.)\S+"
    r"|\b[a-z0-9-]{2,}\.(?:com|net|org|info|biz|ru|cn|xyz|top|io|ly|me|co|tk|click|link|site|online|shop)\b"
    r"|\b[a-z0-9-]{2,}\s*[\[(]\s*dot\s*[\])]\s*[a-z]{2,4}\b",
    re.IGNORECASE,
)
_EMAIL = re.compile(r"[\w.+-]+@[\w-]+\.[\w.-]+")
_PHONE = re.compile(r"(?<!\d)\+?\d(?:[\s().-]*\d){8,14}(?!\d)")
_REPEATED = re.compile(r"([^\s\d])\1{4,}")


def _plain(text: str) -> str:
    """Lower case, accents and invisible characters (zero-width spaces, ...) dropped."""
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(
        c for c in decomposed if not unicodedata.combining(c) and unicodedata.category(c) != "Cf"
    ).casefold()


def _word_pattern(words: Iterable[str], obfuscated: bool) -> re.Pattern[str] | None:
    """One alternation of ``words`` (group ``w<i>`` per word) on whole words; ``obfuscated``: letters may be
    stretched and separated."""
    parts = []
    for i, word in enumerate(words):
        letters = [w for w in _plain(word).split() if w]
        if not letters:
            continue
        if obfuscated:
            body = r"[\W_]+".join(_SEP.join(f"{re.escape(c)}+" for c in w) for w in letters)
        else:
            body = r"\s+".join(re.escape(w) for w in letters)
        parts.append(f"(?P<w{i}>(?<![a-z0-9]){body}(?![a-z0-9]))")
    return re.compile("|".join(parts)) if parts else None


def _word_index(match: re.Match[str]) -> int:
    """The index in its word list of the word a ``_word_pattern`` match found (group ``w<i>``)."""
    return int((match.lastgroup or "w0")[1:])


class ContentReviewer:
    """The machine review: rules of ``settings`` (see the module docstring) applied to an item's metadata."""

    def __init__(self, settings: SafetySettings | None = None) -> None:
        self.settings = settings or SafetySettings()
        self.reject_rules = {SafetyRule(r) for r in self.settings.reject_rules}
        self._lists = []
        for rule, words in ((SafetyRule.BANNED_WORD, self.settings.banned_words),
                            (SafetyRule.SUSPICIOUS_WORD, self.settings.suspicious_words)):  # fmt: skip
            self._lists.append((rule, list(words), _word_pattern(words, False), _word_pattern(words, True)))

    def _words(self, text: str) -> list[str]:
        """Reasons for the banned / suspicious words in ``text``."""
        plain = _plain(text)
        symbols = _SYMBOL.sub(lambda m: _LEET_SYMBOLS[m.group()], plain.translate(_HOMOGLYPHS))
        variants = {symbols.translate(_LEET_DIGITS)}
        if "1" in symbols:
            variants.add(symbols.translate(_LEET_DIGITS_L).translate(_LEET_DIGITS))
        reasons = []
        for rule, words, exact, loose in self._lists:
            if exact is None or loose is None:
                continue
            found = {_word_index(m) for m in exact.finditer(plain)}
            hidden = {_word_index(m) for v in variants for m in loose.finditer(v)} - found
            reasons += [f"{rule.value}:{words[i]}" for i in sorted(found)]
            reasons += [f"{rule.value}:{words[i]}(obfuscated)" for i in sorted(hidden)]
        return reasons

    @staticmethod
    def _spam(text: str) -> list[str]:
        """Reasons for the spam patterns in one title or tag."""
        reasons = []
        if _URL.search(text):
            reasons.append(SafetyRule.URL.value)
        if _EMAIL.search(text):
            reasons.append(SafetyRule.EMAIL.value)
        if _PHONE.search(text):
            reasons.append(SafetyRule.PHONE.value)
        if _REPEATED.search(text):
            reasons.append(SafetyRule.REPEATED_CHARS.value)
        letters = [c for c in text if c.isalpha()]
        if (
            len(letters) >= 8
            and len(text.split()) >= 2
            and sum(c.isupper() for c in letters) >= 0.9 * len(letters)
        ):
            reasons.append(SafetyRule.ALL_CAPS.value)
        return reasons

    def review(self, item: ItemContent) -> ModerationVerdict:
        """Judge one item."""
        if not self.settings.enabled:
            return ModerationVerdict(item.item_id, Decision.APPROVE, 0.0, (), item.title)
        reasons: list[str] = []
        title = (item.title or "").strip()
        if not title:
            reasons.append(SafetyRule.MISSING_TITLE.value)
        if not item.genres:
            reasons.append(SafetyRule.MISSING_GENRES.value)
        folded = [t.strip().casefold() for t in item.tags]
        if len(item.tags) > self.settings.max_tags or len(set(folded)) < len(folded):
            reasons.append(SafetyRule.TAG_STUFFING.value)
        for text in (title, *item.tags):
            if text:
                reasons += self._words(text) + self._spam(text)
        reasons = list(dict.fromkeys(reasons))  # each reason once, in order found
        rules = {SafetyRule(r.split(":", 1)[0]) for r in reasons}
        score = min(1.0, sum(RULE_WEIGHTS[r] for r in rules))
        if rules & self.reject_rules:
            decision = Decision.REJECT
        elif score >= self.settings.queue_score:
            decision = Decision.QUEUE
        else:
            decision = Decision.APPROVE
        return ModerationVerdict(item.item_id, decision, round(score, 4), tuple(reasons), item.title)

    def review_many(self, items: Iterable[ItemContent]) -> list[ModerationVerdict]:
        return [self.review(item) for item in items]


# -- the moderation store -----------------------------------------------------------------------------------
# KEYS: queue, states, findings, human, version, audit. ARGV: item id, state code, human decision JSON,
# audit entry JSON, audit max length. Returns false when the item is not queued, else {audit id, version,
# the machine's findings}.
_DECIDE_LUA = """
if not redis.call('ZSCORE', KEYS[1], ARGV[1]) then return false end
local findings = redis.call('HGET', KEYS[3], ARGV[1]) or ''
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[3], ARGV[1])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
redis.call('HSET', KEYS[4], ARGV[1], ARGV[3])
local version = redis.call('INCR', KEYS[5])
local id = redis.call('XADD', KEYS[6], 'MAXLEN', '~', ARGV[5], '*', 'entry', ARGV[4], 'findings', findings)
return {id, version, findings}
"""


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _now_ms() -> int:
    return int(time.time() * 1000)


class ModerationStore:
    """Moderation states, the review queue and the audit stream in Redis (keys: ``RedisKey.moderation_*``).

    ``client`` may return bytes or str. Every write that changes a state bumps the version.
    """

    def __init__(self, client: redis.Redis, keys: RedisKey, settings: SafetySettings | None = None) -> None:
        self.client = client
        self.keys = keys
        self.settings = settings or SafetySettings()
        self._decide = client.register_script(_DECIDE_LUA)

    @property
    def unreviewed_state(self) -> int:
        """The state of an item the review never saw (``safety.unreviewed``)."""
        return STATE_CODES[self.settings.unreviewed]

    def submit(self, verdicts: Sequence[ModerationVerdict], rereview: bool = False) -> dict[str, int]:
        """Record machine verdicts: set each item's state, queue or unqueue it, audit it. Items a person has
        decided are left alone unless ``rereview`` (their content changed). Verdicts that change nothing are
        not written again. Returns counts by decision, plus ``skipped_human`` and ``changed`` (states)."""
        counts = {d.value: 0 for d in Decision} | {"skipped_human": 0, "changed": 0}
        for lo in range(0, len(verdicts), _CHUNK):
            chunk = verdicts[lo : lo + _CHUNK]
            while True:  # optimistic: a human decision landing meanwhile makes the chunk start over
                try:
                    chunk_counts = self._submit_chunk(chunk, rereview)
                    break
                except redis.WatchError:
                    continue
            for name, n in chunk_counts.items():
                counts[name] += n
        return counts

    def _submit_chunk(self, chunk: Sequence[ModerationVerdict], rereview: bool) -> dict[str, int]:
        counts = {d.value: 0 for d in Decision} | {"skipped_human": 0, "changed": 0}
        ids = [str(v.item_id) for v in chunk]
        k = self.keys
        with self.client.pipeline(transaction=True) as pipe:
            pipe.watch(k.moderation_human(), k.moderation_queue())
            states = pipe.hmget(k.moderation_states(), ids)
            human = pipe.hmget(k.moderation_human(), ids)
            queued = pipe.zmscore(k.moderation_queue(), ids)  # type: ignore[arg-type]
            pipe.multi()
            for v, item, state, decided, score in zip(chunk, ids, states, human, queued, strict=True):  # type: ignore[arg-type]
                if decided is not None and not rereview:
                    counts["skipped_human"] += 1
                    continue
                counts[v.decision.value] += 1
                same_queue = (score is not None) == (v.decision == Decision.QUEUE)
                if state is not None and int(state) == v.state and same_queue and not rereview:
                    continue
                counts["changed"] += int(state is None or int(state) != v.state)
                pipe.hset(k.moderation_states(), item, str(v.state))
                if v.decision == Decision.QUEUE:
                    findings = {
                        "score": v.score,
                        "reasons": list(v.reasons),
                        "title": v.title,
                        "at_ms": _now_ms(),
                    }
                    pipe.zadd(k.moderation_queue(), {item: v.score})
                    pipe.hset(k.moderation_findings(), item, json.dumps(findings))
                else:
                    pipe.zrem(k.moderation_queue(), item)
                    pipe.hdel(k.moderation_findings(), item)
                if rereview:
                    pipe.hdel(k.moderation_human(), item)
                entry = {"item_id": v.item_id, "decision": v.decision.value, "state": v.state, "reviewer": MACHINE,
                         "note": None, "score": v.score, "reasons": list(v.reasons), "at_ms": _now_ms()}  # fmt: skip
                pipe.xadd(k.moderation_audit(), {"entry": json.dumps(entry), "findings": ""},
                          maxlen=self.settings.audit_max_len, approximate=True)  # fmt: skip
            if counts["changed"]:
                pipe.incr(k.moderation_version())
            pipe.execute()
        return counts

    def queue(self, limit: int = 50, offset: int = 0) -> list[QueuedItem]:
        """Items awaiting review, riskiest first (ties: higher item id first)."""
        raw = self.client.zrevrange(self.keys.moderation_queue(), offset, offset + limit - 1, withscores=True)
        pairs: list[tuple[bytes | str, float]] = raw  # type: ignore[assignment]
        if not pairs:
            return []
        found = self.client.hmget(self.keys.moderation_findings(), [_text(m) for m, _ in pairs])
        out = []
        for (member, score), blob in zip(pairs, found, strict=True):  # type: ignore[arg-type]
            f = json.loads(blob) if blob else {}
            out.append(QueuedItem(int(_text(member)), float(score), tuple(f.get("reasons", ())), f.get("title"),
                                  int(f.get("at_ms", 0))))  # fmt: skip
        return out

    def queue_size(self) -> int:
        return int(self.client.zcard(self.keys.moderation_queue()))  # type: ignore[arg-type]

    def decide(self, item_id: int, decision: str, reviewer: str, note: str | None = None) -> AuditEntry:
        """A person's decision on a queued item (``approve`` / ``reject``), atomic: the item leaves the queue,
        takes the state, and the decision is audited. Raises ``NotQueuedError`` when the item is not queued
        (two reviewers cannot both decide it) and ``ValueError`` for another decision."""
        if decision not in (Decision.APPROVE, Decision.REJECT):
            raise ValueError(f"decision must be approve or reject, not {decision!r}")
        state = _DECISION_STATE[Decision(decision)]
        at = _now_ms()
        human = {"decision": decision, "reviewer": reviewer, "note": note, "at_ms": at}
        entry = {"item_id": item_id, "decision": decision, "state": state, "reviewer": reviewer, "note": note,
                 "score": None, "reasons": [], "at_ms": at}  # fmt: skip
        keys = [self.keys.moderation_queue(), self.keys.moderation_states(), self.keys.moderation_findings(),
                self.keys.moderation_human(), self.keys.moderation_version(), self.keys.moderation_audit()]  # fmt: skip
        args = [
            str(item_id),
            str(state),
            json.dumps(human),
            json.dumps(entry),
            str(self.settings.audit_max_len),
        ]
        result = self._decide(keys=keys, args=args)
        if not result:
            current = self.state(item_id)
            where = (
                "unknown to moderation"
                if current is None
                else f"not awaiting review ({STATE_NAMES[current]})"
            )
            raise NotQueuedError(f"item {item_id} is {where}")
        entry_id, _, findings = result  # type: ignore[misc]
        return self._entry(_text(entry_id), json.dumps(entry), findings)

    def state(self, item_id: int) -> int | None:
        """The recorded state of one item (``None``: never reviewed)."""
        value = self.client.hget(self.keys.moderation_states(), str(item_id))
        return None if value is None else int(value)  # type: ignore[arg-type]

    def states(self, item_ids: np.ndarray, default: int | None = None) -> np.ndarray:
        """(n,) int8 state codes of ``item_ids``; items never reviewed get ``default`` (``safety.unreviewed``
        when ``None``). One HMGET per 10 000 ids."""
        fill = self.unreviewed_state if default is None else default
        ids = np.asarray(item_ids, np.int64)
        out = np.full(len(ids), fill, np.int8)
        for lo in range(0, len(ids), _CHUNK):
            values = self.client.hmget(self.keys.moderation_states(), [str(i) for i in ids[lo : lo + _CHUNK]])
            for j, v in enumerate(values):  # type: ignore[arg-type]
                if v is not None:
                    out[lo + j] = int(v)
        return out

    def version(self) -> int:
        """The moderation version (0: nothing recorded yet)."""
        value = self.client.get(self.keys.moderation_version())
        return 0 if value is None else int(value)  # type: ignore[arg-type]

    @staticmethod
    def _entry(entry_id: str, blob: bytes | str, findings: bytes | str) -> AuditEntry:
        e = json.loads(blob)
        f = json.loads(findings) if findings else {}
        score = e["score"] if e["score"] is not None else f.get("score")
        reasons = e["reasons"] or f.get("reasons", [])
        return AuditEntry(entry_id, int(e["item_id"]), e["decision"], int(e["state"]), e["reviewer"], e["note"],
                          score, tuple(reasons), int(e["at_ms"]))  # fmt: skip

    def audit_log(self, count: int = 100, item_id: int | None = None) -> list[AuditEntry]:
        """The newest ``count`` decisions (of ``item_id`` only, if given, among the newest ``count * 10``),
        oldest first. A human decision carries the machine's score and reasons from the queue."""
        scan = count if item_id is None else count * 10
        raw: list[tuple[bytes | str, dict[bytes | str, bytes | str]]]
        raw = self.client.xrevrange(self.keys.moderation_audit(), count=scan)  # type: ignore[assignment]
        entries = []
        for entry_id, fields in reversed(raw):
            f = {_text(k): v for k, v in fields.items()}
            entries.append(self._entry(_text(entry_id), f["entry"], f.get("findings", "")))
        if item_id is not None:
            entries = [e for e in entries if e.item_id == item_id]
        return entries[-count:]


# -- serving --------------------------------------------------------------------------------------------------
_STATE_INDEXES = ("genre", "keyword", "trending", "fresh")
"""``Catalog`` derived indexes that hold approved rows only: rebuilt after the states change."""


def apply_moderation(catalog: Catalog, store: ModerationStore, rebuild: bool = True) -> int:
    """Set ``catalog.state`` to the store's states (in place: a request reads each item's old or new state)
    and drop the catalog's approved-only indexes, rebuilt now when ``rebuild`` (not on a request). The recall
    merge reads ``catalog.state``, so from here on only approved items are served. Returns the rows changed."""
    fresh = store.states(catalog.item_ids)
    changed = int(np.count_nonzero(catalog.state != fresh))
    if changed:
        catalog.state[:] = fresh
        for name in _STATE_INDEXES:
            catalog._derived.pop(name, None)
        if rebuild:
            catalog.warm()
    return changed


class ModerationSync:
    """Keeps a serving catalog's states equal to the store's: ``refresh`` re-applies them when the moderation
    version moved or the catalog is another one (a new release), at most every ``interval_s``. Call it from
    the worker's background loop; a Redis failure keeps the states last applied."""

    def __init__(self, store: ModerationStore, interval_s: float | None = None) -> None:
        self.store = store
        self.interval_s = store.settings.refresh_s if interval_s is None else interval_s
        self.version = -1
        self._catalog: weakref.ref[Catalog] | None = None
        self._next = 0.0

    def refresh(self, catalog: Catalog, force: bool = False) -> bool:
        """Re-apply the states to ``catalog`` if needed; True when they were applied."""
        now = time.monotonic()
        same = self._catalog is not None and self._catalog() is catalog
        if same and not force and now < self._next:
            return False
        self._next = now + self.interval_s
        try:
            version = self.store.version()
            if same and version == self.version and not force:
                return False
            changed = apply_moderation(catalog, self.store)
        except (redis.RedisError, OSError) as exc:
            log.warning("moderation states not refreshed (%s): serving the states last applied", exc)
            return False
        self.version, self._catalog = version, weakref.ref(catalog)
        if changed:
            log.info("moderation version %d applied: %d items changed state", version, changed)
        return True
