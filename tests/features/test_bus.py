"""One contract suite for every event-bus backend, against real servers."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import pytest
from recstack.features.bus import BusConfigError, BusMessage, EventBus, EventConsumer, open_bus
from recstack.features.settings import BusSettings

SETTINGS = BusSettings(claim_idle_ms=300, kafka_session_timeout_ms=6000, kafka_max_poll_interval_ms=10000)


@pytest.fixture(params=["redis", "kafka"])
def bus(request: pytest.FixtureRequest) -> Iterator[EventBus]:
    url = request.getfixturevalue(f"{request.param}_url")
    b = open_bus(url, SETTINGS, key_prefix=f"t{uuid.uuid4().hex[:6]}")
    yield b
    b.close()


def _topic() -> str:
    return f"t-{uuid.uuid4().hex[:8]}"


def _drain(consumer: EventConsumer, want: int, timeout_s: float = 40.0) -> list[BusMessage]:
    got: list[BusMessage] = []
    deadline = time.monotonic() + timeout_s
    while len(got) < want and time.monotonic() < deadline:
        got.extend(consumer.poll(max_messages=100, timeout_s=0.5))
    return got


def _quiet(consumer: EventConsumer, seconds: float) -> list[BusMessage]:
    got: list[BusMessage] = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        got.extend(consumer.poll(max_messages=100, timeout_s=0.5))
    return got


def test_publish_then_consume_in_order_with_keys(bus: EventBus) -> None:
    topic = _topic()
    bus.ensure_topic(topic)
    values = [f"m{i}".encode() for i in range(20)]
    bus.publish(topic, values, keys=[b"user-1"] * 20)
    consumer = bus.consumer(topic, "g1", "c1")
    got = _drain(consumer, 20)
    assert [m.value for m in got] == values
    assert all(m.key == b"user-1" for m in got)
    consumer.commit(got)
    consumer.close()


def test_uncommitted_messages_are_redelivered_to_the_group(bus: EventBus) -> None:
    topic = _topic()
    bus.ensure_topic(topic)
    bus.publish(topic, [f"m{i}".encode() for i in range(10)])
    first = bus.consumer(topic, "g", "first")
    got = _drain(first, 10)
    assert len(got) == 10
    first.commit(got[:4])  # processed four, then crashed before committing the rest
    first.close()
    time.sleep(0.5)  # past claim_idle_ms for Redis Streams
    second = bus.consumer(topic, "g", "second")
    redelivered = _drain(second, 6)
    assert sorted(m.value for m in redelivered) == [f"m{i}".encode() for i in range(4, 10)]
    second.commit(redelivered)
    second.close()
    third = bus.consumer(topic, "g", "third")
    assert _quiet(third, 5.0) == []  # everything committed: nothing comes back
    third.close()


def test_groups_are_independent(bus: EventBus) -> None:
    topic = _topic()
    bus.ensure_topic(topic)
    bus.publish(topic, [b"a", b"b"])
    for group in ("ga", "gb"):
        consumer = bus.consumer(topic, group, "c")
        got = _drain(consumer, 2)
        assert [m.value for m in got] == [b"a", b"b"]
        consumer.commit(got)
        consumer.close()


def test_unknown_scheme_is_refused() -> None:
    with pytest.raises(BusConfigError, match="unsupported event bus URL"):
        open_bus("amqp://localhost")
