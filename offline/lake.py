"""The Parquet event lake: events partitioned by ``event_date``, profile tables, quarantine.

Layout under the lake root::

    events/event_date=YYYY-MM-DD/*.parquet   EVENT_SCHEMA
    users/users.parquet                      USER_SCHEMA
    items/items.parquet                      ITEM_SCHEMA
    quarantine/source=<name>/*.parquet       QUARANTINE_SCHEMA
    samples/event_date=YYYY-MM-DD/...        written by the Spark sample job
    user_asof/, item_asof/ (event_date=...)  written by the Spark features job (offline/jobs/training_table.py)

Writes are idempotent per partition: an ingestion run stages its output and then replaces exactly the
partitions it produced, so re-running a source replaces its days instead of appending duplicates.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import uuid
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq
from recstack.features.keys import Col, LakeTable
from recstack.features.schema import EVENT_SCHEMA, ITEM_SCHEMA, QUARANTINE_SCHEMA, USER_SCHEMA

DATE_PARTITIONING = ds.partitioning(pa.schema([pa.field(Col.EVENT_DATE, pa.string())]), flavor="hive")
"""The ``event_date=YYYY-MM-DD`` folders of every date-partitioned lake table, for Arrow readers (dates as strings)."""


def date_partition(day: dt.date) -> str:
    """The folder name of ``day``'s partition in a date-partitioned table (``event_date=YYYY-MM-DD``)."""
    return f"{Col.EVENT_DATE}={day.isoformat()}"


def swap_partitions(staged: Path, target: Path) -> list[str]:
    """Replace the partition folders of ``target`` by those staged in ``staged`` (same file system), by renames:
    each old folder is moved aside, the staged one moved in, and the old ones deleted at the end. Returns the
    names swapped in; partitions not staged are left alone."""
    target.mkdir(parents=True, exist_ok=True)
    replaced_dir = staged.with_name(f"{staged.name}-replaced")
    replaced_dir.mkdir(parents=True, exist_ok=True)
    names = []
    for part in sorted(p for p in staged.iterdir() if p.is_dir()):
        dest = target / part.name
        if dest.exists():
            os.replace(dest, replaced_dir / part.name)
        os.replace(part, dest)
        names.append(part.name)
    shutil.rmtree(replaced_dir, ignore_errors=True)
    return names


class LakeError(RuntimeError):
    """A lake table is missing or unreadable."""


