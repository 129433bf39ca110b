"""One factory: a behavior's typed config in, its whole partitioned asset graph out.

    fact_<b>  ->  <b>_firstlast_<g>  ->  <b>_activation_<g>  ->  <b>_transitions_<g>     for each grain g
                                                        ->  growth, cohorts, distributions
                                     daily activation  ->  engagement, engagement_transitions, stickiness

Every asset has a single-run backfill policy (a range is processed in order inside one run, rather
than one partition per daemon tick), runs in its engine's concurrency pool (`duckdb` or `spark`: one
writer at a time), and reports per-partition
metadata so the UI plots it over partitions. The Dagster code here stays thin: the work is in
`steps`, the SQL in `sql`, the invariants in `checks`.
"""

import datetime as dt
import logging
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import dagster as dg

from activation_assets.checks import invariants as inv
from activation_assets.models import sql
from activation_assets.pipeline import steps
from activation_assets.config import BehaviorConfig, Grain
from activation_assets.orchestration.partitions import fact_partitions_def, partitions_def
from activation_assets.engines.base import ActivationError, connect

RESOURCE = "warehouse"  # DuckDBResource or SparkResource, bound in definitions.py
SINGLE_RUN = dg.BackfillPolicy.single_run()
PREVIOUS_PARTITION = dg.TimeWindowPartitionMapping(start_offset=-1, end_offset=-1)


