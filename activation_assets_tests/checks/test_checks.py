"""Every invariant check catches the corruption it exists for, and a clean run passes them all."""

from __future__ import annotations

import datetime as dt
import shutil

import dagster as dg
import duckdb
import pytest

from activation_assets.checks import invariants as inv
from activation_assets.config import Grain, load_config

from .. import reference
from ..conftest import edge_events, materialize, run_graph, small_behavior

SPEC = reference.Spec("Asia/Seoul", dt.date(2025, 3, 3), dt.date(2025, 4, 13), "monday")
DAY = dt.date(2025, 4, 2)    # a daily partition well inside the range
WEEK = dt.date(2025, 3, 24)  # a weekly partition with a predecessor

# One row of the given state in a partition, as a SQL predicate that picks exactly one user.
def one_user(table: str, period: dt.date, where: str) -> str:
    return (f"user_id = (SELECT min(user_id) FROM {table} WHERE period_start = DATE '{period}' AND {where})"
            f" AND period_start = DATE '{period}'")


CORRUPTIONS = {
    # name: (table prefix, grain, partition, SQL, check that must fail, words the message must contain)
    "duplicated user": (
        "activation", Grain.daily, DAY,
        "INSERT INTO visited_activation_daily SELECT * FROM visited_activation_daily WHERE {one}",
        "one_row_per_user", "1 duplicated rows"),
    "activation disagrees with the fact": (
        "activation", Grain.daily, DAY,
        "INSERT INTO fact_visited SELECT * REPLACE (123456789 AS user_id) FROM fact_visited"
        " WHERE period_start = DATE '{period}' LIMIT 1",
        "active_users_match_fact", "the fact has"),
    "a churned user un-churned": (
        "activation", Grain.daily, DAY,
        "UPDATE visited_activation_daily SET prev_state = 'inactive' WHERE {one_churned}",
        "retained_plus_churned_is_previous_active", "vs active before"),
    "a user missing from a later period": (
        "activation", Grain.daily, DAY,
        "DELETE FROM visited_activation_daily WHERE {one_inactive}",
        "nobody_disappears", "users of the previous period missing"),
    "previous period's states rewritten": (
        "activation", Grain.daily, DAY,
        "UPDATE visited_activation_daily SET state = 'reactivated' WHERE {one_retained_before}",
        "prev_state_is_previous_state", "retained"),
    "inactive -> retained": (
        "activation", Grain.daily, DAY,
        "UPDATE visited_activation_daily SET state = 'retained' WHERE {one_dormant}",
        "only_valid_transitions", "impossible transition"),
    "a state lost (null)": (
        "activation", Grain.daily, DAY,
        "UPDATE visited_activation_daily SET state = NULL WHERE {one_dormant}",
        "only_valid_transitions", "impossible transition"),
    "a wrong streak": (
        "activation", Grain.daily, DAY,
        "UPDATE visited_activation_daily SET streak = 0 WHERE {one_active}",
        "columns_consistent", "contradict"),
    "transitions off by one": (
        "transitions", Grain.daily, DAY,
        "UPDATE visited_transitions_daily SET users = users + 1"
        " WHERE period_start = DATE '{period}' AND to_state = 'inactive' AND from_state = 'inactive'",
        "equals_grouped_activation", "disagree"),
    "a duplicated transitions row": (
        "transitions", Grain.daily, DAY,
        "INSERT INTO visited_transitions_daily SELECT * FROM visited_transitions_daily"
        " WHERE period_start = DATE '{period}' AND to_state = 'inactive' AND from_state = 'inactive'",
        "equals_grouped_activation", "appear twice; users add up to"),
    "a weekly row that disagrees with its days": (
        "activation", Grain.weekly, WEEK,
        "UPDATE visited_activation_weekly SET user_id = 424242 WHERE {one_new_weekly}",
        "matches_days", "not active on any day"),
    "firstlast duplicated user": (
        "firstlast", Grain.daily, DAY,
        "INSERT INTO visited_firstlast_daily SELECT * FROM visited_firstlast_daily"
        " WHERE period_start = DATE '{period}' LIMIT 1",
        "one_row_per_user", "duplicated"),
    "firstlast lost a user": (
        "firstlast", Grain.daily, DAY,
        "DELETE FROM visited_firstlast_daily WHERE {one_fl}",
        "nobody_disappears", "are missing"),
    # The same number of rows, one user in place of another: the count of p's returning users still
    # matches p-1's, their ids do not (nobody_disappears's quick test is a count and a sum of hashes).
    "firstlast: a user swapped for one never seen": (
        "firstlast", Grain.daily, DAY,
        "UPDATE visited_firstlast_daily SET user_id = 987654321 WHERE {one_fl}",
        "nobody_disappears", "1 users of"),
    "firstlast: a user swapped for another user's twin": (
        "firstlast", Grain.daily, DAY,
        "UPDATE visited_firstlast_daily SET user_id = (SELECT max(user_id) FROM visited_firstlast_daily"
        " WHERE period_start = DATE '{period}') WHERE {one_fl}",
        "nobody_disappears", "1 users of"),
    "a user swapped for one never seen": (
        "activation", Grain.daily, DAY,
        "UPDATE visited_activation_daily SET user_id = 987654321 WHERE {one_inactive}",
        "nobody_disappears", "1 users of the previous period missing"),
    "firstlast last active after the period": (
        "firstlast", Grain.daily, DAY,
        "UPDATE visited_firstlast_daily SET last_active_period = DATE '2030-01-01' WHERE {one_fl}",
        "periods_in_order", "out of order"),
    # Growth accounting and cohorts.
    "growth: active_prev off by one": (
        "growth", Grain.daily, DAY,
        "UPDATE visited_growth_daily SET active_prev = active_prev + 1 WHERE period_start = DATE '{period}'",
        "active_prev_is_previous_active", "active users in the previous period"),
    "growth: a day's row twice": (
        "growth", Grain.daily, DAY,
        "INSERT INTO visited_growth_daily SELECT * FROM visited_growth_daily WHERE period_start = DATE '{period}'",
        "identities", "2 row(s)"),
    "cohorts: a cohort grew": (
        "cohorts", Grain.daily, DAY,
        "UPDATE visited_cohorts_daily SET cohort_size = cohort_size + 1 WHERE period_start = DATE '{period}'"
        " AND cohort = (SELECT min(cohort) FROM visited_cohorts_daily WHERE period_start = DATE '{period}')",
        "cohort_sizes_stable", "1 cohorts changed size"),
    # Rolling engagement (E1-E5 of the contract) and the engagement transitions' own check.
    "E1 engagement new disagrees with activation new": (
        "engagement", Grain.daily, DAY,
        'UPDATE visited_engagement_daily SET "new" = "new" + 1 WHERE period_start = DATE \'{period}\'',
        "agrees_with_activation", "vs activation new"),
    "E2 the fact has one more user in the week": (
        "engagement", Grain.daily, DAY,
        "INSERT INTO fact_visited SELECT * REPLACE (123456789 AS user_id) FROM fact_visited"
        " WHERE period_start = DATE '{period}' - INTERVAL 3 DAY LIMIT 1",
        "windows_match_fact", "users in the fact from"),
    "E3 one user counted twice": (
        "engagement", Grain.daily, DAY,
        "UPDATE visited_engagement_daily SET dormant = dormant + 1 WHERE period_start = DATE '{period}'",
        "states_add_up", "vs users_ever"),
    "E4 yesterday's states rewritten": (
        "engagement_transitions", Grain.daily, DAY,
        "UPDATE visited_engagement_transitions_daily SET users = users + 1 WHERE rowid = (SELECT min(rowid)"
        " FROM visited_engagement_transitions_daily WHERE period_start = DATE '{period}' AND from_state IS NOT NULL)",
        "prev_state_is_previous_state", " vs "),
    "a duplicated engagement transitions row": (
        "engagement_transitions", Grain.daily, DAY,
        "INSERT INTO visited_engagement_transitions_daily SELECT * FROM visited_engagement_transitions_daily"
        " WHERE rowid = (SELECT min(rowid) FROM visited_engagement_transitions_daily"
        " WHERE period_start = DATE '{period}')",
        "equals_grouped_activation", "appear twice"),
    "E5 stickiness off by one": (
        "stickiness", Grain.daily, DAY,
        "UPDATE visited_stickiness_daily SET users = users + 1 WHERE rowid = (SELECT min(rowid)"
        " FROM visited_stickiness_daily WHERE period_start = DATE '{period}' AND \"window\" = 'month')",
        "adds_up_to_active_users", "month rows to"),
    "E5 more active days than the week has": (
        "stickiness", Grain.daily, DAY,
        "UPDATE visited_stickiness_daily SET active_days = 8 WHERE rowid = (SELECT min(rowid)"
        " FROM visited_stickiness_daily WHERE period_start = DATE '{period}' AND \"window\" = 'week')",
        "adds_up_to_active_users", "1 rows out of range"),
    # Segments (S1-S6): each corruption keeps what the other segment checks compare.
    "S1 a segment transition moved to another pair": (
        "segment_transitions", Grain.daily, DAY,
        "UPDATE visited_segment_transitions_daily SET from_state = 'inactive', to_state = 'reactivated'"
        " WHERE rowid = (SELECT min(rowid) FROM visited_segment_transitions_daily"
        " WHERE period_start = DATE '{period}' AND from_state = 'retained' AND to_state = 'retained')",
        "sums_to_transitions", "pairs disagree with the transitions table"),
    "S2 users moved to another value": (
        "segment_transitions", Grain.daily, DAY,
        "UPDATE visited_segment_transitions_daily SET value = 'elsewhere' WHERE rowid = (SELECT min(rowid)"
        " FROM visited_segment_transitions_daily WHERE period_start = DATE '{period}' AND to_state = 'retained')",
        "values_match_activation", "disagree with the activation rows"),
    "S3 a move in without a move out": (
        "segment_growth", Grain.daily, DAY,
        "UPDATE visited_segment_growth_daily SET moved_in = moved_in + 1, active = active + 1,"
        " retained = retained + 1, active_change = active_change + 1 WHERE rowid = (SELECT min(rowid)"
        " FROM visited_segment_growth_daily WHERE period_start = DATE '{period}')",
        "accounting_adds_up", "do not add up to the growth table or have unbalanced moves"),
    "S3 a value row that breaks the identity": (
        "segment_growth", Grain.daily, DAY,
        "UPDATE visited_segment_growth_daily SET churned = churned + 1 WHERE rowid = (SELECT min(rowid)"
        " FROM visited_segment_growth_daily WHERE period_start = DATE '{period}')",
        "accounting_adds_up", "1 value rows break the identity"),
    "S4 an inactive user moved": (
        "segment_transitions", Grain.daily, DAY,
        "UPDATE visited_segment_transitions_daily SET value = 'elsewhere' WHERE rowid = (SELECT min(rowid)"
        " FROM visited_segment_transitions_daily WHERE period_start = DATE '{period}' AND to_state = 'inactive')",
        "nobody_moves_while_inactive", "inactive users changed value"),
    "S5 a state value that is not the latest in the fact": (
        "firstlast", Grain.daily, DAY,
        "UPDATE visited_firstlast_daily SET platform = 'elsewhere' WHERE period_start = DATE '{period}'"
        " AND user_id = (SELECT min(user_id) FROM fact_visited WHERE period_start = DATE '{period}'"
        " AND platform IS NOT NULL)",
        "segment_is_latest_value", "differ from the latest value in the fact"),
    "S6 dau off by one in a value": (
        "segment_engagement", Grain.daily, DAY,
        "UPDATE visited_segment_engagement_daily SET dau = dau + 1, wau = wau + 1, mau = mau + 1,"
        " users_ever = users_ever + 1 WHERE rowid = (SELECT min(rowid) FROM visited_segment_engagement_daily"
        " WHERE period_start = DATE '{period}')",
        "sums_to_engagement", "do not add up to the engagement table"),
    # The growth model (G1-G3).
    "G1 a rate doubled": (
        "forecast_rates", Grain.daily, DAY,
        "UPDATE visited_forecast_rates_daily SET rate = rate * 2 WHERE rowid = (SELECT min(rowid)"
        " FROM visited_forecast_rates_daily WHERE period_start = DATE '{period}' AND from_state = 'current')",
        "rates_are_shares", "1 states whose rates do not add up to 1"),
    "G1 a rate above 1": (
        "forecast_rates", Grain.daily, DAY,
        "UPDATE visited_forecast_rates_daily SET rate = 1.5 WHERE rowid = (SELECT min(rowid)"
        " FROM visited_forecast_rates_daily WHERE period_start = DATE '{period}' AND from_state = 'dormant')",
        "rates_are_shares", "1 rates outside (0, 1]"),
    "G1 the inflow's row lost": (
        "forecast_rates", Grain.daily, DAY,
        "DELETE FROM visited_forecast_rates_daily WHERE period_start = DATE '{period}' AND from_state IS NULL",
        "rates_are_shares", "0 inflow rows"),
    "G2 a projected state off by one": (
        "forecast", Grain.daily, DAY,
        "UPDATE visited_forecast_daily SET dormant = dormant + 1 WHERE period_start = DATE '{period}'"
        " AND scenario = 'lift' AND horizon = 3",
        "states_add_up", "1 rows do not add up"),
    "G2 a horizon missing": (
        "forecast", Grain.daily, DAY,
        "DELETE FROM visited_forecast_daily WHERE period_start = DATE '{period}' AND scenario = 'baseline'"
        " AND horizon = 9",
        "states_add_up", "1 scenarios without each horizon"),
    "G2 dau not the active states": (
        "forecast", Grain.daily, DAY,
        "UPDATE visited_forecast_daily SET dau = dau + 1 WHERE period_start = DATE '{period}'"
        " AND scenario = 'baseline' AND horizon = 1",
        "states_add_up", "1 rows do not add up"),
    "G3 an accuracy row against another actual": (
        "forecast_accuracy", Grain.daily, DAY,
        "UPDATE visited_forecast_accuracy_daily SET actual = actual + 1, error = error - 1"
        " WHERE period_start = DATE '{period}' AND horizon = 7 AND measure = 'mau'",
        "equals_forecasts_against_actuals", "1 accuracy rows missing, extra or unequal"),
    "G3 an accuracy row lost": (
        "forecast_accuracy", Grain.daily, DAY,
        "DELETE FROM visited_forecast_accuracy_daily WHERE period_start = DATE '{period}' AND horizon = 1"
        " AND measure = 'dau'",
        "equals_forecasts_against_actuals", "1 accuracy rows missing, extra or unequal"),
}
CHECKS = {"activation": inv.ACTIVATION_CHECKS, "firstlast": inv.FIRSTLAST_CHECKS + inv.SEGMENT_STATE_CHECKS,
          "transitions": inv.TRANSITIONS_CHECKS, "growth": inv.GROWTH_CHECKS, "cohorts": inv.COHORTS_CHECKS,
          "engagement": inv.ENGAGEMENT_CHECKS,
          "engagement_transitions": inv.ENGAGEMENT_TRANSITIONS_CHECKS, "stickiness": inv.STICKINESS_CHECKS,
          "segment_transitions": inv.SEGMENT_TRANSITIONS_CHECKS, "segment_growth": inv.SEGMENT_GROWTH_CHECKS,
          "segment_engagement": inv.SEGMENT_ENGAGEMENT_CHECKS, "forecast": inv.FORECAST_CHECKS,
          "forecast_rates": inv.FORECAST_RATES_CHECKS, "forecast_accuracy": inv.FORECAST_ACCURACY_CHECKS}


