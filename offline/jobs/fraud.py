"""Spark job: offline anti-fraud over a date range — gangs of accounts found in the long run of events.

The real-time guard (``control/fraud.py``) sees windows of minutes to a day; this job looks at ``[start, end]``
of the lake's events at once and publishes what it finds as a versioned blocklist the guard reads.

1. **Shared-attribute graph.** Users and the attributes linking them form a bipartite graph: a ``device_id``
   seen with 2 .. ``device_link_max_users`` distinct users, an ``ip`` seen with 2 .. ``ip_link_max_users``
   (a busier IP is a carrier NAT or public Wi-Fi: no evidence, never linked, never blocked) and, with
   ``sync_links``, a pair of users who clicked the same item in the same ``sync_bucket_s`` bucket on at least
   ``sync_pair_min_items`` distinct items (gangs that rotate devices and proxies still click in step).
2. **Connected components** by min-label propagation: every user starts with its own id as label; a round
   gives each attribute the smallest label of its users, then each user the smallest label of its attributes
   (two DataFrame joins, checkpointed each round) until no label changes. A component is named by its
   smallest user id. Nothing but counts reaches the driver.
3. **Scores.** A component of at least ``min_component_size`` users with ``min_component_clicks`` clicks gets
   ``score = sum(weight * term)`` (``SCORE_WEIGHTS``), every term in [0, 1]:

   =================  ======  ================================================================================
   term               weight  value
   =================  ======  ================================================================================
   ``sync``           0.40    share of its clicks made in an (item, bucket) where >= ``sync_min_users`` of its
                              users clicked that item (buckets on two grids offset by half a bucket)
   ``no_impression``  0.25    share of its clicks on an item the user had not been shown before (in the range)
   ``ctr``            0.15    (CTR - ``max_ctr``) / (1 - ``max_ctr``) clipped, once it has
                              ``ctr_min_impressions`` impressions; 1 for that many clicks with fewer impressions
   ``device_users``   0.10    (most users on one of its devices - 2) / (``device_users_saturation`` - 2), clipped
   ``size``           0.10    (users - 1) / (``size_saturation`` - 1), clipped
   =================  ======  ================================================================================

   A component scoring at least ``flag_score`` (0.4) is a gang: e.g. nearly all clicks in step, or most
   clicks unshown with an abnormal CTR. A household (2-3 people on one IP, ordinary browsing) scores ~0.01.
4. **Blocklist.** The users of a gang — except bystanders (``spare_bystanders``: a housemate linked by the home
   IP whose own clicks were all shown first, none in step, CTR normal); a device or IP whose users in the
   range are all blocklisted (an IP only when shared by 2+ users, so a lone residential address, soon someone
   else's, is left alone); and any device seen with ``device_block_users`` users or more on its own.

Output: ``fraud_blocklist/version=<v>/`` (``BLOCKLIST_COLUMNS``: actor ``user:<id>`` / ``device:<id>`` /
``ip:<addr>``, kind, reason, component, score). The version is ``<start>-<end>-<digest of the rows>`` unless
given, so re-running a range rewrites the same version with the same rows. ``publish_blocklist_to_redis``
makes it the blocklist in force for ``FraudGuard``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from pathlib import Path
from typing import Any, cast

import pandas as pd
import redis
from pydantic import BaseModel, Field, model_validator
from pyspark import StorageLevel
from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F
from recstack.control.fraud import ActorKind, publish_blocklist
from recstack.features.keys import Col, LakeTable, RedisKey
from recstack.features.schema import EventType
from recstack.offline.ingest import Progress, no_progress
from recstack.offline.jobs.common import read_events

VERSION = "version"
COMPONENT = "component"
ATTR = "attr"
BLOCKLIST_COLUMNS = ("actor", "kind", "reason", COMPONENT, "score")
"""Columns of ``fraud_blocklist/version=<v>/``: actor (``<kind>:<id>``), kind (user / device / ip), reason,
component (the gang's smallest user id), score (the gang's score, 0..1)."""
SCORE_WEIGHTS: dict[str, float] = {"sync": 0.40, "no_impression": 0.25, "ctr": 0.15, "device_users": 0.10,
                                   "size": 0.10}  # fmt: skip
"""Weight of each component score term (they sum to 1; see the module docstring)."""


class GangDetectionSettings(BaseModel):
    """Thresholds of the offline anti-fraud job (the module docstring says how each is used)."""

    device_link_max_users: int = Field(
        default=100, ge=2, description="a device with 2..this many users links them"
    )
    ip_link_max_users: int = Field(
        default=20, ge=2, description="an IP with 2..this many users links them (above: NAT)"
    )
    device_block_users: int = Field(
        default=10, ge=2, description="a device with this many users is blocklisted alone"
    )
    sync_bucket_s: int = Field(
        default=60, ge=2, description="width of the synchronised-click buckets, seconds"
    )
    sync_min_users: int = Field(
        default=3, ge=2, description="users of one component on one item and bucket: in step"
    )
    sync_links: bool = Field(
        default=True, description="link users who click in step repeatedly (no shared attribute)"
    )
    sync_pair_min_items: int = Field(
        default=3, ge=1, description="distinct items clicked in step that link a pair"
    )
    sync_group_max_users: int = Field(
        default=50, ge=2, description="busier (item, bucket) cells link no pairs"
    )
    min_component_size: int = Field(default=3, ge=2, description="smaller components are not scored")
    min_component_clicks: int = Field(
        default=10, ge=1, description="components with fewer clicks are not scored"
    )
    max_ctr: float = Field(
        default=0.5, gt=0, lt=1, description="component CTR above this starts the ctr term"
    )
    ctr_min_impressions: int = Field(default=20, ge=1, description="impressions before the CTR is trusted")
    device_users_saturation: int = Field(
        default=6, ge=3, description="users on one device where that term reaches 1"
    )
    size_saturation: int = Field(default=20, ge=2, description="component size where the size term reaches 1")
    flag_score: float = Field(
        default=0.4, gt=0, le=1, description="a component scoring this or more is a gang"
    )
    spare_bystanders: bool = Field(
        default=True, description="keep gang members with clean own clicks off the list"
    )
    max_rounds: int = Field(default=50, ge=1, description="label-propagation rounds before the job gives up")

    @model_validator(mode="after")
    def _device_block_links(self) -> GangDetectionSettings:
        if self.device_block_users > self.device_link_max_users:
            raise ValueError("device_block_users must be <= device_link_max_users (a blocked device's users "
                             "must share its component)")  # fmt: skip
        return self


def blocklist_dir(lake_root: Path | str, version: str) -> Path:
    """Folder of one blocklist version in the lake."""
    return Path(lake_root) / LakeTable.FRAUD_BLOCKLIST / f"{VERSION}={version}"


def read_blocklist(spark: SparkSession, lake_root: Path | str, version: str) -> DataFrame:
    """The rows of blocklist ``version`` (``BLOCKLIST_COLUMNS``)."""
    path = blocklist_dir(lake_root, version)
    if not path.exists():
        raise FileNotFoundError(f"no fraud blocklist {version!r} at {path}: run the fraud job first")
    return spark.read.parquet(str(path)).select(*BLOCKLIST_COLUMNS)


# -- graph --------------------------------------------------------------------------------------------------
def shared_attributes(events: DataFrame) -> DataFrame:
    """Every (user, device / ip) pair of the events with the attribute's distinct user count:
    ``user_id, kind, value, n_users``. One shuffle: rows are partitioned by attribute, so the de-duplication
    and the per-attribute count run where the rows already are."""
    pairs = [
        events.where(F.col(column).isNotNull() & (F.col(column) != "")).select(
            Col.USER_ID, F.lit(kind.value).alias("kind"), F.col(column).alias("value")
        )
        for kind, column in ((ActorKind.DEVICE, Col.DEVICE_ID), (ActorKind.IP, Col.IP))
    ]
    by_attr = pairs[0].unionByName(pairs[1]).repartition("kind", "value")
    distinct = by_attr.distinct()
    return distinct.withColumn("n_users", F.count(F.lit(1)).over(Window.partitionBy("kind", "value")))


def click_cells(clicks: DataFrame, bucket_s: int) -> DataFrame:
    """Each click twice, in its bucket of two grids offset by half a bucket (so a pair of clicks a few
    seconds apart always shares a cell): ``event_id, user_id, item_id, grid, bucket``."""
    sec = F.unix_seconds(F.col(Col.TS))
    cells = F.array(
        F.struct(F.lit(0).alias("grid"), F.floor(sec / bucket_s).alias("bucket")),
        F.struct(F.lit(1).alias("grid"), F.floor((sec + bucket_s // 2) / bucket_s).alias("bucket")),
    )
    return clicks.select(Col.EVENT_ID, Col.USER_ID, Col.ITEM_ID, F.explode(cells).alias("c")).select(
        Col.EVENT_ID, Col.USER_ID, Col.ITEM_ID, "c.grid", "c.bucket"
    )


def sync_links(cells: DataFrame, s: GangDetectionSettings) -> DataFrame:
    """Pairs of users who clicked at least ``sync_pair_min_items`` distinct items in the same cell, as
    attribute memberships ``user_id, attr`` (attr ``sync:<low user>:<high user>``). Cells of more than
    ``sync_group_max_users`` users (a viral item) link nobody, which bounds the pairs per cell."""
    keys = [Col.ITEM_ID, "grid", "bucket"]
    # partitioned once by cell: the de-duplication, the cell size and the self-join need no other shuffle
    users = cells.select(*keys, Col.USER_ID).repartition(*keys).distinct()
    users = users.withColumn("n", F.count(F.lit(1)).over(Window.partitionBy(*keys)))
    crowded = users.where(F.col("n").between(2, s.sync_group_max_users)).drop("n")
    a = crowded.withColumnRenamed(Col.USER_ID, "u1")
    b = crowded.withColumnRenamed(Col.USER_ID, "u2")
    pairs = a.join(b, keys).where(F.col("u1") < F.col("u2"))
    linked = pairs.groupBy("u1", "u2").agg(F.countDistinct(Col.ITEM_ID).alias("items"))
    linked = linked.where(F.col("items") >= s.sync_pair_min_items)
    attr = F.concat(F.lit("sync:"), F.col("u1").cast("string"), F.lit(":"), F.col("u2").cast("string"))
    return linked.select(F.explode(F.array("u1", "u2")).alias(Col.USER_ID), attr.alias(ATTR))


def connected_components(members: DataFrame, max_rounds: int = 50) -> tuple[DataFrame, int]:
    """Connected components of the users of a bipartite user–attribute graph by min-label propagation.

    ``members``: ``user_id`` (long), ``attr`` (string). Returns ``user_id, component`` (the smallest user id
    of its component) for every user of ``members``, and the number of rounds run. Each round is two joins
    and an aggregation, checkpointed (the plan does not grow); it stops when a round changes no label.
    """
    # two copies, partitioned by user and by attribute: a round then shuffles only its two aggregations
    members = members.select(Col.USER_ID, ATTR)
    by_user = members.repartition(Col.USER_ID).distinct().persist(StorageLevel.MEMORY_AND_DISK)
    by_attr = members.repartition(ATTR).distinct().persist(StorageLevel.MEMORY_AND_DISK)
    labels = by_user.select(Col.USER_ID, F.col(Col.USER_ID).alias(COMPONENT)).distinct()
    try:
        for rounds in range(1, max_rounds + 1):
            attr_label = (
                by_user.join(labels, Col.USER_ID).groupBy(ATTR).agg(F.min(COMPONENT).alias(COMPONENT))
            )
            least = by_attr.join(attr_label, ATTR).groupBy(Col.USER_ID).agg(F.min(COMPONENT).alias("least"))
            # a user's new label is the least over attributes that include the user itself: never larger
            fresh = (
                labels.join(least, Col.USER_ID)
                .select(
                    Col.USER_ID,
                    F.col("least").alias(COMPONENT),
                    (F.col("least") < F.col(COMPONENT)).alias("changed"),
                )
                .localCheckpoint()
            )
            labels = fresh.drop("changed")
            if fresh.where("changed").limit(1).count() == 0:
                return labels, rounds
    finally:
        by_user.unpersist()
        by_attr.unpersist()
    raise RuntimeError(f"connected components: labels still changing after {max_rounds} rounds")


# -- scores -------------------------------------------------------------------------------------------------
def _clip(x: Column) -> Column:
    return F.least(F.greatest(x, F.lit(0.0)), F.lit(1.0))


def user_activity(
    events: DataFrame, cells: DataFrame, labels: DataFrame, s: GangDetectionSettings
) -> DataFrame:
    """Per linked user: ``impressions, clicks, unshown`` (clicks of an item not shown to the user before, in the
    range) and ``in_step`` (clicks in a cell where >= ``sync_min_users`` users of its component clicked)."""
    linked = events.join(labels, Col.USER_ID)
    kind = F.col(Col.EVENT_TYPE)
    is_imp, is_click = kind == EventType.IMPRESSION.value, kind == EventType.CLICK.value
    # partitioned by (user, item): the first impression of each pair is a window, not a join
    pair = Window.partitionBy(Col.USER_ID, Col.ITEM_ID)
    first_shown = F.min(F.when(is_imp, F.col(Col.TS))).over(pair)
    unshown = is_click & (first_shown.isNull() | (first_shown > F.col(Col.TS)))
    counts = linked.select(Col.USER_ID, is_imp.alias("imp"), is_click.alias("clk"), unshown.alias("uns"))
    counts = counts.groupBy(Col.USER_ID).agg(
        F.count_if(F.col("imp")).alias("impressions"), F.count_if(F.col("clk")).alias("clicks"),
        F.count_if(F.col("uns")).alias("unshown"),
    )  # fmt: skip

    cell = Window.partitionBy(COMPONENT, Col.ITEM_ID, "grid", "bucket")
    crowd = F.size(F.collect_set(Col.USER_ID).over(cell))
    stepped = (
        cells.join(labels, Col.USER_ID).withColumn("crowd", crowd).where(F.col("crowd") >= s.sync_min_users)
    )
    in_step = stepped.groupBy(Col.USER_ID).agg(F.countDistinct(Col.EVENT_ID).alias("in_step"))
    out = labels.join(counts, Col.USER_ID, "left").join(in_step, Col.USER_ID, "left")
    return out.fillna(0, subset=["impressions", "clicks", "unshown", "in_step"])


def ctr_term(clicks: Column, impressions: Column, s: GangDetectionSettings) -> Column:
    """The ``ctr`` score term (see the module docstring)."""
    excess = _clip((clicks / F.greatest(impressions, F.lit(1)) - s.max_ctr) / (1.0 - s.max_ctr))
    return F.when(impressions >= s.ctr_min_impressions, excess).otherwise(
        F.when(clicks >= s.ctr_min_impressions, F.lit(1.0)).otherwise(F.lit(0.0))
    )


def score_components(
    activity: DataFrame, shared: DataFrame, labels: DataFrame, s: GangDetectionSettings
) -> DataFrame:
    """One row per component of at least ``min_component_size`` users: its size, clicks, the score terms,
    ``score``, ``gang`` (flagged) and ``reason`` (the terms, for the audit)."""
    device_users = (shared.where(F.col("kind") == ActorKind.DEVICE.value).join(labels, Col.USER_ID)
                    .groupBy(COMPONENT).agg(F.max("n_users").alias("device_users")))  # fmt: skip
    agg = activity.groupBy(COMPONENT).agg(
        F.count(F.lit(1)).alias("users"), F.sum("impressions").alias("impressions"),
        F.sum("clicks").alias("clicks"), F.sum("unshown").alias("unshown"), F.sum("in_step").alias("in_step"),
    )  # fmt: skip
    agg = agg.where((F.col("users") >= s.min_component_size) & (F.col("clicks") >= s.min_component_clicks))
    agg = agg.join(device_users, COMPONENT, "left").fillna(0, subset=["device_users"])
    terms = {
        "sync": F.col("in_step") / F.col("clicks"),
        "no_impression": F.col("unshown") / F.col("clicks"),
        "ctr": ctr_term(F.col("clicks"), F.col("impressions"), s),
        "device_users": _clip((F.col("device_users") - 2) / (s.device_users_saturation - 2)),
        "size": _clip((F.col("users") - 1) / (s.size_saturation - 1)),
    }
    scored = agg.select("*", *[t.cast("double").alias(f"t_{name}") for name, t in terms.items()])
    score = sum((F.col(f"t_{name}") * w for name, w in SCORE_WEIGHTS.items()), F.lit(0.0))
    scored = scored.withColumn("score", F.round(score, 6))
    reason = F.concat(
        F.lit("gang:users="), F.col("users").cast("string"),
        *[F.concat(F.lit(f";{name}="), F.format_number(F.col(f"t_{name}"), 2)) for name in terms],
    )  # fmt: skip
    return scored.withColumn("gang", F.col("score") >= s.flag_score).withColumn("reason", reason)


# -- blocklist ----------------------------------------------------------------------------------------------
def gang_blocklist(
    activity: DataFrame, shared: DataFrame, components: DataFrame, labels: DataFrame, s: GangDetectionSettings
) -> DataFrame:
    """The blocklist rows (``BLOCKLIST_COLUMNS``) of the flagged components and the overcrowded devices."""
    gangs = components.where("gang").select(COMPONENT, "score", "reason")
    members = activity.join(gangs, COMPONENT)
    if s.spare_bystanders:
        own_ctr = ctr_term(F.col("clicks"), F.col("impressions"), s)
        members = members.where((F.col("in_step") > 0) | (F.col("unshown") > 0) | (own_ctr > 0))
    users = members.select(
        F.concat(F.lit(f"{ActorKind.USER.value}:"), F.col(Col.USER_ID).cast("string")).alias("actor"),
        F.lit(ActorKind.USER.value).alias("kind"), "reason", COMPONENT, "score",
    )  # fmt: skip

    # a device / IP is blocked when every user seen on it is: nobody else is blocked through it
    blocked = members.select(Col.USER_ID, F.lit(1).alias("blocked"))
    on_attr = shared.join(blocked, Col.USER_ID, "left").join(labels, Col.USER_ID, "left")
    attrs = on_attr.groupBy("kind", "value", "n_users").agg(
        F.count("blocked").alias("n_blocked"), F.min(COMPONENT).alias(COMPONENT)
    )
    all_blocked = F.col("n_blocked") == F.col("n_users")
    is_device = F.col("kind") == ActorKind.DEVICE.value
    crowded = is_device & (F.col("n_users") >= s.device_block_users)
    keep = (
        (is_device & all_blocked)
        | crowded
        | (
            (F.col("kind") == ActorKind.IP.value)
            & all_blocked
            & F.col("n_users").between(2, s.ip_link_max_users)
        )
    )
    attrs = attrs.where(keep).join(components.select(COMPONENT, "score"), COMPONENT, "left")
    why = F.when(all_blocked, F.concat(F.lit("gang_"), F.col("kind"))).otherwise(F.lit("shared_device"))
    others = attrs.select(
        F.concat(F.col("kind"), F.lit(":"), F.col("value")).alias("actor"), "kind",
        F.concat(why, F.lit(":users="), F.col("n_users").cast("string")).alias("reason"),
        COMPONENT, F.coalesce(F.col("score"), F.lit(0.0)).alias("score"),
    )  # fmt: skip
    return users.unionByName(others)


def blocklist_version(rows: pd.DataFrame, start: dt.date, end: dt.date) -> str:
    """``<start>-<end>-<sha1 of the sorted rows, 10 hex>``: the same inputs give the same version."""
    digest = hashlib.sha1()
    for row in rows.sort_values("actor").itertuples(index=False):
        digest.update(f"{row.actor}|{row.kind}|{row.reason}|{row.component}|{row.score:.6f}\n".encode())
    return f"{start:%Y%m%d}-{end:%Y%m%d}-{digest.hexdigest()[:10]}"


def publish_blocklist_to_redis(
    blocklist: DataFrame | pd.DataFrame,
    redis_url: str,
    prefix: str,
    version: str,
    previous_ttl_s: int = 86400,
) -> int:
    """Publish ``blocklist`` (a Spark or pandas frame with an ``actor`` column) as version ``version`` in force
    for ``FraudGuard`` (``control/fraud.publish_blocklist``). The version it replaces expires after
    ``previous_ttl_s`` (workers that have not re-read the pointer yet still find it). Returns the actors."""
    if isinstance(blocklist, pd.DataFrame):
        actors = [str(a) for a in blocklist["actor"]]
    else:
        actors = [row["actor"] for row in blocklist.select("actor").collect()]
    client = redis.Redis.from_url(redis_url)
    try:
        keys = RedisKey(prefix)
        previous = client.get(keys.fraud_blocklist_current())
        count = publish_blocklist(client, keys, actors, version)
        if previous is not None:
            old = previous.decode() if isinstance(previous, bytes) else str(previous)
            if old != version:
                client.expire(keys.fraud_blocklist(old), previous_ttl_s)
        return count
    finally:
        client.close()


def _counts(frame: DataFrame, **aggregates: Column) -> dict[str, int]:
    """Named aggregates of ``frame`` in one job, as ints (0 for an empty frame)."""
    row = frame.agg(*[a.alias(name) for name, a in aggregates.items()]).first()
    return {name: int(row[name] or 0) if row is not None else 0 for name in aggregates}


# -- the job ------------------------------------------------------------------------------------------------
def run_fraud_job(
    spark: SparkSession,
    lake_root: Path | str,
    start: dt.date,
    end: dt.date,
    settings: GangDetectionSettings | None = None,
    version: str | None = None,
    redis_url: str | None = None,
    key_prefix: str = "recstack",
    progress: Progress = no_progress,
) -> dict[str, Any]:
    """Find the gangs of ``[start, end]``, write their blocklist to ``fraud_blocklist/version=<v>/`` and, with
    ``redis_url``, publish it under ``key_prefix``. ``version``: default derived from the range and the rows.

    Returns the report: users scanned, linked users, components (2+ users), scored and flagged components,
    flagged users / devices / ips, label-propagation rounds, version, path and the actors published.
    """
    s = settings or GangDetectionSettings()
    columns = [Col.EVENT_ID, Col.EVENT_TYPE, Col.TS, Col.USER_ID, Col.ITEM_ID, Col.DEVICE_ID, Col.IP]
    events = read_events(spark, lake_root, start, end).select(*columns).persist(StorageLevel.MEMORY_AND_DISK)
    try:
        # 1. the bipartite user-attribute graph
        progress(f"fraud {start}..{end}: shared devices / IPs and in-step clicks")
        shared = shared_attributes(events).persist(StorageLevel.MEMORY_AND_DISK)
        cells = click_cells(events.where(F.col(Col.EVENT_TYPE) == EventType.CLICK.value), s.sync_bucket_s)
        link_max = F.when(F.col("kind") == ActorKind.DEVICE.value, s.device_link_max_users).otherwise(
            s.ip_link_max_users
        )
        members = shared.where(F.col("n_users").between(F.lit(2), link_max)).select(
            Col.USER_ID, F.concat(F.col("kind"), F.lit(":"), F.col("value")).alias(ATTR)
        )
        if s.sync_links:
            members = members.unionByName(sync_links(cells, s))

        # 2. connected components
        labels, rounds = connected_components(members, s.max_rounds)
        progress(f"fraud: components converged in {rounds} rounds")

        # 3. scores, 4. the blocklist
        activity = user_activity(events, cells, labels, s).localCheckpoint()
        components = score_components(activity, shared, labels, s).localCheckpoint()
        rows = cast(
            pd.DataFrame,
            gang_blocklist(activity, shared, components, labels, s).orderBy("kind", "actor").toPandas(),
        )
        version = version or blocklist_version(rows, start, end)
        path = blocklist_dir(lake_root, version)
        frame = spark.createDataFrame(
            rows, "actor string, kind string, reason string, component long, score double"
        )
        frame.coalesce(1).write.mode("overwrite").parquet(str(path))
        progress(f"fraud: {len(rows)} actors in blocklist {version}")

        report: dict[str, Any] = {
            "start": start.isoformat(), "end": end.isoformat(), VERSION: version, "path": str(path),
            "users_scanned": events.select(Col.USER_ID).distinct().count(),
            **_counts(labels.groupBy(COMPONENT).count(), linked_users=F.sum("count"),
                      components=F.count(F.when(F.col("count") >= 2, 1))),
            **_counts(components, scored_components=F.count(F.lit(1)), flagged_components=F.count(F.when(F.col("gang"), 1))),
            **{f"flagged_{k.value}s": int((rows["kind"] == k.value).sum()) for k in ActorKind},
            **_counts(shared.select("kind", "value", "n_users").distinct(),
                      crowded_devices=F.count(F.when((F.col("kind") == ActorKind.DEVICE.value)
                                                     & (F.col("n_users") >= s.device_block_users), 1)),
                      busy_ips=F.count(F.when((F.col("kind") == ActorKind.IP.value)
                                              & (F.col("n_users") > s.ip_link_max_users), 1))),
            "rounds": rounds, "published": None,
        }  # fmt: skip
        if redis_url is not None:
            report["published"] = publish_blocklist_to_redis(rows, redis_url, key_prefix, version)
            progress(f"fraud: blocklist {version} published to redis ({report['published']} actors)")
        shared.unpersist()
        return report
    finally:
        events.unpersist()
