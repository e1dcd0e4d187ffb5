from __future__ import annotations

import numpy as np
import pytest
from recstack.control.exposure import ExposureDiscount
from recstack.online.recall import UserView


def _user() -> UserView:
    return UserView(1, None, np.empty(0, np.int64), np.empty(0, np.int64), -1, 0)


def test_discount_grows_with_exposures_and_spreads_the_top() -> None:
    stage = ExposureDiscount(0.5)
    items = np.array([10, 11, 12], np.int64)
    scores = np.array([2.0, 1.8, 1.0])
    np.testing.assert_allclose(stage.apply(_user(), items, scores), scores)  # nothing shown yet
    stage.record(np.array([10, 10, 10], np.int64))
    out = stage.apply(_user(), items, scores)
    assert out[0] == pytest.approx(2.0 - 0.5 * np.log(4.0))
    assert out[1:] == pytest.approx(scores[1:])
    assert int(np.argmax(out)) == 1  # the over-shown head item gave way


def test_zero_strength_is_identity_and_negative_is_refused() -> None:
    stage = ExposureDiscount(0.0)
    stage.record(np.array([1, 1], np.int64))
    np.testing.assert_allclose(stage.apply(_user(), np.array([1], np.int64), np.array([3.0])), [3.0])
    with pytest.raises(ValueError):
        ExposureDiscount(-1.0)