@pytest.fixture(scope="module")
def clean(tmp_path_factory):
    directory = tmp_path_factory.mktemp("checks")
    config = small_behavior(directory, SPEC, edge_events(SPEC, seed=31, users=list(range(1, 40))),
                            segments=[{"column": "platform"}],
                            growth_model={"window_days": 7, "horizon_days": 30, "scenarios": {"lift": {"curr": 0.1}}})
    assert run_graph(config) == 0  # a clean run: every check of every partition passes
    return load_config(config)


def _evaluate(conn, config, table: str, grain: Grain, period: dt.date) -> dict[str, inv.CheckOutcome]:
    outcomes: dict[str, inv.CheckOutcome] = {}
    inv.evaluate(conn, CHECKS[table], config.behaviors[0], grain, period, outcomes)
    return outcomes


def _fill(sql: str, period: dt.date) -> str:
    act, prev = "visited_activation_daily", DAY - dt.timedelta(days=1)
    return sql.format(
        period=period,
        one=one_user(act, DAY, "state = 'inactive'"),
        one_churned=one_user(act, DAY, "state = 'inactive' AND prev_state IN ('new', 'retained', 'reactivated')"),
        one_inactive=one_user(act, DAY, "state = 'inactive'"),
        one_retained_before=one_user(act, prev, "state = 'retained'"),
        one_dormant=one_user(act, DAY, "state = 'inactive' AND prev_state = 'inactive'"),
        one_active=one_user(act, DAY, "state IN ('retained', 'reactivated')"),
        one_new_weekly=one_user("visited_activation_weekly", WEEK, "state = 'new'"),
        one_fl=one_user("visited_firstlast_daily", DAY, "last_active_period < period_start"),
    )


