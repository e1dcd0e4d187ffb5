"""Event bus on Redis Streams with consumer groups (the single-machine default)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import redis
from recstack.features.bus import BusMessage
from recstack.features.keys import RedisKey
from recstack.features.settings import BusSettings


class RedisStreamsBus:
    """One stream per topic (``RedisKey.stream``); approximate trimming keeps ``max_len`` entries."""

    def __init__(
        self, url: str, settings: BusSettings, key_prefix: str = "recstack", max_len: int = 5_000_000
    ):
        self._redis = redis.Redis.from_url(url)
        self._settings = settings
        self._keys = RedisKey(key_prefix)
        self._max_len = max_len

    def ensure_topic(self, topic: str, partitions: int = 1) -> None:
        # Streams are created on first write or group creation; partitions do not apply.
        return None

    def publish(
        self, topic: str, values: Sequence[bytes], keys: Sequence[bytes | None] | None = None
    ) -> None:
        stream = self._keys.stream(topic)
        pipe = self._redis.pipeline(transaction=False)
        for i, value in enumerate(values):
            fields: dict[str, bytes] = {"v": value}
            if keys is not None and keys[i] is not None:
                fields["k"] = keys[i]  # type: ignore[assignment]
            pipe.xadd(stream, fields, maxlen=self._max_len, approximate=True)  # type: ignore[arg-type]
        pipe.execute()

    def consumer(self, topic: str, group: str, name: str) -> RedisStreamsConsumer:
        return RedisStreamsConsumer(self._redis, topic, self._keys.stream(topic), group, name, self._settings)

    def close(self) -> None:
        self._redis.close()


class RedisStreamsConsumer:
    """Consumer-group member. Redelivery: its own pending entries first (after a restart under the same name),
    then entries other members left unacknowledged for ``claim_idle_ms`` (XAUTOCLAIM), then new entries."""

    def __init__(
        self, client: redis.Redis, topic: str, stream: str, group: str, name: str, settings: BusSettings
    ) -> None:
        self._redis = client
        self._topic = topic
        self._stream = stream
        self._group = group
        self._name = name
        self._claim_idle_ms = settings.claim_idle_ms
        self._own_pending_done = False
        try:
            client.xgroup_create(stream, group, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    def _to_messages(self, entries: list[Any]) -> list[BusMessage]:
        out = []
        for entry_id, fields in entries:
            if fields is None:  # deleted (trimmed) entry still pending: nothing to deliver
                continue
            out.append(
                BusMessage(topic=self._topic, value=fields[b"v"], key=fields.get(b"k"), position=entry_id)
            )
        return out

    def poll(self, max_messages: int = 500, timeout_s: float = 1.0) -> list[BusMessage]:
        if not self._own_pending_done:
            # RESP2 (this client's protocol) replies [[stream, entries]]; redis-py types the RESP3 dict too
            reply: Any = self._redis.xreadgroup(
                self._group, self._name, {self._stream: "0"}, count=max_messages
            )
            entries = reply[0][1] if reply else []
            if len(entries) < max_messages:
                self._own_pending_done = True
            if entries:
                return self._to_messages(entries)
        claimed = self._redis.xautoclaim(
            self._stream,
            self._group,
            self._name,
            min_idle_time=self._claim_idle_ms,
            start_id="0-0",
            count=max_messages,
        )
        if claimed[1]:
            return self._to_messages(claimed[1])
        block_ms = max(1, int(timeout_s * 1000))
        reply = self._redis.xreadgroup(
            self._group, self._name, {self._stream: ">"}, count=max_messages, block=block_ms
        )
        return self._to_messages(reply[0][1]) if reply else []

    def commit(self, messages: Sequence[BusMessage]) -> None:
        if messages:
            self._redis.xack(self._stream, self._group, *[m.position for m in messages])

    def close(self) -> None:
        # Pending entries stay in the group's PEL and are claimed by another member after claim_idle_ms.
        return None
