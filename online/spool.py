"""A local disk spool for events the bus refused, so ``POST /events`` loses nothing while the bus is down.

Each worker appends to its own file (``events-<pid>.jsonl``; one JSON line per event with its key) and
fsyncs before the API answers 202. ``drain`` re-publishes spooled files once the bus answers again: a file
is first renamed to ``*.draining`` (atomic, so two workers never send the same file), published in batches,
and deleted only after every batch was accepted; a failure puts the rest back for the next attempt.
At-least-once: a crash between publish and delete re-sends, which the idempotent consumers absorb.
"""

from __future__ import annotations

import base64
import json
import os
import threading
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path

Publish = Callable[[Sequence[bytes], Sequence[bytes | None]], None]


class EventSpool:
    def __init__(self, directory: Path, batch: int = 500) -> None:
        self.dir = Path(directory)
        self.batch = batch
        self._lock = threading.Lock()

    @property
    def path(self) -> Path:
        return self.dir / f"events-{os.getpid()}.jsonl"

    def append(self, values: Sequence[bytes], keys: Sequence[bytes | None]) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        lines = "".join(
            json.dumps({"v": base64.b64encode(v).decode(), "k": k.decode() if k is not None else None}) + "\n"
            for v, k in zip(values, keys, strict=True)
        )
        with self._lock, open(self.path, "a", encoding="utf-8") as f:
            f.write(lines)
            f.flush()
            os.fsync(f.fileno())

    def pending(self) -> int:
        """Events waiting in the spool (all workers' files)."""
        if not self.dir.exists():
            return 0
        total = 0
        for p in self.dir.glob("events-*.jsonl*"):
            with open(p, encoding="utf-8") as f:
                total += sum(1 for line in f if line.strip())
        return total

    def drain(self, publish: Publish) -> int:
        """Re-publish every spooled event; returns how many were sent. Raises what ``publish`` raises, after
        putting the unsent events back."""
        if not self.dir.exists():
            return 0
        sent = 0
        for path in sorted(self.dir.glob("events-*.jsonl")):
            claimed = path.with_name(f"{path.name}.{uuid.uuid4().hex}.draining")
            with self._lock:
                try:
                    os.rename(path, claimed)
                except FileNotFoundError:  # another worker took it
                    continue
            rows = [json.loads(line) for line in claimed.read_text(encoding="utf-8").splitlines() if line.strip()]
            done = 0
            try:
                for i in range(0, len(rows), self.batch):
                    chunk = rows[i : i + self.batch]
                    publish([base64.b64decode(r["v"]) for r in chunk],
                            [r["k"].encode() if r["k"] is not None else None for r in chunk])  # fmt: skip
                    done = i + len(chunk)
            except Exception:
                rest = rows[done:]
                self.append([base64.b64decode(r["v"]) for r in rest],
                            [r["k"].encode() if r["k"] is not None else None for r in rest])  # fmt: skip
                claimed.unlink()
                raise
            claimed.unlink()
            sent += done
        return sent