def days_of_period() -> dg.TimeWindowPartitionMapping:
    """A weekly or monthly period may begin before start_date: its missing first days are no error."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dg.BetaWarning)  # this beta parameter is what we need
        return dg.TimeWindowPartitionMapping(allow_nonexistent_upstream_partitions=True)

progress_log = logging.getLogger("activation_assets.progress")

# Declarative automation (evaluated only while the `activation_automation` sensor runs):
# - a fact materializes its newest day once that day has ended;
# - everything downstream follows any updated dependency, in *any* partition — Dagster's eager()
#   looks at the latest time window only, which would leave late corrections unpropagated. A
#   correction at day d requests the whole self-dependent chain after it in the same tick.
FACT_AUTOMATION = dg.AutomationCondition.on_missing()
PROPAGATE = (
    (dg.AutomationCondition.newly_missing() | dg.AutomationCondition.any_deps_updated()).since_last_handled()
    & ~dg.AutomationCondition.any_deps_missing()
    & ~dg.AutomationCondition.any_deps_in_progress()
    & ~dg.AutomationCondition.in_progress()
).with_label("propagate updates to every partition")


def _col(name: str, type_: str, description: str) -> dg.TableColumn:
    return dg.TableColumn(name=name, type=type_, description=description)


FACT_COLUMNS = [
    _col("period_start", "DATE", "the fact partition: the row's local date"),
    _col("user_id", "source type", "the configured user column, renamed"),
    _col("occurred_at", "source type", "the configured time column, renamed (naive = UTC)"),
    _col("activity_date", "DATE", "occurred_at in the behavior's timezone, as a date"),
]
FIRSTLAST_COLUMNS = [
    _col("period_start", "DATE", "the partition (period start)"),
    _col("user_id", "source type", "a user seen by the end of the period"),
    _col("first_active_period", "DATE", "start of the user's first active period"),
    _col("last_active_period", "DATE", "start of the latest active period <= period_start"),
    _col("streak_start_period", "DATE", "first period of the run of active periods ending at last_active_period"),
    _col("prior_active_period", "DATE", "latest active period before that run (null if none)"),
    _col("active_periods", "INTEGER", "active periods from the first one to period_start"),
]
DAYS_SEEN_BITS = _col("days_seen_bits", "BIGINT", "daily grain: bit i (2^i) set iff active i days before, i = 0..62")
ENGAGEMENT_STATE_COLUMNS = [
    DAYS_SEEN_BITS,
    _col("engagement_state", "VARCHAR",
         "daily grain: new | current | reactivated | resurrected | at_risk_wau | at_risk_mau | dormant"),
    _col("prev_engagement_state", "VARCHAR", "daily grain: engagement state on the day before; null iff new"),
]
ACTIVATION_COLUMNS = [
    _col("period_start", "DATE", "start of the period p"),
    _col("user_id", "source type", "the user u"),
    _col("state", "VARCHAR", "new | retained | reactivated | inactive"),
    _col("prev_state", "VARCHAR", "state in p-1; null iff state = 'new'"),
    _col("first_active_period", "DATE", "start of first(u)"),
    _col("last_active_period", "DATE", "latest active period <= p (= p when active)"),
    _col("streak", "INTEGER", "consecutive active periods ending at p; 0 when inactive"),
    _col("inactive_streak", "INTEGER", "consecutive inactive periods ending at p; 0 when active"),
    _col("return_gap", "INTEGER", "reactivated: inactive periods this return ended (>= 1); else null"),
    _col("active_periods", "INTEGER", "active periods from first(u) to p, both included"),
]
TRANSITIONS_COLUMNS = [
    _col("period_start", "DATE", "start of the period"),
    _col("from_state", "VARCHAR", "prev_state (null for the null -> new entry)"),
    _col("to_state", "VARCHAR", "state"),
    _col("users", "BIGINT", "users making that transition (> 0)"),
]


def _schema(columns: list[dg.TableColumn]) -> dict:
    return {"dagster/column_schema": dg.TableSchema(columns=columns)}


def _periods(context: dg.AssetExecutionContext) -> list[dt.date]:
    return [dt.date.fromisoformat(key) for key in context.partition_keys]


def _progress(context: dg.AssetExecutionContext, label: str, every_seconds: float = 5.0) -> steps.Progress:
    """Log the first partition, then at most every few seconds, then the last."""
    last_report = [0.0]

    def report(done: int, total: int, period: dt.date) -> None:
        now = time.monotonic()
        if done in (1, total) or now - last_report[0] >= every_seconds:
            last_report[0] = now
            message = f"{label}: {done}/{total} partitions done (through {period})"
            context.log.info(message)
            progress_log.info(message)

    return report


def _failure(exc: ActivationError) -> dg.Failure:
    return dg.Failure(description=str(exc), allow_retries=False)


def _check_results(
    behavior: BehaviorConfig, grain: Grain, conn, checks: Sequence[inv.Check], periods: Sequence[dt.date],
    asset_key: dg.AssetKey | None = None,  # needed where a step materializes several assets
) -> list[dg.AssetCheckResult]:
    outcomes: dict[str, inv.CheckOutcome] = {}
    inv.evaluate_range(conn, checks, behavior, grain, periods, outcomes)
    results = []
    for outcome in outcomes.values():
        metadata = {
            "partitions_checked": len(outcome.partitions),
            "first_partition": str(outcome.partitions[0]),
            "last_partition": str(outcome.partitions[-1]),
            "violations": outcome.violations,
            "summary": outcome.summary(),
        }
        if not outcome.passed:
            metadata["failing_partitions"] = dg.MetadataValue.json([str(p) for p in list(outcome.failing)[:50]])
        if outcome.examples:
            metadata["examples"] = dg.MetadataValue.md(_markdown(outcome.examples))
        results.append(dg.AssetCheckResult(
            asset_key=asset_key, check_name=outcome.check.name, passed=outcome.passed, metadata=metadata,
            severity=dg.AssetCheckSeverity.ERROR, description=outcome.summary(),
        ))
    return results


def _markdown(rows: list[dict]) -> str:
    if not rows:
        return "(no rows)"
    names = list(rows[0])
    lines = ["| " + " | ".join(names) + " |", "|" + " --- |" * len(names)]
    lines += ["| " + " | ".join("" if r[n] is None else str(r[n]) for n in names) + " |" for r in rows]
    return "\n".join(lines)


def _preview(wh, table: str, period: dt.date, order: str, limit: int = 10) -> dg.MetadataValue:
    names, rows = wh.query_named(
        f"SELECT * FROM {sql.ident(table)} WHERE period_start = {sql.date_lit(period)} ORDER BY {order} LIMIT {limit}")
    return dg.MetadataValue.md(_markdown([dict(zip(names, map(inv._plain, row))) for row in rows]))


def _specs(key: dg.AssetKey, checks: Sequence[inv.Check], grain: Grain, blocking: bool) -> list[dg.AssetCheckSpec]:
    return [
        dg.AssetCheckSpec(name=c.name, asset=key, description=c.description, blocking=blocking)
        for c in inv.checks_for(checks, grain)
    ]


def _common(behavior: BehaviorConfig, layer: str, grain: Grain | None, engine: str) -> dict:
    tags = {"behavior": behavior.name, "layer": layer}
    automation = FACT_AUTOMATION if grain is None else PROPAGATE
    if grain is not None:
        tags["grain"] = grain.value
    return dict(
        group_name=behavior.name,
        kinds={engine, "sql"},
        owners=list(behavior.owners) or None,
        tags=tags,
        pool=engine,
        required_resource_keys={RESOURCE},
        backfill_policy=SINGLE_RUN,
        automation_condition=automation,
    )


def upstream_dep(behavior: BehaviorConfig, upstream: dg.PartitionsDefinition | None = None) -> list[dg.AssetDep]:
    """The fact's dependency on the asset (or dbt model) its source reads, if any.

    A daily-partitioned upstream in the behavior's timezone maps day to day; any other partitioned
    upstream is depended on as a whole (its days are not the fact's local days); an unpartitioned
    one (a dbt model) is a whole anyway. With the upstream's partitions unknown (an asset defined
    elsewhere), Dagster's default mapping applies: day to day for a daily upstream in the same zone.
    """
    key = behavior.source.upstream
    if key is None:
        return []
    mapping = None
    if upstream is not None:
        same_days = (isinstance(upstream, dg.TimeWindowPartitionsDefinition)
                     and upstream.cron_schedule == fact_partitions_def(behavior).cron_schedule
                     and (upstream.timezone or "UTC") == behavior.timezone)
        mapping = dg.TimeWindowPartitionMapping() if same_days else dg.AllPartitionMapping()
    return [dg.AssetDep(dg.AssetKey(list(key)), partition_mapping=mapping)]


def fact_asset(
    behavior: BehaviorConfig, engine: str = "duckdb", upstream: dg.PartitionsDefinition | None = None,
) -> dg.AssetsDefinition:
    name = sql.fact_table(behavior.name)
    window = f"[{behavior.start_date}, {behavior.end_date or 'open'}]"

    @dg.asset(
        name=name,
        deps=upstream_dep(behavior, upstream),
        partitions_def=fact_partitions_def(behavior),
        description=(
            f"Valid `{behavior.name}` events, one row each, partitioned by local date in {behavior.timezone}.\n\n"
            f"Source: `{behavior.source.describe()}`; `{behavior.user_column}` -> `user_id`,"
            f" `{behavior.time_column}` -> `occurred_at`. Rows without a user or a time, outside"
            f" {window}, and exact duplicates are dropped and counted in the metadata."
        ),
        metadata={**_schema(FACT_COLUMNS), "source": behavior.source.describe()},
        **_common(behavior, "fact", None, engine),
    )
    def _fact(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        days = _periods(context)
        try:
            with connect(getattr(context.resources, RESOURCE)) as conn:
                outcome = steps.materialize_fact(conn, behavior, days)
                preview = _preview(conn, name, days[-1], "user_id, occurred_at")
        except ActivationError as exc:
            raise _failure(exc) from None
        for day, numbers in outcome.per_day.items():
            context.add_asset_metadata(
                {"dagster/row_count": numbers["rows"], **{k: v for k, v in numbers.items() if k != "rows"}},
                partition_key=day.isoformat(),
            )
        # Source-wide counts come with a run that read the whole source (every day, or a text
        # time column); a run of some days reads only what can fall on them.
        dropped = {f"source_{k}": v for k, v in outcome.source.items()}
        scope = "whole source" if outcome.source else "the run's days only (source-wide counts: a run of every day)"
        read = {"files_read": outcome.files_read} if outcome.files_read is not None else {}
        context.log.info(
            f"{name}: {len(days)} day(s), {sum(n['rows'] for n in outcome.per_day.values())} rows written;"
            f" read: {scope}; {dropped or ''}"
        )
        return dg.MaterializeResult(metadata={
            **dropped,
            **read,
            "source_read": scope,
            "dagster/column_schema": dg.TableSchema(
                columns=[dg.TableColumn(n, t) for n, t in outcome.columns.items()]),
            "preview": preview,
        })

    return _fact


def firstlast_asset(behavior: BehaviorConfig, grain: Grain, engine: str = "duckdb") -> dg.AssetsDefinition:
    name = sql.firstlast_table(behavior.name, grain)
    key = dg.AssetKey(name)

    @dg.asset(
        name=name,
        partitions_def=partitions_def(behavior, grain),
        deps=[
            dg.AssetDep(sql.fact_table(behavior.name), partition_mapping=days_of_period()),
            dg.AssetDep(key, partition_mapping=PREVIOUS_PARTITION),
        ],
        check_specs=_specs(key, inv.FIRSTLAST_CHECKS, grain, blocking=True),
        description=(
            f"The incremental state of `{behavior.name}` at the {grain} grain: one row per user seen by"
            " the end of the period, with their first and last active periods and current streak."
            " Each partition is the previous one updated with the period's active users only."
        ),
        metadata=_schema(FIRSTLAST_COLUMNS + ([DAYS_SEEN_BITS] if grain is Grain.daily else [])),
        **_common(behavior, "firstlast", grain, engine),
    )
    def _firstlast(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        periods = _periods(context)
        try:
            with connect(getattr(context.resources, RESOURCE)) as conn:
                rows = steps.materialize_firstlast(conn, behavior, grain, periods, _progress(context, name))
                results = _check_results(behavior, grain, conn, inv.FIRSTLAST_CHECKS, periods)
        except ActivationError as exc:
            raise _failure(exc) from None
        for period, count in rows.items():
            context.add_asset_metadata({"dagster/row_count": count}, partition_key=period.isoformat())
        return dg.MaterializeResult(check_results=results)

    return _firstlast


def activation_asset(behavior: BehaviorConfig, grain: Grain, engine: str = "duckdb") -> dg.AssetsDefinition:
    name = sql.activation_table(behavior.name, grain)
    key = dg.AssetKey(name)

    @dg.asset(
        name=name,
        partitions_def=partitions_def(behavior, grain),
        deps=[
            dg.AssetDep(sql.firstlast_table(behavior.name, grain)),
            dg.AssetDep(key, partition_mapping=PREVIOUS_PARTITION),
        ],
        check_specs=_specs(key, inv.ACTIVATION_CHECKS, grain, blocking=True),
        description=(
            f"Every user of `{behavior.name}` in every {grain.value} period since their first: `new`,"
            " `retained`, `reactivated` or `inactive`, with the previous state, streaks, return gap and"
            " active periods. Table and columns follow the activation contract."
        ),
        metadata=_schema(ACTIVATION_COLUMNS + (ENGAGEMENT_STATE_COLUMNS if grain is Grain.daily else [])),
        **_common(behavior, "activation", grain, engine),
    )
    def _activation(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        periods = _periods(context)
        try:
            with connect(getattr(context.resources, RESOURCE)) as conn:
                counts = steps.materialize_activation(conn, behavior, grain, periods, _progress(context, name))
                results = _check_results(behavior, grain, conn, inv.ACTIVATION_CHECKS, periods)
                preview = _preview(conn, name, periods[-1], "state, user_id")
        except ActivationError as exc:
            raise _failure(exc) from None
        for period, numbers in counts.items():
            active = numbers["new"] + numbers["retained"] + numbers["reactivated"]
            context.add_asset_metadata(
                {"dagster/row_count": numbers["users"], "active": active,
                 **{k: v for k, v in numbers.items() if k != "users"}},
                partition_key=period.isoformat(),
            )
        return dg.MaterializeResult(check_results=results, metadata={"preview": preview})

    return _activation


GROWTH_COLUMNS = [
    _col("period_start", "DATE", "start of the period"),
    _col("active", "BIGINT", "new + retained + reactivated"),
    _col("new", "BIGINT", "first active period"),
    _col("retained", "BIGINT", "active in p and p-1"),
    _col("reactivated", "BIGINT", "active in p, not in p-1 (resurrected)"),
    _col("churned", "BIGINT", "active in p-1, inactive in p"),
    _col("dormant", "BIGINT", "inactive in p-1 and p"),
    _col("users_ever", "BIGINT", "all users seen by the end of p (rows of the activation partition)"),
    _col("active_prev", "BIGINT", "active in p-1 (= retained + churned)"),
    _col("active_change", "BIGINT", "new + reactivated - churned (= active - active_prev)"),
    _col("retention_rate", "DOUBLE", "retained / active_prev"),
    _col("quick_ratio", "DOUBLE", "(new + reactivated) / churned; null when churned is 0"),
]
COHORTS_COLUMNS = [
    _col("period_start", "DATE", "the period p"),
    _col("cohort", "DATE", "first active period of the cohort's users"),
    _col("age", "INTEGER", "periods from the cohort to p"),
    _col("cohort_size", "BIGINT", "users in the cohort"),
    _col("active_users", "BIGINT", "of them, active in p"),
    _col("retention", "DOUBLE", "active_users / cohort_size"),
]
DISTRIBUTIONS_COLUMNS = [
    _col("period_start", "DATE", "the period p"),
    _col("measure", "VARCHAR", "return_gap (reactivated users) or streak (active users)"),
    _col("bucket", "VARCHAR", "1, 2, 3-6, 7-13, 14-29, 30+ periods"),
    _col("bucket_start", "INTEGER", "first value of the bucket, for ordering"),
    _col("users", "BIGINT", "users in the bucket"),
]


def _derived_asset(
    behavior: BehaviorConfig, grain: Grain, name: str, layer: str, description: str,
    columns: list[dg.TableColumn], step: Callable, checks: Sequence[inv.Check], order: str,
    partition_metadata: Callable[[object], dict], engine: str,
) -> dg.AssetsDefinition:
    """An asset computed from the same period's partition of activation alone."""
    key = dg.AssetKey(name)

    @dg.asset(
        name=name,
        partitions_def=partitions_def(behavior, grain),
        deps=[dg.AssetDep(sql.reads(behavior.name, grain, name))],
        check_specs=_specs(key, checks, grain, blocking=False),
        description=description,
        metadata=_schema(columns),
        **_common(behavior, layer, grain, engine),
    )
    def _derived(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        periods = _periods(context)
        try:
            with connect(getattr(context.resources, RESOURCE)) as conn:
                numbers = step(conn, behavior, grain, periods, _progress(context, name))
                results = _check_results(behavior, grain, conn, checks, periods)
                preview = _preview(conn, name, periods[-1], order)
        except ActivationError as exc:
            raise _failure(exc) from None
        for period, value in numbers.items():
            context.add_asset_metadata(partition_metadata(value), partition_key=period.isoformat())
        return dg.MaterializeResult(check_results=results, metadata={"preview": preview})

    return _derived


def _numbers(values: dict) -> dict:
    return {k: v for k, v in values.items() if v is not None}


def transitions_asset(behavior: BehaviorConfig, grain: Grain, engine: str = "duckdb") -> dg.AssetsDefinition:
    return _derived_asset(
        behavior, grain, sql.transitions_table(behavior.name, grain), "transitions",
        f"How `{behavior.name}` users moved into each {grain.value} period: users per"
        " (from_state, to_state) pair, the activation table grouped by (prev_state, state).",
        TRANSITIONS_COLUMNS, steps.materialize_transitions, inv.TRANSITIONS_CHECKS,
        "from_state NULLS FIRST, to_state",
        lambda pairs: {"dagster/row_count": sum(1 for v in pairs.values() if v), **pairs},
        engine,
    )


def growth_asset(behavior: BehaviorConfig, grain: Grain, engine: str = "duckdb") -> dg.AssetsDefinition:
    return _derived_asset(
        behavior, grain, sql.growth_table(behavior.name, grain), "growth",
        f"Growth accounting of `{behavior.name}` per {grain.value} period: active = new + retained +"
        " reactivated, active_prev = retained + churned, with dormant users, retention rate and quick"
        " ratio. One row per period; the UI plots each number over partitions.",
        GROWTH_COLUMNS, steps.materialize_growth, inv.GROWTH_CHECKS, "period_start",
        lambda row: {"dagster/row_count": 1, **_numbers(row)},
        engine,
    )


def cohorts_asset(behavior: BehaviorConfig, grain: Grain, engine: str = "duckdb") -> dg.AssetsDefinition:
    return _derived_asset(
        behavior, grain, sql.cohorts_table(behavior.name, grain), "cohorts",
        f"Retention by cohort for `{behavior.name}` at the {grain.value} grain: for each cohort (first"
        " active period) its size and the users active at the age this period is for it — the data"
        " behind the retention triangle, one diagonal per partition.",
        COHORTS_COLUMNS, steps.materialize_cohorts, inv.COHORTS_CHECKS, "cohort DESC",
        lambda rows: {"dagster/row_count": rows},
        engine,
    )


def distributions_asset(behavior: BehaviorConfig, grain: Grain, engine: str = "duckdb") -> dg.AssetsDefinition:
    return _derived_asset(
        behavior, grain, sql.distributions_table(behavior.name, grain), "distributions",
        f"Bucketed distributions of `{behavior.name}` per {grain.value} period: the return gap of"
        " reactivated users and the streak of active users, in periods.",
        DISTRIBUTIONS_COLUMNS, steps.materialize_distributions, (), "measure, bucket_start",
        lambda buckets: {"dagster/row_count": sum(1 for v in buckets.values() if v), **buckets},
        engine,
    )


# --- rolling engagement (daily grain) --------------------------------------------------------------

ENGAGEMENT_COLUMNS = [
    _col("period_start", "DATE", "the day d"),
    _col("dau", "BIGINT", "users active on d (= new + current + reactivated + resurrected)"),
    _col("wau", "BIGINT", "users active in [d-W+1, d] (= dau + at_risk_wau)"),
    _col("mau", "BIGINT", "users active in [d-M+1, d] (= wau + at_risk_mau)"),
    _col("new", "BIGINT", "first active day is d"),
    _col("current", "BIGINT", "active on d and on some day of [d-W+1, d-1]"),
    _col("reactivated", "BIGINT", "active on d, not in [d-W+1, d-1], some day in [d-M+1, d-W]"),
    _col("resurrected", "BIGINT", "active on d, not in [d-M+1, d-1] (not new)"),
    _col("at_risk_wau", "BIGINT", "not active on d, active in [d-W+1, d-1]"),
    _col("at_risk_mau", "BIGINT", "not active in [d-W+1, d], active in [d-M+1, d-W]"),
    _col("dormant", "BIGINT", "not active in [d-M+1, d]"),
    _col("users_ever", "BIGINT", "users seen by the end of d (rows of the daily activation partition)"),
    _col("dau_mau", "DOUBLE", "dau / mau (stickiness); null when mau = 0"),
    _col("wau_mau", "DOUBLE", "wau / mau; null when mau = 0"),
    *(_col(rate, "DOUBLE", f"share of yesterday's {state} users active on d (null when none)")
      for rate, state in sql.RETENTION_RATES),
]
STICKINESS_COLUMNS = [
    _col("period_start", "DATE", "the day d"),
    _col("window", "VARCHAR", "week (the W days ending on d) or month (the M days ending on d)"),
    _col("active_days", "INTEGER", "active days in the window: 1..W or 1..M"),
    _col("users", "BIGINT", "users with that many active days (> 0)"),
]


def _windows(behavior: BehaviorConfig) -> str:
    engagement = behavior.engagement
    return f"W = {engagement.week_days} days, M = {engagement.month_days} days"


@dataclass(frozen=True)
class _EngagementPart:
    """One asset of the rolling-engagement multi-asset."""
    table: str
    layer: str
    description: str
    columns: list[dg.TableColumn]
    checks: Sequence[inv.Check]
    order: str
    partition_metadata: Callable[[dict], dict]


def _engagement_parts(behavior: BehaviorConfig) -> list[_EngagementPart]:
    """In the order they are written (`sql.engagement_tables`)."""
    transitions, engagement, stickiness = sql.engagement_tables(behavior.name)
    return [
        _EngagementPart(
            transitions, "engagement_transitions",
            f"How `{behavior.name}` users moved between the daily engagement states ({_windows(behavior)}):"
            " users per (from_state, to_state), the daily activation rows grouped by (prev_engagement_state,"
            " engagement_state).",
            TRANSITIONS_COLUMNS, inv.ENGAGEMENT_TRANSITIONS_CHECKS, "from_state NULLS FIRST, to_state",
            lambda pairs: {"dagster/row_count": len(pairs), **pairs},
        ),
        _EngagementPart(
            engagement, "engagement",
            f"Rolling engagement of `{behavior.name}` per day ({_windows(behavior)}): DAU, WAU, MAU, stickiness"
            " (dau/mau), users in each of Duolingo's daily states, and the next-day retention rates of"
            " yesterday's states (nurr, curr, rurr, surr, iwaurr, imaurr, drr), summed off the day's engagement"
            " transitions. The states are read off the 63-day bit history in the daily FirstLast: no step"
            " scans the fact history.",
            ENGAGEMENT_COLUMNS, inv.ENGAGEMENT_CHECKS, "period_start",
            lambda row: {"dagster/row_count": 1, **_numbers(row)},
        ),
        _EngagementPart(
            stickiness, "stickiness",
            f"Stickiness of `{behavior.name}` per day ({_windows(behavior)}): users by their number of active"
            " days in the week and in the month ending on the day (Amplitude's stickiness).",
            STICKINESS_COLUMNS, inv.STICKINESS_CHECKS, '"window" DESC, active_days',
            lambda row: {"dagster/row_count": row["rows"], **_numbers({k: v for k, v in row.items() if k != "rows"})},
        ),
    ]


def rolling_engagement_asset(behavior: BehaviorConfig, grain: Grain, engine: str = "duckdb") -> dg.AssetsDefinition:
    """The three rolling-engagement assets, computed in one step (a multi-asset): a day's engagement
    transitions and stickiness are summed off one pass over its activation rows, which three steps
    would read twice, and their writes share one transaction. In the UI each is its own asset, with
    its partitions, checks, metadata and plots, and each can be materialized alone."""
    parts, common = _engagement_parts(behavior), _common(behavior, "engagement", grain, engine)
    spec = {k: common[k] for k in ("group_name", "kinds", "owners", "automation_condition")}
    specs = [
        dg.AssetSpec(
            key=part.table, deps=[sql.reads(behavior.name, grain, part.table)], description=part.description,
            metadata=_schema(part.columns), tags={**common["tags"], "layer": part.layer}, **spec,
        )
        for part in parts
    ]
    name = f"{behavior.name}_rolling_engagement_daily"

    @dg.multi_asset(
        name=name,
        specs=specs,
        check_specs=[c for part in parts for c in _specs(dg.AssetKey(part.table), part.checks, grain, blocking=False)],
        can_subset=True,
        partitions_def=partitions_def(behavior, grain),
        **{k: common[k] for k in ("pool", "required_resource_keys", "backfill_policy")},
    )
    def _rolling_engagement(context: dg.AssetExecutionContext):
        periods = _periods(context)
        chosen = [part for part in parts if dg.AssetKey(part.table) in context.selected_asset_keys]
        written = []
        try:
            with connect(getattr(context.resources, RESOURCE)) as conn:
                numbers = steps.materialize_rolling_engagement(
                    conn, behavior, grain, periods, [part.table for part in chosen], _progress(context, name))
                for part in chosen:
                    key = dg.AssetKey(part.table)
                    checks = [c for c in part.checks
                              if dg.AssetCheckKey(key, c.name) in context.selected_asset_check_keys]
                    written.append((part, _check_results(behavior, grain, conn, checks, periods, key) if checks else [],
                                    _preview(conn, part.table, periods[-1], part.order)))
        except ActivationError as exc:
            raise _failure(exc) from None
        for part, results, preview in written:
            for period, value in numbers[part.table].items():
                context.add_asset_metadata(part.partition_metadata(value), asset_key=dg.AssetKey(part.table),
                                           partition_key=period.isoformat())
            yield dg.MaterializeResult(asset_key=part.table, check_results=results, metadata={"preview": preview})

    return _rolling_engagement


GRAIN_ASSETS: tuple[Callable[[BehaviorConfig, Grain, str], dg.AssetsDefinition], ...] = (
    firstlast_asset, activation_asset, transitions_asset, growth_asset, cohorts_asset, distributions_asset,
)
DAILY_ASSETS: tuple[Callable[[BehaviorConfig, Grain, str], dg.AssetsDefinition], ...] = (rolling_engagement_asset,)
grain_tables = sql.grain_tables  # the assets of one grain, in dependency order


def behavior_assets(
    behavior: BehaviorConfig, engine: str = "duckdb", upstream: dg.PartitionsDefinition | None = None,
) -> list[dg.AssetsDefinition]:
    """The whole graph of one behavior: its fact, then per grain FirstLast, activation, and what is
    read off activation (transitions, growth, cohorts, distributions; on the daily grain also the
    rolling engagement, its transitions and stickiness). `engine` only labels the assets (kind,
    pool): the resource bound in definitions.py decides where they run."""
    return [fact_asset(behavior, engine, upstream)] + [
        build(behavior, grain, engine) for grain in behavior.grains
        for build in GRAIN_ASSETS + (DAILY_ASSETS if grain is Grain.daily else ())
    ]
