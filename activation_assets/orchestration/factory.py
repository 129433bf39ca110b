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

from activation_assets import tables
from activation_assets.checks import invariants as inv
from activation_assets.models import sql
from activation_assets.pipeline import steps
from activation_assets.config import BehaviorConfig, Grain
from activation_assets.orchestration.partitions import fact_partitions_def, forecast_partitions_def, in_view, partitions_def
from activation_assets.orchestration.resources import RESOURCE, warehouse_of

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
# The forecasts read a window of days that the daily chain rewrites one after the other, so a day of
# the window is often written while a forecast run is in flight. Under PROPAGATE that run's own
# materialization counts as having handled the update and the forecast stays stale (seen in the
# browser test); here only a new request forgets an update.
FOLLOW_WINDOW = (
    (dg.AutomationCondition.newly_missing() | dg.AutomationCondition.any_deps_updated()).since(
        dg.AutomationCondition.newly_requested() | dg.AutomationCondition.initial_evaluation())
    & ~dg.AutomationCondition.any_deps_missing()
    & ~dg.AutomationCondition.any_deps_in_progress()
    & ~dg.AutomationCondition.in_progress()
).with_label("propagate updates of any day of the window")


# How a column's type reads in the definition when it is the source's (the user id, the time column);
# a materialization records the warehouse's own types (`_columns`), which the UI shows instead.
SHOWN_TYPES = {tables.USER: "the source's", tables.SOURCE: "the source's"}


def _schema(relation: tables.Relation, grain: Grain | None = None, extra: Sequence[tables.Column] = ()) -> dict:
    """Dagster's column schema of a relation, from its one definition (`tables`)."""
    return {"dagster/column_schema": dg.TableSchema(columns=[
        dg.TableColumn(name=c.name, type=SHOWN_TYPES.get(c.type, c.type), description=c.description)
        for c in (*relation.columns_for(grain), *extra)])}


def _columns(wh, table: str) -> dict:
    """The relation's columns with the warehouse's types (the user id's is the source's), for the last
    partition's event: the UI shows the latest materialization's schema with the definition's
    descriptions (`_schema`)."""
    return {"dagster/column_schema": dg.TableSchema(
        columns=[dg.TableColumn(name, type) for name, type in wh.table_column_types(table).items()])}


def _periods(context: dg.AssetExecutionContext) -> list[dt.date]:
    return [dt.date.fromisoformat(key) for key in context.partition_keys]


def _progress(context: dg.AssetExecutionContext, label: str, every_seconds: float = 5.0) -> steps.Progress:
    """For a range: log the first partition, then at most every few seconds, then the last. A
    one-partition run says nothing its step's end does not (each line is an event in the run's log)."""
    last_report = [0.0]

    def report(done: int, total: int, period: dt.date) -> None:
        now = time.monotonic()
        if total > 1 and (done in (1, total) or now - last_report[0] >= every_seconds):
            last_report[0] = now
            message = f"{label}: {done}/{total} partitions done (through {period})"
            context.log.info(message)
            progress_log.info(message)

    return report


# A check is recorded once per run, with the partitions it covered and those it failed on: not per
# partition. Dagster 1.13 can record a partitioned check per partition, but each record is an
# event (about 16 ms on SQLite, batching or not: 21 checks x 112 days would add 37-47 s to a
# backfill of a minute), and with partitioned checks it shows every partition of a range that has
# no record of its own as "Skipped", which would say that checks which passed did not run.
def _check_evaluations(
    behavior: BehaviorConfig, grain: Grain, conn, checks: Sequence[inv.Check], periods: Sequence[dt.date],
    asset_key: dg.AssetKey, written: bool,
) -> list[dg.AssetCheckResult | dg.AssetCheckEvaluation]:
    """A result per check where the step wrote the asset, as Dagster expects of the step's check
    outputs (a blocking check's failure fails the step, so nothing downstream runs on it; an
    evaluation event instead leaves Dagster warning that the outputs are missing). Checks run alone
    are logged as evaluations: there Dagster 1.13's AssetCheckResult fails looking up its target
    materialization through a partition mapping, and nothing downstream waits on them."""
    outcomes: dict[str, inv.CheckOutcome] = {}
    inv.evaluate_range(conn, checks, behavior, grain, periods, outcomes)
    evaluations = []
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
        evaluations.append((dg.AssetCheckResult if written else dg.AssetCheckEvaluation)(
            asset_key=asset_key, check_name=outcome.check.name, passed=outcome.passed, metadata=metadata,
            severity=dg.AssetCheckSeverity.ERROR, description=outcome.summary()))
    return evaluations


