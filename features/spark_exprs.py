"""Spark column expressions of the scalar transforms in ``features.definitions`` (tested for parity there)."""

from __future__ import annotations

from pyspark.sql import Column
from pyspark.sql import functions as F
from recstack.features.definitions import (
    AGE_EDGES,
    UNKNOWN,
    ZIP_PREFIX_LEN,
)


def age_bucket_col(age: Column) -> Column:
    """``definitions.age_bucket``: 0 unknown, then 1 + the number of edges <= age."""
    bucket = F.lit(1)
    for edge in AGE_EDGES:
        bucket = bucket + F.when(age >= edge, 1).otherwise(0)
    return F.when(age.isNull() | (age <= 0), 0).otherwise(bucket).cast("tinyint")


def zip_prefix_col(zip_code: Column) -> Column:
    """``definitions.zip_prefix``."""
    z = F.trim(zip_code)
    return F.when(z.isNull() | (F.length(z) < ZIP_PREFIX_LEN), F.lit(UNKNOWN)).otherwise(
        F.upper(F.substring(z, 1, ZIP_PREFIX_LEN))
    )
