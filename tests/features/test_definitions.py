"""The vectorised context transforms agree with the scalar definitions the online service uses."""

from __future__ import annotations

import datetime as dt

import numpy as np
from recstack.features.definitions import hour_of_day, hour_of_day_ms, weekday, weekday_ms


def test_hour_and_weekday_of_milliseconds_match_the_scalar_definitions() -> None:
    rng = np.random.default_rng(0)
    # random instants from 1900 to 2100, plus the edges of hours and days around the epoch and in 2026
    edges = np.array([0, -1, 1, 3_599_999, 3_600_000, 86_399_999, 86_400_000, -86_400_000, -86_400_001])
    day_2026 = int(dt.datetime(2026, 1, 5, tzinfo=dt.UTC).timestamp() * 1000)  # a Monday
    ts_ms = np.concatenate([
        rng.integers(-2_208_988_800_000, 4_102_444_800_000, 5_000), edges, day_2026 + edges,
    ]).astype(np.int64)  # fmt: skip
    hours, days = hour_of_day_ms(ts_ms), weekday_ms(ts_ms)
    assert hours.dtype == np.int8 and days.dtype == np.int8
    for ms, h, d in zip(ts_ms.tolist(), hours.tolist(), days.tolist(), strict=True):
        t = dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(milliseconds=ms)
        assert (h, d) == (hour_of_day(t), weekday(t)), t
    assert weekday_ms(np.array([day_2026]))[0] == 0