def _checked_periods(context: dg.AssetExecutionContext, conn, table: str) -> list[dt.date]:
    """The run's partitions; for checks run alone without one (the UI's *Execute*), every partition
    the layer has written, as `activation check` does."""
    if context.has_partition_key or context.has_partition_key_range:
        return _periods(context)
    return sorted({period for _, period, _ in conn.log_entries([table])})


def _record_metadata(
    context: dg.AssetExecutionContext, per_partition: dict[dt.date, dict], last: dict,
    asset_key: dg.AssetKey | None = None,
) -> None:
    """Each partition's own numbers on its event, and what describes the run (the preview of its last
    partition, the columns and source-wide counts it read) on the last partition's event only: the
    metadata of a MaterializeResult is copied onto every partition's event of a range run, so a
    backfill of N partitions would store it N times. The UI's latest materialization is the last."""
    periods = sorted(per_partition)
    target = {"asset_key": asset_key} if asset_key is not None else {}
    for period in periods:
        metadata = {**per_partition[period], **(last if period == periods[-1] else {})}
        context.add_asset_metadata(metadata, partition_key=period.isoformat(), **target)


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


def _checked_asset(
    behavior: BehaviorConfig, grain: Grain, name: str, common: dict, *, deps: Sequence, description: str,
    metadata: dict, checks: Sequence[inv.Check], blocking: bool,
    write: Callable[[dg.AssetExecutionContext, object, list[dt.date]], tuple[dict, dict]],
) -> dg.AssetsDefinition:
    """One asset and its checks, subsettable: a run of the asset writes its partitions (`write`
    returns their metadata and the last partition's) and evaluates its checks; a run of checks alone
    (*Execute* in the UI, for chosen partitions) evaluates them without writing anything."""
    key, partitions = dg.AssetKey(name), in_view(partitions_def(behavior, grain))
    spec = dg.AssetSpec(key, deps=deps, description=description, metadata=metadata,
                        **{k: common[k] for k in ("group_name", "kinds", "owners", "tags", "automation_condition")})

    @dg.multi_asset(
        name=name, specs=[spec], check_specs=_specs(key, checks, grain, blocking), can_subset=True,
        partitions_def=partitions, **{k: common[k] for k in ("pool", "required_resource_keys", "backfill_policy")},
    )
    def _asset(context: dg.AssetExecutionContext):
        chosen = [c for c in inv.checks_for(checks, grain)
                  if dg.AssetCheckKey(key, c.name) in context.selected_asset_check_keys]
        written = None
        with warehouse_of(context) as conn:
            if key in context.selected_asset_keys:
                written = write(context, conn, _periods(context))
            periods = _checked_periods(context, conn, name)
            evaluations = (_check_evaluations(behavior, grain, conn, chosen, periods, key, written is not None)
                           if chosen and periods else [])
        if written is not None:
            _record_metadata(context, *written, asset_key=key)
            yield dg.MaterializeResult(asset_key=key)
        yield from evaluations

    return _asset


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
        partitions_def=in_view(fact_partitions_def(behavior)),
        description=(
            f"Valid `{behavior.name}` events, one row each, partitioned by local date in {behavior.timezone}.\n\n"
            f"Source: `{behavior.source.describe()}`; `{behavior.user_column}` -> `user_id`,"
            f" `{behavior.time_column}` -> `occurred_at`. Rows without a user or a time, outside"
            f" {window}, and exact duplicates are dropped and counted in the metadata."
        ),
        metadata={**_schema(tables.FACT), "source": behavior.source.describe()},
        **_common(behavior, "fact", None, engine),
    )
    def _fact(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        days = _periods(context)
        with warehouse_of(context) as conn:
            outcome = steps.materialize_fact(conn, behavior, days)
            preview = _preview(conn, name, days[-1], "user_id, occurred_at")
        # Source-wide counts come with a run that read the whole source (every day, or a text
        # time column); a run of some days reads only what can fall on them.
        dropped = {f"source_{k}": v for k, v in outcome.source.items()}
        scope = "whole source" if outcome.source else "the run's days only (source-wide counts: a run of every day)"
        read = {"files_read": outcome.files_read} if outcome.files_read is not None else {}
        context.log.info(
            f"{name}: {len(days)} day(s), {sum(n['rows'] for n in outcome.per_day.values())} rows written;"
            f" read: {scope}; {dropped or ''}"
        )
        _record_metadata(
            context,
            {day: {"dagster/row_count": numbers["rows"], **{k: v for k, v in numbers.items() if k != "rows"}}
             for day, numbers in outcome.per_day.items()},
            {**dropped, **read, "source_read": scope, "preview": preview,
             "dagster/column_schema": dg.TableSchema(columns=[dg.TableColumn(n, t) for n, t in outcome.columns.items()])},
        )
        return dg.MaterializeResult()

    return _fact


def firstlast_asset(behavior: BehaviorConfig, grain: Grain, engine: str = "duckdb") -> dg.AssetsDefinition:
    name = sql.firstlast_table(behavior.name, grain)

    def write(context, conn, periods):
        rows = steps.materialize_firstlast(conn, behavior, grain, periods, _progress(context, name))
        return {period: {"dagster/row_count": count} for period, count in rows.items()}, _columns(conn, name)

    return _checked_asset(
        behavior, grain, name, _common(behavior, "firstlast", grain, engine),
        deps=[dg.AssetDep(sql.fact_table(behavior.name), partition_mapping=days_of_period()),
              dg.AssetDep(name, partition_mapping=PREVIOUS_PARTITION)],
        description=(
            f"The incremental state of `{behavior.name}` at the {grain} grain: one row per user seen by"
            " the end of the period, with their first and last active periods and current streak."
            " Each partition is the previous one updated with the period's active users only."
        ),
        metadata=_schema(tables.FIRSTLAST, grain, tables.segment_columns(behavior.segments, tables.FIRSTLAST)),
        checks=inv.firstlast_checks(behavior), blocking=True, write=write,
    )


def activation_asset(behavior: BehaviorConfig, grain: Grain, engine: str = "duckdb") -> dg.AssetsDefinition:
    name = sql.activation_table(behavior.name, grain)

    def write(context, conn, periods):
        counts = steps.materialize_activation(conn, behavior, grain, periods, _progress(context, name))
        per_partition = {
            period: {"dagster/row_count": numbers["users"],
                     "active": numbers["new"] + numbers["retained"] + numbers["reactivated"],
                     **{k: v for k, v in numbers.items() if k != "users"}}
            for period, numbers in counts.items()}
        return per_partition, {"preview": _preview(conn, name, periods[-1], "state, user_id"), **_columns(conn, name)}

    return _checked_asset(
        behavior, grain, name, _common(behavior, "activation", grain, engine),
        deps=[dg.AssetDep(sql.firstlast_table(behavior.name, grain)),
              dg.AssetDep(name, partition_mapping=PREVIOUS_PARTITION)],
        description=(
            f"Every user of `{behavior.name}` in every {grain.value} period since their first: `new`,"
            " `retained`, `reactivated` or `inactive`, with the previous state, streaks, return gap and"
            " active periods. Table and columns follow the activation contract."
        ),
        metadata=_schema(tables.ACTIVATION, grain, tables.segment_columns(behavior.segments, tables.ACTIVATION)),
        checks=inv.ACTIVATION_CHECKS, blocking=True, write=write,
    )


@dataclass(frozen=True)
class _Part:
    """One asset of a multi-asset (the summaries, the rolling engagement, the segments, the growth model)."""
    table: str
    layer: str
    description: str
    relation: tables.Relation
    checks: Sequence[inv.Check]
    order: str
    partition_metadata: Callable[[dict], dict]
    checked_against: tuple[str, ...] = ()  # tables its checks compare it with: built before it
    deps: tuple[dg.AssetDep, ...] | None = None  # None: the same period of `sql.reads`


def _numbers(values: dict) -> dict:
    return {k: v for k, v in values.items() if v is not None}


def _summary_parts(behavior: BehaviorConfig, grain: Grain) -> list[_Part]:
    """In the order they are written (`sql.summary_tables`)."""
    transitions, growth, cohorts, distributions = sql.summary_tables(behavior.name, grain)
    return [
        _Part(
            transitions, "transitions",
            f"How `{behavior.name}` users moved into each {grain.value} period: users per"
            " (from_state, to_state) pair, the activation table grouped by (prev_state, state).",
            tables.TRANSITIONS_RELATION, inv.TRANSITIONS_CHECKS, "from_state NULLS FIRST, to_state",
            lambda pairs: {"dagster/row_count": sum(1 for v in pairs.values() if v), **pairs},
        ),
        _Part(
            growth, "growth",
            f"Growth accounting of `{behavior.name}` per {grain.value} period: active = new + retained +"
            " reactivated, active_prev = retained + churned, with dormant users, retention rate and quick"
            " ratio. One row per period; the UI plots each number over partitions.",
            tables.GROWTH, inv.GROWTH_CHECKS, "period_start",
            lambda row: {"dagster/row_count": 1, **_numbers(row)},
        ),
        _Part(
            cohorts, "cohorts",
            f"Retention by cohort for `{behavior.name}` at the {grain.value} grain: for each cohort (first"
            " active period) its size and the users active at the age this period is for it — the data"
            " behind the retention triangle, one diagonal per partition.",
            tables.COHORTS, inv.COHORTS_CHECKS, "cohort DESC",
            lambda rows: {"dagster/row_count": rows},
        ),
        _Part(
            distributions, "distributions",
            f"Bucketed distributions of `{behavior.name}` per {grain.value} period: the return gap of"
            " reactivated users and the streak of active users, in periods.",
            tables.DISTRIBUTIONS, (), "measure, bucket_start",
            lambda buckets: {"dagster/row_count": sum(1 for v in buckets.values() if v), **buckets},
        ),
    ]


def summaries_asset(behavior: BehaviorConfig, grain: Grain, engine: str = "duckdb") -> dg.AssetsDefinition:
    """The four summaries of activation (transitions, growth, cohorts, distributions), computed in one
    step (a multi-asset): each is summed off one pass over the period's activation rows, which four
    steps would read four times. In the UI each is its own asset, with its partitions, checks,
    metadata and plots, and each can be materialized alone."""
    parts, common = _summary_parts(behavior, grain), _common(behavior, "summaries", grain, engine)
    return _multi_asset(behavior, grain, f"{behavior.name}_summaries_{grain.value}", parts, common,
                        steps.materialize_summaries)


# --- rolling engagement (daily grain) --------------------------------------------------------------



def _windows(behavior: BehaviorConfig) -> str:
    engagement = behavior.engagement
    return f"W = {engagement.week_days} days, M = {engagement.month_days} days"


def _engagement_parts(behavior: BehaviorConfig) -> list[_Part]:
    """In the order they are written (`sql.engagement_tables`)."""
    transitions, engagement, stickiness = sql.engagement_tables(behavior.name)
    return [
        _Part(
            transitions, "engagement_transitions",
            f"How `{behavior.name}` users moved between the daily engagement states ({_windows(behavior)}):"
            " users per (from_state, to_state), the daily activation rows grouped by (prev_engagement_state,"
            " engagement_state).",
            tables.ENGAGEMENT_TRANSITIONS, inv.ENGAGEMENT_TRANSITIONS_CHECKS, "from_state NULLS FIRST, to_state",
            lambda pairs: {"dagster/row_count": len(pairs), **pairs},
        ),
        _Part(
            engagement, "engagement",
            f"Rolling engagement of `{behavior.name}` per day ({_windows(behavior)}): DAU, WAU, MAU, stickiness"
            " (dau/mau), users in each of Duolingo's daily states, and the next-day retention rates of"
            " yesterday's states (nurr, curr, rurr, surr, iwaurr, imaurr, drr), summed off the day's engagement"
            " transitions. The states are read off the 63-day bit history in the daily FirstLast: no step"
            " scans the fact history.",
            tables.ENGAGEMENT, inv.ENGAGEMENT_CHECKS, "period_start",
            lambda row: {"dagster/row_count": 1, **_numbers(row)},
        ),
        _Part(
            stickiness, "stickiness",
            f"Stickiness of `{behavior.name}` per day ({_windows(behavior)}): users by their number of active"
            " days in the week and in the month ending on the day (Amplitude's stickiness).",
            tables.STICKINESS, inv.STICKINESS_CHECKS, '"window" DESC, active_days',
            lambda row: {"dagster/row_count": row["rows"], **_numbers({k: v for k, v in row.items() if k != "rows"})},
        ),
    ]


def rolling_engagement_asset(behavior: BehaviorConfig, grain: Grain, engine: str = "duckdb") -> dg.AssetsDefinition:
    """The three rolling-engagement assets, computed in one step (a multi-asset): a day's engagement
    transitions and stickiness are summed off one pass over its activation rows, which three steps
    would read twice, and their writes share one transaction. In the UI each is its own asset, with
    its partitions, checks, metadata and plots, and each can be materialized alone."""
    parts, common = _engagement_parts(behavior), _common(behavior, "engagement", grain, engine)
    return _multi_asset(behavior, grain, f"{behavior.name}_rolling_engagement_daily", parts, common,
                        steps.materialize_rolling_engagement)


def _multi_asset(
    behavior: BehaviorConfig, grain: Grain, name: str, parts: Sequence[_Part], common: dict,
    step: Callable, partitions: dg.PartitionsDefinition | None = None,
) -> dg.AssetsDefinition:
    """Assets written together by one step, each its own asset with its checks, metadata and preview."""
    spec = {k: common[k] for k in ("group_name", "kinds", "owners", "automation_condition")}
    specs = [
        dg.AssetSpec(
            key=part.table, deps=[*(part.deps if part.deps is not None else [sql.reads(behavior.name, grain, part.table)]),
                                  *part.checked_against],
            description=part.description,
            metadata=_schema(part.relation, grain), tags={**common["tags"], "layer": part.layer}, **spec,
        )
        for part in parts
    ]

    partitions = partitions or in_view(partitions_def(behavior, grain))

    @dg.multi_asset(
        name=name,
        specs=specs,
        check_specs=[c for part in parts
                     for c in _specs(dg.AssetKey(part.table), part.checks, grain, blocking=False)],
        can_subset=True,
        partitions_def=partitions,
        **{k: common[k] for k in ("pool", "required_resource_keys", "backfill_policy")},
    )
    def _together(context: dg.AssetExecutionContext):
        chosen = [part for part in parts if dg.AssetKey(part.table) in context.selected_asset_keys]
        periods = _periods(context) if chosen else None
        written, evaluations = [], []
        with warehouse_of(context) as conn:
            numbers = step(conn, behavior, grain, periods, [part.table for part in chosen],
                           _progress(context, name)) if chosen else {}
            for part in chosen:
                written.append((part, {"preview": _preview(conn, part.table, periods[-1], part.order),
                                       **_columns(conn, part.table)}))
            for part in parts:  # a part's checks, also when only they are run (the UI's Execute)
                key = dg.AssetKey(part.table)
                checks = [c for c in part.checks if dg.AssetCheckKey(key, c.name) in context.selected_asset_check_keys]
                checked = periods or _checked_periods(context, conn, part.table)
                if checks and checked:
                    evaluations += _check_evaluations(behavior, grain, conn, checks, checked, key, part in chosen)
        for part, last in written:
            _record_metadata(context, {period: part.partition_metadata(value)
                                       for period, value in numbers[part.table].items()},
                             last, asset_key=dg.AssetKey(part.table))
            yield dg.MaterializeResult(asset_key=part.table)
        yield from evaluations

    return _together


# --- segments --------------------------------------------------------------------------------------


def _segment_parts(behavior: BehaviorConfig, grain: Grain) -> list[_Part]:
    """In the order they are written (`sql.segment_tables`)."""
    names = ", ".join(f"`{s.key}` ({s.column})" for s in behavior.segments)

    def values(numbers: dict) -> dict:
        return {"dagster/row_count": numbers["rows"],
                **{f"values_{segment}": n for segment, n in numbers["values"].items()}}

    transitions, growth = sql.segment_transitions_table(behavior.name, grain), sql.segment_growth_table(behavior.name, grain)
    whole = lambda table: (sql.segment_whole(behavior.name, grain, table),)  # noqa: E731 (what it adds up to)
    parts = [
        _Part(
            transitions, "segment_transitions",
            f"How `{behavior.name}` users moved into each {grain.value} period, per segment ({names}) and value:"
            " users per (prev_value, value, from_state, to_state). A user who changed value while active is"
            " a move of its own, not a churn plus a new user.",
            tables.SEGMENT_TRANSITIONS, inv.SEGMENT_TRANSITIONS_CHECKS,
            "segment, value NULLS FIRST, prev_value NULLS FIRST, from_state NULLS FIRST, to_state", values,
            whole(transitions),
        ),
        _Part(
            growth, "segment_growth",
            f"Growth accounting of `{behavior.name}` per {grain.value} period and segment value ({names}):"
            " active, new, retained, reactivated, churned, dormant, and the moves in and out of the value;"
            " the values of a segment add up to the growth table.",
            tables.SEGMENT_GROWTH, inv.SEGMENT_GROWTH_CHECKS, "segment, active DESC", values,
            whole(growth),
        ),
    ]
    if grain is Grain.daily:
        parts.append(_Part(
            sql.segment_engagement_table(behavior.name), "segment_engagement",
            f"Rolling engagement of `{behavior.name}` per day and segment value ({names}; {_windows(behavior)}):"
            " DAU, WAU, MAU and users per engagement state.",
            tables.SEGMENT_ENGAGEMENT, inv.SEGMENT_ENGAGEMENT_CHECKS, "segment, dau DESC", values,
            whole(sql.segment_engagement_table(behavior.name)),
        ))
    return parts


def segments_asset(behavior: BehaviorConfig, grain: Grain, engine: str = "duckdb") -> dg.AssetsDefinition:
    """The segment assets of a grain, computed in one step off one profile of each period's
    activation rows (a multi-asset, as the rolling engagement); each is its own asset in the UI."""
    parts, common = _segment_parts(behavior, grain), _common(behavior, "segments", grain, engine)
    return _multi_asset(behavior, grain, f"{behavior.name}_segments_{grain.value}", parts, common,
                        steps.materialize_segments)


# --- the growth model (daily, from start_date + L) -------------------------------------------------


def _forecast_parts(behavior: BehaviorConfig) -> list[_Part]:
    """In the order they are written (`sql.forecast_tables`)."""
    model = behavior.growth_model
    forecast, rates, accuracy = sql.forecast_tables(behavior.name)
    transitions, engagement, _ = sql.engagement_tables(behavior.name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dg.BetaWarning)
        window = dg.TimeWindowPartitionMapping(start_offset=-(model.window_days - 1), end_offset=0)
        earlier = dg.TimeWindowPartitionMapping(start_offset=-max(tables.ACCURACY_HORIZONS), end_offset=-1,
                                                allow_nonexistent_upstream_partitions=True)
    reads_window = (dg.AssetDep(transitions, partition_mapping=window), dg.AssetDep(engagement, partition_mapping=window))
    scenarios = ", ".join(model.scenarios) or "none configured"
    what = (f"L = {model.window_days} days of engagement transitions, H = {model.horizon_days} days ahead;"
            f" scenarios: {scenarios}")
    return [
        _Part(
            forecast, "forecast",
            f"The growth model of `{behavior.name}` ({what}): from the seven engagement state counts of day d,"
            " each day ahead is the previous one moved by the window's rates, plus the mean new users a day;"
            " per scenario (the baseline, and each configured what-if), with DAU, WAU and MAU. The plots are the"
            " DAU and MAU projected 7, 28 and H days ahead.",
            tables.FORECAST, inv.FORECAST_CHECKS, "scenario, horizon",
            lambda numbers: numbers, deps=reads_window,
        ),
        _Part(
            rates, "forecast",
            f"The rates of `{behavior.name}`'s growth model on day d ({what}): p(from_state -> to_state) over the"
            " engagement transitions of the L days ending on d, and the inflow of new users a day. The plots are"
            " each state's next-day retention (nurr, curr, ...) over the window.",
            tables.FORECAST_RATES, inv.FORECAST_RATES_CHECKS, "from_state NULLS FIRST, rate DESC",
            lambda numbers: numbers, deps=reads_window,
        ),
        _Part(
            accuracy, "forecast",
            f"How good `{behavior.name}`'s growth model is: the baseline forecasts made 1, 7 and 28 days before d"
            " against d's DAU, WAU and MAU. The plots are the relative errors of DAU and MAU and their mean absolute"
            " value over the last 28 days.",
            tables.FORECAST_ACCURACY, inv.FORECAST_ACCURACY_CHECKS, "horizon, measure",
            lambda numbers: numbers,
            deps=(dg.AssetDep(forecast, partition_mapping=earlier), dg.AssetDep(engagement)),
        ),
    ]


def forecast_asset(behavior: BehaviorConfig, engine: str = "duckdb") -> dg.AssetsDefinition:
    """The growth model's three assets, written together by one step from the stored engagement
    tables, partitioned by day from the first with a full window."""
    parts = _forecast_parts(behavior)
    common = {**_common(behavior, "forecast", Grain.daily, engine), "automation_condition": FOLLOW_WINDOW}
    return _multi_asset(
        behavior, Grain.daily, f"{behavior.name}_growth_model_daily", parts, common,
        lambda conn, behavior, grain, periods, chosen, progress: steps.materialize_forecasts(
            conn, behavior, periods, chosen, progress),
        partitions=in_view(forecast_partitions_def(behavior)))


GRAIN_ASSETS: tuple[Callable[[BehaviorConfig, Grain, str], dg.AssetsDefinition], ...] = (
    firstlast_asset, activation_asset, summaries_asset,
)
DAILY_ASSETS: tuple[Callable[[BehaviorConfig, Grain, str], dg.AssetsDefinition], ...] = (rolling_engagement_asset,)


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
        + ((segments_asset,) if behavior.segments else ())
    ] + ([forecast_asset(behavior, engine)] if behavior.growth_model else [])