def _as_table(conn, name: str) -> None:
    """The activation relation is a view over FirstLast; the checks guard the relation whatever
    writes it, so a corruption of its rows is made on a table copy of the same name."""
    conn.execute(f"CREATE TABLE copy_of_view AS SELECT * FROM {name}")
    conn.execute(f"DROP VIEW {name}")
    conn.execute(f"ALTER TABLE copy_of_view RENAME TO {name}")


def test_the_clean_graph_passes_every_check(clean):
    with duckdb.connect(clean.database, read_only=True) as conn:
        for table, grain, period in [("activation", Grain.daily, DAY), ("firstlast", Grain.daily, DAY),
                                     ("transitions", Grain.daily, DAY), ("growth", Grain.daily, DAY),
                                     ("cohorts", Grain.daily, DAY), ("activation", Grain.weekly, WEEK),
                                     ("engagement", Grain.daily, DAY), ("engagement_transitions", Grain.daily, DAY),
                                     ("stickiness", Grain.daily, DAY), ("segment_transitions", Grain.daily, DAY),
                                     ("segment_transitions", Grain.weekly, WEEK), ("segment_growth", Grain.daily, DAY),
                                     ("segment_engagement", Grain.daily, DAY), ("forecast", Grain.daily, DAY),
                                     ("forecast_rates", Grain.daily, DAY), ("forecast_accuracy", Grain.daily, DAY)]:
            outcomes = _evaluate(conn, clean, table, grain, period)
            assert outcomes and all(o.passed for o in outcomes.values()), outcomes


