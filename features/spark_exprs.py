"""Spark column expressions of the scalar transforms in ``features.definitions`` (tested for parity there)."""

from __future__ import annotations

from pyspark.sql import Column
from pyspark.sql import functions as F
from recstack.features.definitions import (
    AGE_EDGES,
    CROSS_BUCKETS,
    CROSSES,
    FEATURES_BY_NAME,
    UNKNOWN,
    ZIP_PREFIX_LEN,
    Cross,
    Kind,
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


def _text(value: Column) -> Column:
    return F.coalesce(value.cast("string"), F.lit(UNKNOWN))


def _bucket(key: Column) -> Column:
    return F.pmod(F.xxhash64(key), F.lit(CROSS_BUCKETS))


def cross_col(cross: Cross) -> Column:
    """The hashed indices of one cross as an array (one per value of a multi-valued right side)."""
    prefix = F.concat(F.lit(f"{cross.left}="), _text(F.col(cross.left)), F.lit(f"|{cross.right}="))
    if FEATURES_BY_NAME[cross.right].kind == Kind.MULTI:
        values = F.coalesce(F.col(cross.right), F.array().cast("array<string>"))
        return F.transform(values, lambda v: _bucket(F.concat(prefix, _text(v))))
    return F.array(_bucket(F.concat(prefix, _text(F.col(cross.right)))))


def crosses_col() -> Column:
    """All declared crosses, concatenated in ``CROSSES`` order (``definitions.cross_ids``)."""
    return F.concat(*[cross_col(c) for c in CROSSES]).cast("array<int>")
