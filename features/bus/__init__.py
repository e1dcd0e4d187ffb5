"""The event bus: publish batches, consume with a consumer group, commit explicitly.

Backends are chosen by URL scheme (``open_bus``): ``redis://`` → Redis Streams (the single-machine default),
``kafka://host:port[,host:port]`` → Apache Kafka via kafka-python (production). Both give at-least-once
delivery: a message that was polled but never committed is delivered again to the group.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from recstack.features.settings import BusSettings


@dataclass(frozen=True)
class BusMessage:
    """One delivered message. ``position`` is backend-specific (stream id, or (partition, offset))."""

    topic: str
    value: bytes
    key: bytes | None
    position: Any


class EventConsumer(Protocol):
    """A member of a consumer group on one topic."""

    def poll(self, max_messages: int = 500, timeout_s: float = 1.0) -> list[BusMessage]:
        """Up to ``max_messages`` messages, waiting at most ``timeout_s`` when none are ready."""
        ...

    def commit(self, messages: Sequence[BusMessage]) -> None:
        """Mark ``messages`` processed. On Kafka this also commits everything before them in their partition,
        so commit in poll order."""
        ...

    def close(self) -> None:
        """Leave the group; uncommitted messages go to another member."""
        ...


class EventBus(Protocol):
    """Publishes to topics and hands out consumers."""

    def ensure_topic(self, topic: str, partitions: int = 1) -> None: ...

    def publish(
        self, topic: str, values: Sequence[bytes], keys: Sequence[bytes | None] | None = None
    ) -> None:
        """Publish a batch; returns when the broker has accepted every message."""
        ...

    def consumer(self, topic: str, group: str, name: str) -> EventConsumer: ...

    def close(self) -> None: ...


class BusConfigError(ValueError):
    """The bus URL names no known backend."""


def open_bus(url: str, settings: BusSettings | None = None, key_prefix: str = "recstack") -> EventBus:
    """Open the bus backend that ``url``'s scheme names."""
    settings = settings or BusSettings()
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    if scheme in ("redis", "rediss", "unix"):
        from recstack.features.bus.redis_streams import RedisStreamsBus

        return RedisStreamsBus(url, settings, key_prefix=key_prefix)
    if scheme == "kafka":
        from recstack.features.bus.kafka import KafkaBus

        return KafkaBus(url, settings)
    raise BusConfigError(f"unsupported event bus URL {url!r}: use redis://host:port/db or kafka://host:port")