@pytest.mark.parametrize("case", sorted(CORRUPTIONS))
def test_corruption_is_caught(clean, tmp_path, case):
    table, grain, period, corruption, check_name, words = CORRUPTIONS[case]
    copy = tmp_path / "corrupt.duckdb"
    shutil.copy(clean.database, copy)
    with duckdb.connect(str(copy)) as conn:
        _as_table(conn, f"visited_activation_{grain}")
        changed = conn.execute(_fill(corruption, period)).fetchone()[0]
        assert changed == 1, "the corruption must touch exactly one row"
        outcomes = _evaluate(conn, clean, table, grain, period)
        outcome = outcomes[check_name]
    assert not outcome.passed
    assert outcome.violations >= 1
    assert words in outcome.summary()
    assert str(period) in outcome.summary()
    if case.startswith(("S1", "S2", "S3 a move", "G")):  # these keep what the table's other checks compare
        assert [name for name, o in outcomes.items() if not o.passed] == [check_name]


def test_matches_days_catches_a_model_built_from_days_outside_the_window(clean, tmp_path):
    """Invariant 9 reads the days itself: a fact day left before start_date (say by a moved window)
    that the model counted is caught, although the model's own fact query agrees with itself."""
    from activation_assets.pipeline import steps

    behavior = clean.behaviors[0]
    march = dt.date(2025, 3, 1)  # the first month starts two days before start_date (2025-03-03)
    copy = tmp_path / "corrupt.duckdb"
    shutil.copy(clean.database, copy)
    with duckdb.connect(str(copy)) as conn:
        conn.execute("SET TimeZone = 'UTC'")
        conn.execute("INSERT INTO fact_visited BY NAME SELECT DATE '2025-03-01' AS period_start, 777777 AS user_id,"
                     " TIMESTAMP '2025-02-28 16:00:00' AS occurred_at, DATE '2025-03-01' AS activity_date,"
                     " 'visit' AS event_name, 'web' AS platform")
        steps.materialize_firstlast(conn, behavior, Grain.monthly, [march])
        steps.materialize_activation(conn, behavior, Grain.monthly, [march])
        outcomes = _evaluate(conn, clean, "activation", Grain.monthly, march)
    assert not outcomes["matches_days"].passed
    assert "1 active users not active on any day" in outcomes["matches_days"].summary()
    assert outcomes["matches_days"].examples[0]["user_id"] == 777777
    assert outcomes["active_users_match_fact"].passed  # the model's own query cannot see it


