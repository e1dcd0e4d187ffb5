"""The training table: the samples joined with the user and item features as of 00:00 of each sample's day.

Three lake tables, all partitioned by ``event_date``, make it:

* ``samples/`` (``offline/jobs/samples.py``): one row per impression, keyed by ``user_id``, ``item_id`` and
  ``event_date``, with labels, context and the real-time window features;
* ``user_asof/`` and ``item_asof/`` (``offline/jobs/features.py``): one row per (entity, day it was active),
  its features as of 00:00 of that day (profile, activity totals of earlier days).

The samples are stored keyed, not with the day's user and item features copied onto every row: those
columns repeat per (user, day) and (item, day), doubled the table and were half the samples job's writing.
Readers join them: Spark in ``features.training_table``, Arrow / pandas here (the rankers' training). Both
are left joins on (id, ``event_date``): a sample always finds its rows, as its impression makes the user and
the item active on its day. The feature statistics aggregate the table without building it
(``features.dense_moments``).
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pandas as pd
import pyarrow.dataset as ds
from recstack.features.keys import Col, LakeTable
from recstack.offline.lake import DATE_PARTITIONING

USER_KEYS = [Col.USER_ID, Col.EVENT_DATE]
ITEM_KEYS = [Col.ITEM_ID, Col.EVENT_DATE]
FEATURE_PARTS = ((LakeTable.USER_ASOF, USER_KEYS), (LakeTable.ITEM_ASOF, ITEM_KEYS))
"""The feature tables joined to the samples and the keys of each."""


def _dataset(lake_root: Path, table: str) -> ds.Dataset:
    path = Path(lake_root) / table
    if not path.exists():
        run = "recstack samples" if table == LakeTable.SAMPLES else "recstack features"
        raise FileNotFoundError(f"no {table} at {path}: run `{run}` first")
    return ds.dataset(path, format="parquet", partitioning=DATE_PARTITIONING)


def read_training_table(
    lake_root: Path | str, columns: list[str] | None = None, since: dt.date | None = None
) -> pd.DataFrame:
    """The training table's ``columns`` (all when None) for samples dated ``since`` or later, in the samples'
    order; ``event_date`` is an ISO date string. Raises ``KeyError`` for a column no table has."""
    root = Path(lake_root)
    flt = (ds.field(Col.EVENT_DATE) >= since.isoformat()) if since else None
    samples = _dataset(root, LakeTable.SAMPLES)
    own = [c for c in samples.schema.names if columns is None or c in columns]
    read = list(dict.fromkeys([*own, Col.USER_ID, Col.ITEM_ID, Col.EVENT_DATE]))
    frame = samples.to_table(columns=read, filter=flt).to_pandas()
    for table, keys in FEATURE_PARTS:
        dataset = _dataset(root, table)
        joined = [c for c in dataset.schema.names
                  if c not in keys and c not in frame.columns and (columns is None or c in columns)]  # fmt: skip
        if joined:
            features = dataset.to_table(columns=[*keys, *joined], filter=flt).to_pandas()
            frame = frame.merge(features, on=keys, how="left", validate="many_to_one")
    if columns is None:
        return frame
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise KeyError(f"the training table has no columns {missing}")
    return frame[columns].copy()
