"""One factory: a behavior's typed config in, its whole partitioned asset graph out.

    fact_<b>  ->  <b>_firstlast_<g>  ->  <b>_activation_<g>  ->  <b>_transitions_<g>     for each grain g

Every asset has a single-run backfill policy (a range is processed in order inside one run, rather
than one partition per daemon tick), runs in the `duckdb` concurrency pool, and reports per-partition
metadata so the UI plots it over partitions. The Dagster code here stays thin: the work is in
`steps`, the SQL in `sql`, the invariants in `checks`.
"""

import datetime as dt
import logging
import time
import warnings
from collections.abc import Callable, Sequence

import dagster as dg
from dagster_duckdb import DuckDBResource

from . import checks as inv
from . import sql, steps
from .config import BehaviorConfig, Grain
from .partitions import fact_partitions_def, partitions_def
from .warehouse import ActivationError, connect

POOL = "duckdb"
SINGLE_RUN = dg.BackfillPolicy.single_run()
PREVIOUS_PARTITION = dg.TimeWindowPartitionMapping(start_offset=-1, end_offset=-1)


def days_of_period() -> dg.TimeWindowPartitionMapping:
    """A weekly or monthly period may begin before start_date: its missing first days are no error."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dg.BetaWarning)  # this beta parameter is what we need
        return dg.TimeWindowPartitionMapping(allow_nonexistent_upstream_partitions=True)
KINDS = {"duckdb", "sql"}

progress_log = logging.getLogger("activation_assets.progress")


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
    behavior: BehaviorConfig, grain: Grain, conn, checks: Sequence[inv.Check], periods: Sequence[dt.date]
) -> list[dg.AssetCheckResult]:
    outcomes: dict[str, inv.CheckOutcome] = {}
    for period in periods:
        inv.evaluate(conn, checks, behavior, grain, period, outcomes)
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
            check_name=outcome.check.name, passed=outcome.passed, metadata=metadata,
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


def _preview(conn, table: str, period: dt.date, order: str, limit: int = 10) -> dg.MetadataValue:
    cursor = conn.execute(
        f"SELECT * FROM {sql.ident(table)} WHERE period_start = ? ORDER BY {order} LIMIT {limit}", [period])
    names = [d[0] for d in cursor.description]
    return dg.MetadataValue.md(_markdown([dict(zip(names, map(inv._plain, row))) for row in cursor.fetchall()]))


def _specs(key: dg.AssetKey, checks: Sequence[inv.Check], grain: Grain, blocking: bool) -> list[dg.AssetCheckSpec]:
    return [
        dg.AssetCheckSpec(name=c.name, asset=key, description=c.description, blocking=blocking)
        for c in inv.checks_for(checks, grain)
    ]


def _common(behavior: BehaviorConfig, layer: str, grain: Grain | None) -> dict:
    tags = {"behavior": behavior.name, "layer": layer}
    if grain is not None:
        tags["grain"] = grain.value
    return dict(
        group_name=behavior.name,
        kinds=KINDS,
        owners=list(behavior.owners) or None,
        tags=tags,
        pool=POOL,
        backfill_policy=SINGLE_RUN,
    )


def fact_asset(behavior: BehaviorConfig) -> dg.AssetsDefinition:
    name = sql.fact_table(behavior.name)
    window = f"[{behavior.start_date}, {behavior.end_date or 'open'}]"

    @dg.asset(
        name=name,
        partitions_def=fact_partitions_def(behavior),
        description=(
            f"Valid `{behavior.name}` events, one row each, partitioned by local date in {behavior.timezone}.\n\n"
            f"Source: `{behavior.source.describe()}`; `{behavior.user_column}` -> `user_id`,"
            f" `{behavior.time_column}` -> `occurred_at`. Rows without a user or a time, outside"
            f" {window}, and exact duplicates are dropped and counted in the metadata."
        ),
        metadata={**_schema(FACT_COLUMNS), "source": behavior.source.describe()},
        **_common(behavior, "fact", None),
    )
    def _fact(context: dg.AssetExecutionContext, duckdb: DuckDBResource) -> dg.MaterializeResult:
        days = _periods(context)
        try:
            with connect(duckdb) as conn:
                outcome = steps.materialize_fact(conn, behavior, days)
                preview = _preview(conn, name, days[-1], "user_id, occurred_at")
        except ActivationError as exc:
            raise _failure(exc) from None
        for day, numbers in outcome.per_day.items():
            context.add_asset_metadata(
                {"dagster/row_count": numbers["rows"], **{k: v for k, v in numbers.items() if k != "rows"}},
                partition_key=day.isoformat(),
            )
        dropped = {f"source_{k}": v for k, v in outcome.source.items()}
        context.log.info(
            f"{name}: {len(days)} day(s), {sum(n['rows'] for n in outcome.per_day.values())} rows written;"
            f" source-wide: {dropped}"
        )
        return dg.MaterializeResult(metadata={
            **dropped,
            "dagster/column_schema": dg.TableSchema(
                columns=[dg.TableColumn(n, t) for n, t in outcome.columns.items()]),
            "preview": preview,
        })

    return _fact


def firstlast_asset(behavior: BehaviorConfig, grain: Grain) -> dg.AssetsDefinition:
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
        metadata=_schema(FIRSTLAST_COLUMNS),
        **_common(behavior, "firstlast", grain),
    )
    def _firstlast(context: dg.AssetExecutionContext, duckdb: DuckDBResource) -> dg.MaterializeResult:
        periods = _periods(context)
        try:
            with connect(duckdb) as conn:
                rows = steps.materialize_firstlast(conn, behavior, grain, periods, _progress(context, name))
                results = _check_results(behavior, grain, conn, inv.FIRSTLAST_CHECKS, periods)
        except ActivationError as exc:
            raise _failure(exc) from None
        for period, count in rows.items():
            context.add_asset_metadata({"dagster/row_count": count}, partition_key=period.isoformat())
        return dg.MaterializeResult(check_results=results)

    return _firstlast


def activation_asset(behavior: BehaviorConfig, grain: Grain) -> dg.AssetsDefinition:
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
        metadata=_schema(ACTIVATION_COLUMNS),
        **_common(behavior, "activation", grain),
    )
    def _activation(context: dg.AssetExecutionContext, duckdb: DuckDBResource) -> dg.MaterializeResult:
        periods = _periods(context)
        try:
            with connect(duckdb) as conn:
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


def transitions_asset(behavior: BehaviorConfig, grain: Grain) -> dg.AssetsDefinition:
    name = sql.transitions_table(behavior.name, grain)
    key = dg.AssetKey(name)

    @dg.asset(
        name=name,
        partitions_def=partitions_def(behavior, grain),
        deps=[dg.AssetDep(sql.activation_table(behavior.name, grain))],
        check_specs=_specs(key, inv.TRANSITIONS_CHECKS, grain, blocking=False),
        description=(
            f"How `{behavior.name}` users moved into each {grain.value} period: users per"
            " (from_state, to_state) pair, the activation table grouped by (prev_state, state)."
        ),
        metadata=_schema(TRANSITIONS_COLUMNS),
        **_common(behavior, "transitions", grain),
    )
    def _transitions(context: dg.AssetExecutionContext, duckdb: DuckDBResource) -> dg.MaterializeResult:
        periods = _periods(context)
        try:
            with connect(duckdb) as conn:
                pairs = steps.materialize_transitions(conn, behavior, grain, periods, _progress(context, name))
                results = _check_results(behavior, grain, conn, inv.TRANSITIONS_CHECKS, periods)
                preview = _preview(conn, name, periods[-1], "from_state NULLS FIRST, to_state")
        except ActivationError as exc:
            raise _failure(exc) from None
        for period, numbers in pairs.items():
            context.add_asset_metadata(
                {"dagster/row_count": len(numbers), **numbers}, partition_key=period.isoformat())
        return dg.MaterializeResult(check_results=results, metadata={"preview": preview})

    return _transitions


GRAIN_ASSETS: tuple[Callable[[BehaviorConfig, Grain], dg.AssetsDefinition], ...] = (
    firstlast_asset, activation_asset, transitions_asset,
)


def behavior_assets(behavior: BehaviorConfig) -> list[dg.AssetsDefinition]:
    """The whole graph of one behavior: its fact, then FirstLast, activation, transitions per grain."""
    return [fact_asset(behavior)] + [
        build(behavior, grain) for grain in behavior.grains for build in GRAIN_ASSETS
    ]