def test_a_failing_check_reports_and_blocks_downstream(tmp_path):
    """Through Dagster: the result carries counts and examples, and nothing downstream runs on it."""
    config = small_behavior(tmp_path, SPEC, edge_events(SPEC, seed=32, users=list(range(1, 30))))
    instance = dg.DagsterInstance.ephemeral()
    keys = ["visited_firstlast_daily", "visited_activation_daily", "visited_transitions_daily"]
    assert materialize(config, ["fact_visited"], "2025-03-03", "2025-04-13", instance).success
    assert materialize(config, keys, "2025-03-03", "2025-04-01", instance).success
    with duckdb.connect(str(tmp_path / "warehouse.duckdb")) as conn:  # the predecessor of 04-02 counts a user twice
        conn.execute("INSERT INTO visited_firstlast_daily SELECT * FROM visited_firstlast_daily"
                     " WHERE period_start = DATE '2025-04-01' ORDER BY user_id LIMIT 1")
    result = materialize(config, keys, "2025-04-02", "2025-04-04", instance)
    evaluations = {e.check_name: e for e in result.get_asset_check_evaluations()
                   if e.asset_key == dg.AssetKey("visited_firstlast_daily")}
    failed = evaluations["one_row_per_user"]
    assert not failed.passed
    assert failed.metadata["failing_partitions"].value == ["2025-04-02", "2025-04-03", "2025-04-04"]
    assert failed.metadata["partitions_checked"].value == 3
    assert "1 duplicated rows" in failed.metadata["summary"].value
    assert "examples" in failed.metadata
    assert evaluations["nobody_disappears"].passed
    # Blocking: Dagster fails the FirstLast step, and activation and transitions never run on it.
    assert not result.success
    assert [e.step_key for e in result.get_step_failure_events()] == ["visited_firstlast_daily"]
    assert not {"visited_activation_daily", "visited_transitions_daily"} & {
        e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}