class EventLake:
    """Reads and writes the lake tables under ``root``."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)

    def path(self, table: str) -> Path:
        return self.root / table

    # -- events -------------------------------------------------------------------------------------
    def stage(self) -> EventStage:
        """A staging area for one ingestion run; ``commit()`` swaps its partitions into ``events/``."""
        return EventStage(self)

    def event_dates(self) -> list[dt.date]:
        """The dates that have an events partition, sorted."""
        base = self.path(LakeTable.EVENTS)
        if not base.exists():
            return []
        prefix = f"{Col.EVENT_DATE}="
        return sorted(dt.date.fromisoformat(p.name[len(prefix) :]) for p in base.glob(f"{prefix}*"))

    def read_events(self, start: dt.date | None = None, end: dt.date | None = None) -> pa.Table:
        """Events with ``start <= event_date <= end`` (both optional), in ``EVENT_SCHEMA``."""
        base = self.path(LakeTable.EVENTS)
        if not base.exists():
            raise LakeError(f"no events in the lake at {base}: run `recstack ingest` first")
        dataset = ds.dataset(base, format="parquet", partitioning=DATE_PARTITIONING, schema=_partitioned_schema())
        flt = None
        if start is not None:
            flt = pc.field(Col.EVENT_DATE) >= start.isoformat()
        if end is not None:
            cond = pc.field(Col.EVENT_DATE) <= end.isoformat()
            flt = cond if flt is None else flt & cond
        return dataset.to_table(filter=flt, columns=[f.name for f in EVENT_SCHEMA])

    # -- profiles -----------------------------------------------------------------------------------
    def write_users(self, frame: pd.DataFrame) -> None:
        self._write_single(
            LakeTable.USERS, pa.Table.from_pandas(frame, schema=USER_SCHEMA, preserve_index=False)
        )

    def write_items(self, frame: pd.DataFrame) -> None:
        self._write_single(
            LakeTable.ITEMS, pa.Table.from_pandas(frame, schema=ITEM_SCHEMA, preserve_index=False)
        )

    def read_users(self) -> pd.DataFrame:
        return self._read_single(LakeTable.USERS).to_pandas()

    def read_items(self) -> pd.DataFrame:
        return self._read_single(LakeTable.ITEMS).to_pandas()

    def _write_single(self, table: str, data: pa.Table) -> None:
        folder = self.path(table)
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f".{table}.{uuid.uuid4().hex}.parquet"
        pq.write_table(data, tmp)
        tmp.replace(folder / f"{table}.parquet")  # atomic swap: readers never see a half-written file

    def _read_single(self, table: str) -> pa.Table:
        path = self.path(table) / f"{table}.parquet"
        if not path.exists():
            raise LakeError(f"lake table {table!r} missing at {path}: run `recstack ingest` first")
        return pq.read_table(path)

    # -- quarantine ---------------------------------------------------------------------------------
    def write_quarantine(self, frame: pd.DataFrame, source: str, run_id: str) -> None:
        if frame.empty:
            return
        folder = self.path(LakeTable.QUARANTINE) / f"{Col.SOURCE}={_safe(source)}"
        folder.mkdir(parents=True, exist_ok=True)
        frame = frame.assign(
            **{Col.INGESTED_AT: pd.to_datetime(frame[Col.INGESTED_AT], utc=True).dt.floor("ms")}
        )
        table = pa.Table.from_pandas(frame, schema=QUARANTINE_SCHEMA, preserve_index=False)
        pq.write_table(table, folder / f"{run_id}-{uuid.uuid4().hex[:8]}.parquet")

    def read_quarantine(self) -> pd.DataFrame:
        base = self.path(LakeTable.QUARANTINE)
        if not base.exists():
            return pd.DataFrame(columns=[f.name for f in QUARANTINE_SCHEMA])
        return ds.dataset(base, format="parquet", partitioning="hive").to_table().to_pandas()


class EventStage:
    """Collects one run's event batches, then replaces the matching lake partitions in one step."""

    def __init__(self, lake: EventLake) -> None:
        self.lake = lake
        self.run_id = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:6]
        self.dir = lake.root / ".staging" / self.run_id
        self._batches = 0
        self.rows = 0

    def __enter__(self) -> EventStage:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        self.abort()  # after commit() there is nothing left to remove; after an error the stage is dropped

    def write(self, frame: pd.DataFrame | pa.Table) -> None:
        """Append a batch of valid events (``EVENT_SCHEMA`` columns)."""
        table = frame if isinstance(frame, pa.Table) else pa.Table.from_pandas(frame, preserve_index=False)
        table = table.select([f.name for f in EVENT_SCHEMA]).cast(EVENT_SCHEMA)
        if table.num_rows == 0:
            return
        dates = pc.strftime(table[Col.TS], format="%Y-%m-%d")
        table = table.append_column(Col.EVENT_DATE, dates)
        ds.write_dataset(
            table,
            self.dir,
            format="parquet",
            partitioning=DATE_PARTITIONING,
            basename_template=f"part-{self._batches:05d}-{{i}}.parquet",
            existing_data_behavior="overwrite_or_ignore",
            max_rows_per_group=1 << 20,
        )
        self._batches += 1
        self.rows += table.num_rows

    def commit(self) -> list[str]:
        """Swap the staged partitions into the lake; returns the partition names replaced."""
        target = self.lake.path(LakeTable.EVENTS)
        target.mkdir(parents=True, exist_ok=True)
        replaced = swap_partitions(self.dir, target) if self.dir.exists() else []
        self.abort()
        return replaced

    def abort(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


def _partitioned_schema() -> pa.Schema:
    return EVENT_SCHEMA.append(pa.field(Col.EVENT_DATE, pa.string()))


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
