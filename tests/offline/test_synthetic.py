from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.compute as pc
from recstack.features.keys import Col
from recstack.offline.ingest.synthetic import SyntheticConfig, build_world, generate_day, ingest_synthetic
from recstack.offline.lake import EventLake


def test_same_seed_same_events_other_seed_different() -> None:
    cfg = SyntheticConfig(events=20_000, seed=3).resolved()
    a = generate_day(build_world(cfg), cfg, 1)
    b = generate_day(build_world(cfg), cfg, 1)
    assert a.equals(b)
    cfg2 = SyntheticConfig(events=20_000, seed=4).resolved()
    c = generate_day(build_world(cfg2), cfg2, 1)
    assert not a.equals(c)


def test_size_popularity_and_diurnal_shape(tmp_path: Path) -> None:
    lake = EventLake(tmp_path / "lake")
    report = ingest_synthetic(SyntheticConfig(events=300_000, seed=1), lake)
    assert 0.9 * 300_000 <= report.events_written <= 1.1 * 300_000
    assert report.quarantined_total == 0
    events = lake.read_events().to_pandas()
    imps = events[events[Col.EVENT_TYPE] == "impression"]
    counts = np.sort(imps[Col.ITEM_ID].value_counts().to_numpy())[::-1]
    assert counts[: len(counts) // 10].sum() > 0.3 * counts.sum()  # head-heavy popularity
    hours = events[Col.TS].dt.hour.value_counts()
    assert hours[20] > 3 * hours[4]  # evening peak, night trough
    ctr = (events[Col.EVENT_TYPE] == "click").sum() / len(imps)
    assert 0.03 < ctr < 0.25
    clicks = events[events[Col.EVENT_TYPE] == "click"].merge(
        imps[[Col.REQUEST_ID, Col.ITEM_ID, Col.TS]], on=[Col.REQUEST_ID, Col.ITEM_ID], suffixes=("", "_imp")
    )
    assert len(clicks) == (events[Col.EVENT_TYPE] == "click").sum()  # every click follows its impression
    assert (clicks[Col.TS] > clicks[f"{Col.TS}_imp"]).all()


def test_demographics_predict_taste() -> None:
    cfg = SyntheticConfig(events=50_000, users=4000, seed=5).resolved()
    world = build_world(cfg)
    users = world.users
    young_m = ((users[Col.AGE] < 25) & (users[Col.GENDER] == "M")).to_numpy()
    old_f = ((users[Col.AGE] > 50) & (users[Col.GENDER] == "F")).to_numpy()
    gap = np.abs(world.affinity[young_m].mean(0) - world.affinity[old_f].mean(0)).sum()
    assert gap > 0.2
    table = generate_day(world, cfg, 0)
    assert pc.min(table[Col.TS]).as_py().date() >= cfg.start