def test_a_passing_run_records_each_check_as_its_result_without_warnings(tmp_path, caplog):
    """The checks are the steps' check outputs: Dagster neither warns that a step left its outputs
    out nor that a blocking check gated nothing, and a one-partition run logs no progress lines."""
    import logging

    config = small_behavior(tmp_path, SPEC, edge_events(SPEC, seed=34, users=list(range(1, 12))))
    keys = ["visited_firstlast_daily", "visited_activation_daily", "visited_transitions_daily"]
    instance = dg.DagsterInstance.ephemeral()
    assert materialize(config, ["fact_visited"], "2025-03-03", "2025-03-05", instance).success
    caplog.set_level(logging.WARNING)
    for first, last in [("2025-03-03", "2025-03-04"), ("2025-03-05", "2025-03-05")]:
        result = materialize(config, keys, first, last, instance)
        assert result.success
        evaluations = result.get_asset_check_evaluations()
        assert evaluations and all(e.passed for e in evaluations)
        messages = [entry.user_message for entry in instance.all_logs(result.run_id) if not entry.is_dagster_event]
        assert not [m for m in messages if "did not yield" in m], messages
        assert not [r.getMessage() for r in caplog.records if "Blocking asset check" in r.getMessage()]
        assert bool([m for m in messages if "partitions done" in m]) == (first != last), messages


@pytest.mark.parametrize("case", sorted(c for c, v in CORRUPTIONS.items()
                                        if v[0] in ("activation", "firstlast", "transitions", "growth", "cohorts",
                                                    "engagement", "engagement_transitions", "stickiness")))
