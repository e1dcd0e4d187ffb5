"""A small pandas reference of the sample join and the real-time window features, written for clarity.

It states the rules of ``offline/jobs/samples.py`` a second, independent way (merges and filters, no sorted
search) so the parity test can hold the Spark job to them. Quadratic per entity: for test-sized data only.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
from recstack.features.definitions import (
    RECENT_ITEMS,
    RECENT_ITEMS_K,
    RECENT_ITEMS_WINDOW_S,
    WINDOW_FEATURES,
    Counted,
    Entity,
    spark_xxhash64,
)
from recstack.features.keys import Col
from recstack.features.schema import EventType

KEYS = [Col.REQUEST_ID, Col.USER_ID, Col.ITEM_ID]


def samples_reference(
    events: pd.DataFrame, start: dt.date, end: dt.date, attribution_window_s: int = 1800
) -> pd.DataFrame:
    """Samples of impressions dated [start, end] from ``events`` (``EVENT_SCHEMA`` columns, ``ts`` tz-aware).

    Columns: the keys, ``ts``, ``click``, ``click_ts``, ``like``, every window feature and ``user_recent_items``
    (a list, newest first).
    """
    ev = events.copy()
    ev[Col.REQUEST_ID] = ev[Col.REQUEST_ID].fillna("")
    date = ev[Col.TS].dt.tz_convert("UTC").dt.date
    imps = ev[(ev[Col.EVENT_TYPE] == EventType.IMPRESSION) & (date >= start) & (date <= end)]
    # duplicates: the earliest impression, ties broken by the smallest (Spark) xxhash64 of the event id
    imps = imps.assign(_h=imps[Col.EVENT_ID].map(spark_xxhash64))
    imps = imps.sort_values([Col.TS, "_h"]).drop_duplicates(KEYS, keep="first")
    samples = imps[[*KEYS, Col.TS]].reset_index(drop=True)
    samples["_row"] = np.arange(len(samples))

    # click: first click of the same request, user and item with ts <= click_ts <= ts + window
    clicks = ev[ev[Col.EVENT_TYPE] == EventType.CLICK][[*KEYS, Col.TS]].rename(columns={Col.TS: "cts"})
    m = samples.merge(clicks, on=KEYS)
    delay = m["cts"] - m[Col.TS]
    m = m[(delay >= pd.Timedelta(0)) & (delay <= pd.Timedelta(seconds=attribution_window_s))]
    first_click = m.groupby("_row")["cts"].min()
    samples[Col.CLICK_TS] = samples["_row"].map(first_click)
    samples[Col.CLICK] = samples[Col.CLICK_TS].notna().astype(np.int8)

    # like: max label of the request's rating / like events for the item
    rated = ev[ev[Col.EVENT_TYPE].isin([EventType.RATING, EventType.LIKE]) & ev[Col.LABEL].notna()]
    likes = rated.groupby(KEYS)[Col.LABEL].max().rename(Col.LIKE).reset_index()
    samples = samples.merge(likes, on=KEYS, how="left")

    # window features: events of the entity with t - w <= ts < t
    all_clicks = ev[ev[Col.EVENT_TYPE] == EventType.CLICK]
    all_imps = ev[ev[Col.EVENT_TYPE] == EventType.IMPRESSION]
    for w in WINDOW_FEATURES:
        key = Col.USER_ID if w.entity == Entity.USER else Col.ITEM_ID
        pool = all_clicks if w.counted == Counted.CLICK else all_imps
        pairs = samples[["_row", key, Col.TS]].merge(pool[[key, Col.TS]].rename(columns={Col.TS: "ets"}), on=key)
        inside = (pairs["ets"] < pairs[Col.TS]) & (pairs["ets"] >= pairs[Col.TS] - pd.Timedelta(seconds=w.window_s))
        samples[w.name] = samples["_row"].map(pairs[inside].groupby("_row").size()).fillna(0).astype(np.int64)

    pairs = samples[["_row", Col.USER_ID, Col.TS]].merge(
        all_clicks[[Col.USER_ID, Col.TS, Col.ITEM_ID]].rename(columns={Col.TS: "ets", Col.ITEM_ID: "eitem"}),
        on=Col.USER_ID,
    )
    window = pd.Timedelta(seconds=RECENT_ITEMS_WINDOW_S)
    pairs = pairs[(pairs["ets"] < pairs[Col.TS]) & (pairs["ets"] >= pairs[Col.TS] - window)]
    pairs = pairs.sort_values(["_row", "ets", "eitem"], ascending=[True, False, False])
    recent = pairs.groupby("_row")["eitem"].apply(lambda s: [int(v) for v in s.head(RECENT_ITEMS_K)])
    samples[RECENT_ITEMS] = samples["_row"].map(recent).apply(lambda v: v if isinstance(v, list) else [])
    return samples.drop(columns="_row")
