"""Event bus on Apache Kafka (kafka-python): the production backend."""

from __future__ import annotations

from collections.abc import Sequence

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic
from kafka.errors import TopicAlreadyExistsError
from kafka.structs import OffsetAndMetadata
from recstack.features.bus import BusMessage
from recstack.features.settings import BusSettings


def bootstrap_servers(url: str) -> list[str]:
    """``kafka://h1:9092,h2:9092`` → ``["h1:9092", "h2:9092"]``."""
    hosts = url.split("://", 1)[1].strip("/")
    servers = [h for h in hosts.split(",") if h]
    if not servers:
        raise ValueError(f"kafka URL {url!r} names no broker")
    return servers


class KafkaBus:
    """Topics are Kafka topics; message keys pick the partition (same user → same partition)."""

    def __init__(self, url: str, settings: BusSettings) -> None:
        self._servers = bootstrap_servers(url)
        self._settings = settings
        self._producer: KafkaProducer | None = None

    def ensure_topic(self, topic: str, partitions: int = 1) -> None:
        admin = KafkaAdminClient(bootstrap_servers=self._servers)
        try:
            admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=1)])
        except TopicAlreadyExistsError:
            pass
        finally:
            admin.close()

    def publish(
        self, topic: str, values: Sequence[bytes], keys: Sequence[bytes | None] | None = None
    ) -> None:
        if self._producer is None:
            self._producer = KafkaProducer(bootstrap_servers=self._servers, acks="all", linger_ms=5)
        futures = [
            self._producer.send(topic, value=v, key=None if keys is None else keys[i])
            for i, v in enumerate(values)
        ]
        self._producer.flush()
        for f in futures:
            f.get(timeout=30)  # raises if the broker refused the message

    def consumer(self, topic: str, group: str, name: str) -> KafkaEventConsumer:
        return KafkaEventConsumer(self._servers, topic, group, name, self._settings)

    def close(self) -> None:
        if self._producer is not None:
            self._producer.close()
            self._producer = None


class KafkaEventConsumer:
    """Consumer-group member with auto-commit off; uncommitted offsets are re-read by the group."""

    def __init__(self, servers: list[str], topic: str, group: str, name: str, settings: BusSettings) -> None:
        self._topic = topic
        self._consumer = KafkaConsumer(
            topic,
            bootstrap_servers=servers,
            group_id=group,
            client_id=name,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            session_timeout_ms=settings.kafka_session_timeout_ms,
            heartbeat_interval_ms=max(100, settings.kafka_session_timeout_ms // 5),
            max_poll_interval_ms=settings.kafka_max_poll_interval_ms,
        )

    def poll(self, max_messages: int = 500, timeout_s: float = 1.0) -> list[BusMessage]:
        batches = self._consumer.poll(timeout_ms=int(timeout_s * 1000), max_records=max_messages)
        out: list[BusMessage] = []
        for tp, records in batches.items():
            out.extend(
                BusMessage(topic=tp.topic, value=r.value, key=r.key, position=(tp.partition, r.offset))
                for r in records
            )
        return out

    def commit(self, messages: Sequence[BusMessage]) -> None:
        upto: dict[int, int] = {}
        for m in messages:
            partition, offset = m.position
            upto[partition] = max(upto.get(partition, -1), offset)
        if upto:
            self._consumer.commit(
                {TopicPartition(self._topic, p): OffsetAndMetadata(o + 1, "", -1) for p, o in upto.items()}
            )

    def close(self) -> None:
        self._consumer.close(autocommit=False)