def test_a_range_of_partitions_is_judged_as_each_partition_alone(clean, tmp_path, case):
    """A run checks its whole range in one pass per check family: every partition must get the
    verdict and the words it gets checked alone, each check by its own query (the corruption is in one partition, and the
    partition after it compares with it)."""
    from activation_assets.periods import existing_periods

    table, grain, period, corruption, check_name, words = CORRUPTIONS[case]
    copy = tmp_path / "corrupt.duckdb"
    shutil.copy(clean.database, copy)
    behavior = clean.behaviors[0]
    periods = existing_periods(behavior, grain)
    assert len(periods) > (inv.SPAN_PARTITIONS if grain is Grain.daily else 3)  # daily: more than one statement
    with duckdb.connect(str(copy)) as conn:
        conn.execute("SET TimeZone = 'UTC'")
        _as_table(conn, f"visited_activation_{grain}")
        conn.execute(_fill(corruption, period))
        together: dict[str, inv.CheckOutcome] = {}
        inv.evaluate_range(conn, CHECKS[table], behavior, grain, periods, together)
        alone: dict[str, inv.CheckOutcome] = {}  # each check by itself: its own per-partition query
        for each in periods:
            for check in CHECKS[table]:
                inv.evaluate(conn, [check], behavior, grain, each, alone)
    def verdicts(outcomes):  # a detail lists per-state counts in no fixed order: compare them as a set
        return {name: (o.partitions, {p: (v, sorted(d.split(", "))) for p, (v, d) in o.failing.items()})
                for name, o in outcomes.items()}

    assert verdicts(together) == verdicts(alone)
    assert period in together[check_name].failing


@pytest.mark.parametrize("every", [1, 4])
def test_the_windows_over_a_long_span_judge_as_each_day_alone(clean, tmp_path, monkeypatch, every):
    """windows_match_fact reads a span's days as bits of one BIGINT: a span whose days and windows
    do not fit in 62 bits (all 42 days in one span; every 4th day) is read in several groups."""
    from activation_assets.periods import existing_periods

    monkeypatch.setattr(inv, "SPAN_PARTITIONS", 100)
    behavior = clean.behaviors[0]
    days = existing_periods(behavior, Grain.daily)[::every]
    assert (days[-1] - days[0]).days + behavior.engagement.month_days > 62
    copy = tmp_path / "corrupt.duckdb"
    shutil.copy(clean.database, copy)
    with duckdb.connect(str(copy)) as conn:
        conn.execute("SET TimeZone = 'UTC'")
        # a user more in the fact on one late day: its windows, in the later group(s), disagree
        conn.execute(_fill(CORRUPTIONS["E2 the fact has one more user in the week"][3], days[-2]))
        checks = [c for c in inv.ENGAGEMENT_CHECKS if c.name == "windows_match_fact"]
        together: dict[str, inv.CheckOutcome] = {}
        inv.evaluate_range(conn, checks, behavior, Grain.daily, days, together)
        alone: dict[str, inv.CheckOutcome] = {}
        for day in days:
            inv.evaluate(conn, checks, behavior, Grain.daily, day, alone)
    assert {n: (o.partitions, o.failing) for n, o in together.items()} == \
           {n: (o.partitions, o.failing) for n, o in alone.items()}
    assert len(alone["windows_match_fact"].failing) >= 2


SET_CHECKS = ("one_row_per_user", "nobody_disappears")


