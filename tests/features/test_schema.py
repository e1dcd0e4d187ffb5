from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError
from recstack.features.keys import Col
from recstack.features.schema import EVENT_SCHEMA, Event, empty_event_frame, validate_events

GOOD = {
    Col.EVENT_ID: "e1", Col.EVENT_TYPE: "rating", Col.TS: "2026-01-02T10:00:00Z", Col.USER_ID: "7",
    Col.ITEM_ID: "11", Col.VALUE: "4", Col.LABEL: None, Col.SLOT: "2",
}  # fmt: skip

BAD_CASES = [
    ({Col.EVENT_ID: ""}, "missing event_id"),
    ({Col.EVENT_TYPE: "purchase"}, "unknown event_type"),
    ({Col.USER_ID: "abc"}, "invalid user_id"),
    ({Col.USER_ID: "-3"}, "invalid user_id"),
    ({Col.ITEM_ID: "1.5"}, "invalid item_id"),
    ({Col.TS: "not a time"}, "invalid ts"),
    ({Col.TS: "1970-01-02T00:00:00Z"}, "ts out of range"),
    ({Col.TS: "2100-01-01T00:00:00Z"}, "ts out of range"),
    ({Col.VALUE: None}, "rating without value"),
    ({Col.VALUE: "7"}, "rating out of range"),
    ({Col.LABEL: "2"}, "invalid label"),
    ({Col.SLOT: "x"}, "invalid slot"),
]


def _frame(rows: list[dict]) -> pd.DataFrame:
    frame = empty_event_frame(len(rows))
    for i, row in enumerate(rows):
        for k, v in row.items():
            frame.at[i, k] = v
    return frame


def test_good_rows_pass_and_rating_gets_its_label() -> None:
    rows = [GOOD, {**GOOD, Col.EVENT_ID: "e2", Col.VALUE: "2.5"}]
    result = validate_events(_frame(rows), "test")
    assert result.quarantined.empty
    assert result.valid.schema == EVENT_SCHEMA
    assert result.valid[Col.LABEL].to_pylist() == [1, 0]
    assert result.valid[Col.TS].to_pylist()[0] == dt.datetime(2026, 1, 2, 10, tzinfo=dt.UTC)


def test_each_bad_row_is_quarantined_with_its_reason_and_counted() -> None:
    rows = [GOOD] + [{**GOOD, Col.EVENT_ID: f"b{i}", **patch} for i, (patch, _) in enumerate(BAD_CASES)]
    result = validate_events(_frame(rows), "unit")
    assert result.valid.num_rows == 1
    assert list(result.quarantined[Col.REASON]) == [why for _, why in BAD_CASES]
    assert sum(result.reasons.values()) == len(BAD_CASES)
    # the raw record is kept so the row can be repaired and replayed
    assert '"abc"' in result.quarantined[Col.RECORD].iloc[2]
    assert set(result.quarantined[Col.SOURCE]) == {"unit"}


def test_unknown_ids_are_quarantined_when_the_catalog_is_known() -> None:
    rows = [GOOD, {**GOOD, Col.EVENT_ID: "e2", Col.ITEM_ID: "999"}]
    result = validate_events(_frame(rows), "t", known_items=np.array([11]))
    assert result.valid.num_rows == 1
    assert result.reasons == {"unknown item_id": 1}


@pytest.mark.parametrize(("patch", "why"), BAD_CASES)
def test_wire_model_rejects_what_ingestion_rejects(patch: dict, why: str) -> None:
    record = {k: v for k, v in {**GOOD, **patch}.items() if v is not None}
    with pytest.raises(ValidationError):
        Event.model_validate(record)


def test_wire_model_round_trip() -> None:
    event = Event.model_validate({k: v for k, v in GOOD.items() if v is not None})
    assert event.label == 1
    again = Event.from_json_bytes(event.to_json_bytes())
    assert again == event
