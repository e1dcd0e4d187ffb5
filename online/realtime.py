"""The service's side of the real-time features (``features/realtime.py`` holds the store and the consumer).

Per request, ``read_user`` does every user read in **one pipelined round trip** (window counts and recent
items). Item-side counts come from the worker's ``ItemSnapshotCache`` (refreshed in the background when the
consumer publishes a new snapshot), so scoring 300 candidates costs no Redis read per item.

Redis failing is not a request failure: a read that errors or passes ``serving.redis_timeout_ms`` returns
``None`` (the pipeline serves without real-time features and reports ``degraded: redis``), and Redis is then
skipped for ``serving.redis_retry_s`` so a dead server does not add its timeout to every request.
"""

from __future__ import annotations

import asyncio
import logging
import time

import numpy as np
import redis
import redis.asyncio as aioredis
from recstack.features.keys import RedisKey
from recstack.features.realtime import ItemSnapshotCache, RealtimeStore, UserRealtime, parse_user_reads
from recstack.online.ranking import RT_ITEM

log = logging.getLogger(__name__)


class RealtimeReader:
    def __init__(self, client: redis.Redis, keys: RedisKey, retry_s: float = 2.0,
                 snapshot_client: redis.Redis | None = None, url: str | None = None,
                 timeout_s: float = 0.025) -> None:  # fmt: skip
        self.client = client
        self.url = url
        self.timeout_s = timeout_s
        self._aclient: aioredis.Redis | None = None
        self.store = RealtimeStore(client, keys)
        self.snapshot_client = snapshot_client or client
        self.items = ItemSnapshotCache(self.snapshot_client, keys)
        self.retry_s = retry_s
        self._skip_until = 0.0
        self.failures = 0

    @classmethod
    def connect(cls, url: str, key_prefix: str, timeout_ms: float, retry_s: float) -> RealtimeReader:
        client = redis.Redis.from_url(url, socket_timeout=timeout_ms / 1000.0,
                                      socket_connect_timeout=timeout_ms / 1000.0)  # fmt: skip
        # the background snapshot fetch moves megabytes: its own connection, without the per-request deadline
        snapshot_client = redis.Redis.from_url(url, socket_timeout=10.0, socket_connect_timeout=1.0)
        return cls(client, RedisKey(key_prefix), retry_s, snapshot_client, url, timeout_ms / 1000.0)

    @property
    def healthy(self) -> bool:
        return time.monotonic() >= self._skip_until

    def _failed(self, exc: Exception) -> None:
        self.failures += 1
        self._skip_until = time.monotonic() + self.retry_s
        log.warning("redis unavailable (%s): serving without real-time features for %.1fs", exc, self.retry_s)

    def read_user(self, user_id: int, at_ms: int) -> UserRealtime | None:
        """The user's real-time features at ``at_ms`` in one round trip; None while Redis is unavailable."""
        if not self.healthy:
            return None
        try:
            pipe = self.client.pipeline(transaction=False)
            reads = self.store.queue_user_reads(pipe, user_id, at_ms)
            return parse_user_reads(pipe.execute()[reads])
        except (redis.RedisError, OSError) as exc:
            self._failed(exc)
            return None

    async def read_user_async(self, user_id: int, at_ms: int) -> UserRealtime | None:
        """``read_user`` on the event loop's own connection: the worker serves other requests while it waits."""
        if not self.healthy:
            return None
        try:
            if self._aclient is None:
                if self.url is None:
                    return self.read_user(user_id, at_ms)
                self._aclient = aioredis.Redis.from_url(self.url, socket_timeout=self.timeout_s,
                                                        socket_connect_timeout=self.timeout_s)  # fmt: skip
            pipe = self._aclient.pipeline(transaction=False)
            reads = self.store.queue_user_reads(pipe, user_id, at_ms)  # type: ignore[arg-type]
            results = await asyncio.wait_for(pipe.execute(), timeout=4 * self.timeout_s)
            return parse_user_reads(results[reads])
        except (redis.RedisError, OSError, TimeoutError) as exc:
            self._failed(exc)
            return None

    def item_counts(self, item_ids: np.ndarray) -> np.ndarray:
        """(n, len(RT_ITEM)) item window counts from the snapshot cache (zeros before the first snapshot)."""
        counts = self.items.lookup(item_ids)
        return np.column_stack([counts[name] for name in RT_ITEM]).astype(np.float32)

    def refresh_items(self) -> None:
        """Fetch a newer item snapshot if the consumer published one (background thread)."""
        if not self.healthy:
            return
        try:
            self.items.maybe_refresh()
        except (redis.RedisError, OSError) as exc:
            self._failed(exc)

    def close(self) -> None:
        self.client.close()
        self.snapshot_client.close()

    async def aclose(self) -> None:
        if self._aclient is not None:
            await self._aclient.aclose()
        self.close()
