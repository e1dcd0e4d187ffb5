"""Ingestion into the event lake: MovieLens directories and the synthetic generator.

Every source goes through ``features.schema.validate_events``: bad records land in the quarantine table with
their reason and are counted in the ``IngestReport``; nothing is dropped silently and one bad row never stops
a run.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

Progress = Callable[[str], None]
"""Receives one human-readable progress line."""


def no_progress(_: str) -> None:
    return None


@dataclass
class IngestReport:
    """What one ingestion run read, wrote and quarantined."""

    source: str
    format: str
    records_read: int = 0
    events_written: int = 0
    users: int = 0
    items: int = 0
    quarantined: Counter[str] = field(default_factory=Counter)
    partitions: list[str] = field(default_factory=list)

    @property
    def quarantined_total(self) -> int:
        return sum(self.quarantined.values())

    def summary(self) -> str:
        q = ", ".join(f"{k}: {v}" for k, v in self.quarantined.most_common()) or "none"
        return (
            f"{self.source} ({self.format}): {self.records_read:,} records read, {self.events_written:,} events "
            f"written to {len(self.partitions)} daily partitions, {self.users:,} users, {self.items:,} items; "
            f"quarantined {self.quarantined_total:,} ({q})"
        )