@pytest.mark.parametrize("seed", range(6))
def test_the_set_checks_over_a_span_judge_as_each_partition_alone(clean, monkeypatch, seed):
    """The set checks' span form (each user's periods as bits) against their per-partition queries,
    on random corruptions no pipeline would write: duplicates, null ids, users dropped and back
    later, over random gappy lists of partitions split into short spans. A span whose first period
    is the grain's first has no predecessor; a gap leaves a predecessor outside the span."""
    import random

    from activation_assets.periods import existing_periods

    rng = random.Random(seed)
    behavior = clean.behaviors[0]
    days = existing_periods(behavior, Grain.daily)[:20]
    monkeypatch.setattr(inv, "SPAN_PARTITIONS", rng.choice([3, 5, 31]))
    rows = []
    for user in range(1, 25):
        first = rng.randrange(len(days))
        for day in days[first:]:
            if rng.random() < 0.08:
                continue  # dropped here (maybe back later)
            rows += [(day, None if rng.random() < 0.02 else user)] * (2 if rng.random() < 0.04 else 1)
    periods = sorted(rng.sample(days, rng.randrange(2, len(days))))
    with duckdb.connect() as conn:
        for relation in ("visited_firstlast_daily", "visited_activation_daily"):
            conn.execute(f"CREATE TABLE {relation} (period_start DATE, user_id BIGINT)")
            conn.executemany(f"INSERT INTO {relation} VALUES (?, ?)", rows)
        # nobody_disappears also reads who is new in p (FirstLast's first_active_period, activation's
        # state; activation's also compares row counts with the new users): count none new.
        conn.execute("ALTER TABLE visited_firstlast_daily ADD COLUMN first_active_period DATE")
        for column in ("state VARCHAR DEFAULT 'inactive'", "prev_state VARCHAR DEFAULT 'inactive'",
                       "first_active_period DATE", "last_active_period DATE", "streak INTEGER",
                       "inactive_streak INTEGER", "active_periods INTEGER", "return_gap INTEGER"):
            conn.execute(f"ALTER TABLE visited_activation_daily ADD COLUMN {column}")
        for family in (inv.FIRSTLAST_CHECKS, inv.ACTIVATION_CHECKS):
            chosen = [c for c in family if c.name in SET_CHECKS]
            together: dict[str, inv.CheckOutcome] = {}
            inv.evaluate_range(conn, chosen, behavior, Grain.daily, periods, together)
            alone: dict[str, inv.CheckOutcome] = {}
            for period in periods:
                inv.evaluate(conn, chosen, behavior, Grain.daily, period, alone)
            assert {n: (o.partitions, o.failing) for n, o in together.items()} == \
                   {n: (o.partitions, o.failing) for n, o in alone.items()}
            assert any(o.failing for o in alone.values())  # the corruption was seen


def test_the_checks_run_alone_as_the_uis_execute_runs_them(tmp_path):
    """The checks run alone (what the UI's Execute does) evaluate the stored partitions without
    writing anything: the chosen partitions, or with none chosen every partition written."""
    from activation_assets.config import load_config
    from activation_assets.orchestration.definitions import build_definitions

    config = small_behavior(tmp_path, SPEC, edge_events(SPEC, seed=33, users=list(range(1, 30))))
    instance = dg.DagsterInstance.ephemeral()
    keys = ["visited_firstlast_daily", "visited_activation_daily"]
    assert materialize(config, ["fact_visited"], "2025-03-03", "2025-03-12", instance).success
    assert materialize(config, keys, "2025-03-03", "2025-03-12", instance).success
    with duckdb.connect(str(tmp_path / "warehouse.duckdb")) as conn:  # 03-06 counts a user twice
        conn.execute("INSERT INTO visited_firstlast_daily SELECT * FROM visited_firstlast_daily"
                     " WHERE period_start = DATE '2025-03-06' ORDER BY user_id LIMIT 1")
    check = dg.AssetCheckKey(dg.AssetKey("visited_firstlast_daily"), "one_row_per_user")
    checks_only = build_definitions(load_config(config)).resolve_job_def("visited_daily").get_subset(
        asset_selection=set(), asset_check_selection={check})
    before = len(instance.fetch_materializations(dg.AssetKey("visited_firstlast_daily"), limit=1000).records)
    chosen = checks_only.execute_in_process(
        instance=instance, raise_on_error=False,
        tags={"dagster/asset_partition_range_start": "2025-03-07", "dagster/asset_partition_range_end": "2025-03-09"})
    [passed] = chosen.get_asset_check_evaluations()
    assert passed.passed and passed.metadata["partitions_checked"].value == 3
    every = checks_only.execute_in_process(instance=instance, raise_on_error=False)
    [failed] = every.get_asset_check_evaluations()
    assert failed.check_name == "one_row_per_user" and not failed.passed
    assert failed.metadata["partitions_checked"].value == 10
    assert failed.metadata["failing_partitions"].value == ["2025-03-06"]
    assert not chosen.get_asset_materialization_events() and not every.get_asset_materialization_events()
    assert len(instance.fetch_materializations(dg.AssetKey("visited_firstlast_daily"), limit=1000).records) == before
