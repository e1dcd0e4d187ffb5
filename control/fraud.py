"""Real-time anti-fraud: every event gets a ``FraudVerdict`` (allow / flag / block, with reasons) from
sliding-window counters per user, device and IP in Redis (the rules: ``control/fraud_rules.py``).

Use in the pipeline::

    guard = FraudGuard(client, RedisKey(prefix), settings.fraud)
    screened = guard.screen(events)           # judge, and write the quarantined ones to the audit stream
    store.apply(screened.clean)               # only clean events reach features, exposures and the lake
    ...
    if guard.is_blocked(user_id, device_id, ip):  # at request time
        ...                                   # settings.fraud.blocked_response: "fallback" or "429"

* **Event time.** Windows, blocks and their expiry run on the event's ``ts``, not the wall clock, so a
  replayed log is judged as it was live. Within a batch, events are judged in ``(ts, impressions first)``
  order; across batches, in the order given.
* **Atomic, one round trip.** A Redis script counts each event and applies every rule to it before the next
  one; ``judge_many`` sends a batch as script calls of ``SCRIPT_CHUNK`` events, pipelined.
* **Judge once.** An event_id judged before is a replay (``duplicate_event``). A consumer that retries a
  batch after a failure must keep the verdicts of the first attempt rather than judge the batch again.
* **Blocked actors** are remembered in Redis (``RedisKey.fraud_blocked``) for ``block_ttl_s``; a published
  blocklist (``publish_blocklist``: a versioned set and a ``current`` pointer) blocks its actors too.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import redis
from recstack.control.fraud_rules import (
    ACTOR_KINDS,
    COUNT_NAMES,
    JUDGE_EVENTS_LUA,
    ActorKind,
    FraudAction,
    FraudRule,
    key_templates,
    script_config,
)
from recstack.features.keys import RedisKey
from recstack.features.realtime import ts_ms
from recstack.features.schema import Event, EventType
from recstack.features.settings import FraudSettings

__all__ = [
    "ActorKind",
    "AuditRecord",
    "FraudAction",
    "FraudGuard",
    "FraudRule",
    "FraudVerdict",
    "QuarantinedEvent",
    "ScreenedEvents",
    "actor_member",
    "publish_blocklist",
]

_SCRIPT_KIND = {EventType.IMPRESSION: "i", EventType.CLICK: "c"}
SCRIPT_CHUNK = 250
"""Most events judged by one script call (Redis serves nothing else meanwhile: 10-15 ms)."""


@dataclass(frozen=True)
class FraudVerdict:
    """The judgement of one event.

    ``reasons``: the rules that fired, ``<rule>:<kind>`` for actor rules (``click_rate:user``), ``<rule>`` for
    rules of the click itself (``no_impression``), ``blocked:<kind>(<cause>)`` for an actor blocked earlier.
    ``counts``: the numbers the rules compared, aligned with ``COUNT_NAMES`` (-1: not measured).
    """

    action: FraudAction
    reasons: tuple[str, ...] = ()
    counts: tuple[int, ...] = ()

    @property
    def allowed(self) -> bool:
        return self.action == FraudAction.ALLOW

    @property
    def scores(self) -> dict[str, int]:
        """The measured window counts by name (``user.clicks_1m``, ``device.users``, ``click_delay_ms`` ...)."""
        return {name: v for name, v in zip(COUNT_NAMES, self.counts, strict=False) if v >= 0}

    def to_json(self) -> str:
        return json.dumps({"action": self.action.value, "reasons": list(self.reasons), "scores": self.scores})


ALLOW = FraudVerdict(FraudAction.ALLOW)


@dataclass(frozen=True)
class QuarantinedEvent:
    """A flagged or blocked event, kept with its verdict for audit."""

    event: Event
    verdict: FraudVerdict


@dataclass(frozen=True)
class ScreenedEvents:
    """A batch split by the guard: every input event is in exactly one of the two lists, in input order."""

    clean: list[Event]
    quarantined: list[QuarantinedEvent]
    verdicts: list[FraudVerdict] = field(repr=False)  # aligned with the input batch


@dataclass(frozen=True)
class AuditRecord:
    """One entry of the audit stream: the event, its verdict, when it was written (wall ms) and its stream id."""

    event: Event
    verdict: FraudVerdict
    at_ms: int
    entry_id: str


def actor_member(kind: ActorKind | str, actor_id: object) -> str:
    """How an actor is named in a blocklist: ``user:42``, ``device:abc``, ``ip:10.0.0.1``."""
    return f"{ActorKind(kind).value}:{actor_id}"


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def publish_blocklist(client: redis.Redis, keys: RedisKey, actors: Iterable[str], version: str) -> int:
    """Write the blocklist ``version`` (actors named by ``actor_member``) and make it the current one.

    The set is written in full before the ``current`` pointer switches to it, so readers never see a partial
    list. Older versions are left for the publisher to delete. Returns the number of actors in the set.
    """
    if not version or version == "current" or " " in version:
        raise ValueError(f"invalid blocklist version {version!r}")
    key = keys.fraud_blocklist(version)
    members = sorted(set(actors))
    for member in members:
        kind, sep, actor_id = member.partition(":")
        if kind not in {k.value for k in ACTOR_KINDS} or not sep or not actor_id:
            raise ValueError(f"blocklist member {member!r} is not <user|device|ip>:<id>")
    pipe = client.pipeline(transaction=True)
    pipe.delete(key)
    for lo in range(0, len(members), 10_000):
        pipe.sadd(key, *members[lo : lo + 10_000])
    pipe.set(keys.fraud_blocklist_current(), version)
    pipe.execute()
    return len(members)


class FraudGuard:
    """Judges events against the anti-fraud rules of ``settings``, keeping the window state in Redis.

    ``client`` may return bytes or str. Thread-safe as far as the redis client is (one pipeline per call).
    """

    def __init__(self, client: redis.Redis, keys: RedisKey, settings: FraudSettings | None = None) -> None:
        self.client = client
        self.keys = keys
        self.settings = settings or FraudSettings()
        self._script = client.register_script(JUDGE_EVENTS_LUA)
        self.blocklist_version: str | None = None
        self._blocklist_checked = -float("inf")
        self._head = self._script_head()

    def _script_head(self) -> list[str]:
        """The arguments every script call starts with: the settings and the key templates."""
        use_blocklist = self.blocklist_version is not None
        return script_config(self.settings, use_blocklist) + key_templates(self.keys, self._blocklist_key())

    # -- the published blocklist ----------------------------------------------------------------------------
    def load_blocklist(self, version: str | None = None) -> str | None:
        """Use blocklist ``version``, or the current published one when ``None``; returns the version in force
        (``None``: none published). Re-read automatically every ``blocklist_refresh_s`` when not pinned."""
        if version is None:
            current = self.client.get(self.keys.fraud_blocklist_current())
            version = None if current is None else _text(current)  # type: ignore[arg-type]
        self.blocklist_version = version
        self._blocklist_checked = time.monotonic()
        self._head = self._script_head()
        return version

    def _maybe_refresh_blocklist(self) -> None:
        if time.monotonic() - self._blocklist_checked >= self.settings.blocklist_refresh_s:
            self.load_blocklist()

    def _blocklist_key(self) -> str:
        return self.keys.fraud_blocklist(self.blocklist_version or "none")

    def in_blocklist(self, user_id: int, device_id: str | None = None, ip: str | None = None) -> bool:
        """True when the user, device or IP is in the blocklist in force."""
        self._maybe_refresh_blocklist()
        if self.blocklist_version is None:
            return False
        members = [m for m in self._members(user_id, device_id, ip) if m]
        hits = self.client.smismember(self._blocklist_key(), members)  # type: ignore[arg-type]
        return any(bool(h) for h in hits)  # type: ignore[union-attr]

    # -- blocked actors -------------------------------------------------------------------------------------
    @staticmethod
    def _members(user_id: int, device_id: str | None, ip: str | None) -> list[str]:
        return [
            actor_member(ActorKind.USER, user_id),
            actor_member(ActorKind.DEVICE, device_id) if device_id else "",
            actor_member(ActorKind.IP, ip) if ip else "",
        ]

    def block_reasons(
        self, user_id: int, device_id: str | None = None, ip: str | None = None, at_ms: int | None = None
    ) -> list[str]:
        """Why the actors of a request are blocked at ``at_ms`` (event time; default now), ``[]`` if they are
        not: ``blocked:<kind>(<cause>)`` and ``blocklist:<kind>`` reasons. One round trip."""
        self._maybe_refresh_blocklist()
        present = self._present(user_id, device_id, ip)
        pipe = self.client.pipeline(transaction=False)
        self._queue_block_reads(pipe, present)
        return self._reasons(present, pipe.execute(), at_ms)

    async def block_reasons_async(
        self, aclient: Any, user_id: int, device_id: str | None = None, ip: str | None = None,
        at_ms: int | None = None,
    ) -> list[str]:  # fmt: skip
        """``block_reasons`` over an asyncio client (``redis.asyncio.Redis``): the event loop serves other
        requests while the round trip is in flight."""
        self._maybe_refresh_blocklist()
        present = self._present(user_id, device_id, ip)
        pipe = aclient.pipeline(transaction=False)
        self._queue_block_reads(pipe, present)
        return self._reasons(present, await pipe.execute(), at_ms)

    @staticmethod
    def _present(user_id: int, device_id: str | None, ip: str | None) -> list[tuple[ActorKind, str]]:
        ids = (str(user_id), device_id, ip)
        return [(kind, i) for kind, i in zip(ACTOR_KINDS, ids, strict=True) if i]

    def _queue_block_reads(self, pipe: Any, present: list[tuple[ActorKind, str]]) -> None:
        pipe.mget([self.keys.fraud_blocked(kind.value, i) for kind, i in present])
        if self.blocklist_version is not None:
            pipe.smismember(self._blocklist_key(), [actor_member(kind, i) for kind, i in present])

    @staticmethod
    def _reasons(present: list[tuple[ActorKind, str]], results: list[Any], at_ms: int | None) -> list[str]:
        at = int(time.time() * 1000) if at_ms is None else at_ms
        reasons = []
        for (kind, _), value in zip(present, results[0], strict=True):
            if value is not None:
                until, cause = _text(value).split(" ", 1)
                if int(until) > at:
                    reasons.append(f"{FraudRule.BLOCKED.value}:{kind.value}({cause})")
        if len(results) > 1:
            reasons += [f"{FraudRule.BLOCKLIST.value}:{kind.value}"
                        for (kind, _), hit in zip(present, results[1], strict=True) if hit]  # fmt: skip
        return reasons

    def is_blocked(
        self, user_id: int, device_id: str | None = None, ip: str | None = None, at_ms: int | None = None
    ) -> bool:
        """True when the user, device or IP is blocked (remembered block or published blocklist) at ``at_ms``
        (default now). The service then answers as ``settings.blocked_response`` says."""
        return bool(self.block_reasons(user_id, device_id, ip, at_ms))

    def unblock(self, kind: ActorKind | str, actor_id: object) -> bool:
        """Forget a remembered block (an operator's override); True when there was one."""
        return bool(self.client.delete(self.keys.fraud_blocked(ActorKind(kind).value, str(actor_id))))

    # -- judging --------------------------------------------------------------------------------------------
    def judge_many(self, events: Sequence[Event]) -> list[FraudVerdict]:
        """Judge a batch (one pipelined round trip); verdicts aligned with ``events``.

        Each event is counted in its actors' windows as it is judged, so judge an event once.
        """
        if not events:
            return []
        if not self.settings.enabled:
            return [ALLOW] * len(events)
        self._maybe_refresh_blocklist()
        stamps = [ts_ms(e.ts) for e in events]
        order = sorted(range(len(events)),
                       key=lambda i: (stamps[i], events[i].event_type != EventType.IMPRESSION))  # fmt: skip
        pipe = self.client.pipeline(transaction=False)
        for lo in range(0, len(order), SCRIPT_CHUNK):
            args = list(self._head)
            for i in order[lo : lo + SCRIPT_CHUNK]:
                e = events[i]
                args += [str(stamps[i]), _SCRIPT_KIND.get(e.event_type, "o"), str(e.item_id), e.event_id,
                         e.request_id or "", str(e.user_id), e.device_id or "", e.ip or ""]  # fmt: skip
            self._script(args=args, client=pipe)
        results = [r for chunk in pipe.execute() for r in chunk]
        verdicts: list[FraudVerdict] = [ALLOW] * len(events)
        for i, raw in zip(order, results, strict=True):
            action, reasons, counts = _text(raw).split("|")
            verdicts[i] = FraudVerdict(FraudAction(action), tuple(reasons.split(";")) if reasons else (),
                                       tuple(map(int, counts.split(","))))  # fmt: skip
        return verdicts

    def judge(self, event: Event) -> FraudVerdict:
        """Judge one event (one round trip)."""
        return self.judge_many([event])[0]

    # -- quarantine -----------------------------------------------------------------------------------------
    def screen(self, events: Sequence[Event]) -> ScreenedEvents:
        """Judge ``events`` and split them into the clean ones and the quarantined ones (flagged or blocked),
        and append the quarantined ones with their verdicts to the audit stream (``RedisKey.fraud_audit``,
        trimmed to about ``audit_max_len``). Nothing is dropped: every event ends in one of the two lists."""
        verdicts = self.judge_many(events)
        clean = [e for e, v in zip(events, verdicts, strict=True) if v.allowed]
        quarantined = [QuarantinedEvent(e, v) for e, v in zip(events, verdicts, strict=True) if not v.allowed]
        if quarantined:
            now = str(int(time.time() * 1000))
            pipe = self.client.pipeline(transaction=False)
            for q in quarantined:
                fields = {"event": q.event.to_json_bytes(), "verdict": q.verdict.to_json(), "at_ms": now}
                pipe.xadd(self.keys.fraud_audit(), fields, maxlen=self.settings.audit_max_len,  # type: ignore[arg-type]
                          approximate=True)  # fmt: skip
            pipe.execute()
        return ScreenedEvents(clean, quarantined, verdicts)

    def audit_log(self, count: int = 100) -> list[AuditRecord]:
        """The newest ``count`` entries of the audit stream, oldest first."""
        entries: list[tuple[bytes | str, dict[bytes | str, bytes | str]]]
        entries = self.client.xrevrange(self.keys.fraud_audit(), count=count)  # type: ignore[assignment]
        records = []
        for entry_id, raw in reversed(entries):
            fields = {_text(k): v for k, v in raw.items()}
            verdict = json.loads(fields["verdict"])
            records.append(AuditRecord(
                Event.from_json_bytes(fields["event"]),  # type: ignore[arg-type]
                FraudVerdict(FraudAction(verdict["action"]), tuple(verdict["reasons"]),
                             tuple(verdict["scores"].get(n, -1) for n in COUNT_NAMES)),
                int(fields["at_ms"]), _text(entry_id),
            ))  # fmt: skip
        return records
