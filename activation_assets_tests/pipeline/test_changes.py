"""Sources change: late, corrected and deleted rows are found without being told where, and one run
brings every table up to what a fresh run over the corrected source gives.

The expected outdated days are derived here from the rows each change touches (their local dates,
by zoneinfo), never from the code's output.
"""

from __future__ import annotations

import datetime as dt
import shutil
from collections import Counter
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from activation_assets import cli

from activation_assets.pipeline import steps
from activation_assets.pipeline.changes import detect
from activation_assets.config import Grain, load_config
from activation_assets.orchestration.definitions import build_definitions
from activation_assets.periods import existing_periods
from activation_assets.models.sql import PARTITION_LOG
from activation_assets.engines.duckdb import DuckDBWarehouse

from .. import reference
from ..conftest import edge_events, local_instant, materialize, write_config, write_parquet_source

SPEC = reference.Spec("Asia/Seoul", dt.date(2025, 3, 3), dt.date(2025, 3, 23), "monday")
USERS = list(range(1, 25))


def _utc_day(t: dt.datetime | None) -> dt.date:
    return SPEC.start_date if t is None else t.astimezone(dt.timezone.utc).date()


def _write_days(directory: Path, rows: list[tuple]) -> None:
    """The source as daily Hive-style directories keyed by UTC date: events/date=YYYY-MM-DD/part-0.parquet."""
    shutil.rmtree(directory / "events", ignore_errors=True)
    by_day: dict[dt.date, list[tuple]] = {}
    for row in rows:
        by_day.setdefault(_utc_day(row[1]), []).append(row)
    for day, day_rows in by_day.items():
        write_parquet_source(directory / "events" / f"date={day}" / "part-0.parquet", day_rows)


def _rewrite_day(directory: Path, rows: list[tuple], utc_day: dt.date) -> None:
    path = directory / "events" / f"date={utc_day}" / "part-0.parquet"
    day_rows = [r for r in rows if _utc_day(r[1]) == utc_day]
    if day_rows:
        write_parquet_source(path, day_rows)
    else:
        shutil.rmtree(path.parent)


def _config(directory: Path) -> Path:
    return write_config(directory, [{
        "name": "visited", "source": {"parquet": "events/*/*.parquet", "where": "event_name = 'visit'"},
        "user_column": "uid", "time_column": "ts", "start_date": SPEC.start_date, "end_date": SPEC.end_date,
        "timezone": SPEC.timezone, "grains": ["daily", "weekly"],
    }])


def _local(t: dt.datetime | None) -> dt.date | None:
    return None if t is None else reference.local_date(t, SPEC.timezone)


def _in_window(days) -> set[dt.date]:
    return {d for d in days if d is not None and SPEC.start_date <= d <= SPEC.end_date}


def _source_rows_per_day(rows: list[tuple]) -> Counter:
    return Counter(_local(t) for _, t in rows if t is not None)


class RecordingWarehouse(DuckDBWarehouse):
    """Remembers every statement, to show what finding changes read."""

    def __init__(self, conn):
        super().__init__(conn)
        self.statements: list[str] = []

    def query(self, statement):
        self.statements.append(statement)
        return super().query(statement)

    def stage(self, name, select):
        self.statements.append(select)
        return super().stage(name, select)

    def column_types(self, relation):
        self.statements.append(relation)
        return super().column_types(relation)


@pytest.fixture
def built(tmp_path):
    """Fact days written from a Hive-laid-out source, and the first look that records its files."""
    rows = edge_events(SPEC, seed=31, users=USERS)
    _write_days(tmp_path, rows)
    behavior = load_config(_config(tmp_path)).behaviors[0]
    conn = duckdb.connect(str(tmp_path / "warehouse.duckdb"))
    conn.execute("SET TimeZone = 'UTC'")
    warehouse = RecordingWarehouse(conn)
    warehouse.ensure_partition_log()
    steps.materialize_fact(warehouse, behavior, existing_periods(behavior, Grain.daily))
    assert detect(warehouse, behavior).days == {}
    yield {"rows": rows, "behavior": behavior, "wh": warehouse, "dir": tmp_path}
    conn.close()


def _pick(rows, test) -> tuple:
    return next(r for r in rows if r[0] is not None and r[1] is not None and test(r)
                and SPEC.start_date < _local(r[1]) < SPEC.end_date)


# Each change returns the rows of the source afterwards and the UTC-day files it rewrote.
def _late_rows(rows):
    day = dt.date(2025, 3, 12)
    late = [(3, local_instant(day, 60, SPEC.timezone)), (4242, local_instant(day, 50_000, SPEC.timezone))]
    return rows + late, {_utc_day(t) for _, t in late}


def _corrected_row(rows):
    row = _pick(rows, lambda r: r[0] % 2 == 0)
    fixed = [(r[0] + 1, r[1]) if r is row else r for r in rows]  # the user id was wrong
    return fixed, {_utc_day(row[1])}


def _deleted_row(rows):
    row = _pick(rows, lambda r: rows.count(r) == 1)
    return [r for r in rows if r is not row], {_utc_day(row[1])}


def _emptied_day(rows):
    day = _local(_pick(rows, lambda r: True)[1])
    gone = [r for r in rows if _local(r[1]) == day]
    return [r for r in rows if _local(r[1]) != day], {_utc_day(t) for _, t in gone}


def _moved_across_midnight(rows):
    """An event at 23:59:59 local is corrected to two seconds later: the next local day."""
    row = _pick(rows, lambda r: (r[1].astimezone(reference.ZoneInfo(SPEC.timezone)).time() == dt.time(23, 59, 59)))
    moved = (row[0], row[1] + dt.timedelta(seconds=2))
    return [moved if r is row else r for r in rows], {_utc_day(row[1]), _utc_day(moved[1])}


CHANGES = {
    "late rows": _late_rows, "a corrected row": _corrected_row, "a deleted row": _deleted_row,
    "an emptied day": _emptied_day, "a day moved by a timezone edge": _moved_across_midnight,
}


@pytest.mark.parametrize("change", CHANGES)
def test_a_changed_file_names_exactly_the_days_whose_rows_changed(built, change):
    rows, directory, wh, behavior = built["rows"], built["dir"], built["wh"], built["behavior"]
    after, files = CHANGES[change](rows)
    for day in files:
        _rewrite_day(directory, after, day)
    before_counts, after_counts = _source_rows_per_day(rows), _source_rows_per_day(after)
    changed_rows = Counter(rows) - Counter(after) + (Counter(after) - Counter(rows))
    expected = _in_window(_local(t) for _, t in changed_rows)
    assert expected, "the change touches a day of the window"

    changes = detect(wh, behavior)
    assert set(changes.days) == expected
    for day, found in changes.days.items():
        assert (found.rows_before, found.rows_now) == (before_counts[day], after_counts[day])
    # Only the changed files' days were read again (a Hive key is a UTC day: a local day either side).
    assert changes.days_read <= 3 * len(files)

    # Writing those days again makes the fact what a fresh build over the changed source makes.
    steps.materialize_fact(wh, behavior, sorted(changes.days))
    assert detect(wh, behavior).days == {}
    assert _fact(wh.conn) == _fresh_fact(directory, behavior)


def _fact(conn) -> list[tuple]:
    return conn.execute("SELECT * FROM fact_visited ORDER BY ALL").fetchall()


def _fresh_fact(directory: Path, behavior) -> list[tuple]:
    with duckdb.connect(str(directory / "fresh.duckdb")) as conn:
        conn.execute("SET TimeZone = 'UTC'")
        wh = DuckDBWarehouse(conn)
        wh.ensure_partition_log()
        steps.materialize_fact(wh, behavior, existing_periods(behavior, Grain.daily))
        return _fact(conn)


def test_a_new_file_and_a_removed_file(built):
    rows, directory, wh, behavior = built["rows"], built["dir"], built["wh"], built["behavior"]
    new_day = dt.date(2025, 3, 9)
    added = [(5, local_instant(new_day, 3600, SPEC.timezone)), (6, local_instant(new_day, 7200, SPEC.timezone))]
    write_parquet_source(directory / "events" / "date=2025-03-08" / "part-late.parquet", added)
    removed_day = dt.date(2025, 3, 16)
    removed = [r for r in rows if _utc_day(r[1]) == removed_day]
    shutil.rmtree(directory / "events" / f"date={removed_day}")

    changes = detect(wh, behavior)
    assert [Path(p).name for p in changes.new_files] == ["part-late.parquet"]
    assert [Path(p).parent.name for p in changes.removed_files] == [f"date={removed_day}"]
    assert set(changes.days) == _in_window(_local(t) for _, t in added + removed)
    steps.materialize_fact(wh, behavior, sorted(changes.days))
    assert _fact(wh.conn) == _fresh_fact(directory, behavior)
    assert detect(wh, behavior).days == {}  # ... which also records the files as seen, or gone:
    again = detect(wh, behavior)
    assert (again.new_files, again.removed_files, again.read) == ([], [], "nothing")


def test_nothing_changed_reads_nothing(built):
    wh, behavior = built["wh"], built["behavior"]
    wh.statements.clear()
    changes = detect(wh, behavior)
    assert changes.days == {} and changes.days_read == 0 and changes.read == "nothing"
    assert not [s for s in wh.statements if "read_parquet" in s], "no source file was opened"


def test_a_table_source_is_fingerprinted_in_one_pass(tmp_path):
    rows = edge_events(SPEC, seed=32, users=USERS)
    write_parquet_source(tmp_path / "events.parquet", rows)
    config = load_config(write_config(tmp_path, [{
        "name": "visited", "source": {"table": "raw_events", "where": "event_name = 'visit'"},
        "user_column": "uid", "time_column": "ts", "start_date": SPEC.start_date, "end_date": SPEC.end_date,
        "timezone": SPEC.timezone}]))
    behavior = config.behaviors[0]
    with duckdb.connect(str(tmp_path / "warehouse.duckdb")) as conn:
        conn.execute("SET TimeZone = 'UTC'")
        conn.execute(f"CREATE TABLE raw_events AS SELECT * FROM read_parquet('{tmp_path / 'events.parquet'}')")
        wh = DuckDBWarehouse(conn)
        wh.ensure_partition_log()
        steps.materialize_fact(wh, behavior, existing_periods(behavior, Grain.daily))
        assert detect(wh, behavior).days == {}
        row = _pick(rows, lambda r: True)
        conn.execute(f"DELETE FROM raw_events WHERE uid = {row[0]} AND ts = TIMESTAMP '{row[1].replace(tzinfo=None)}'")
        changes = detect(wh, behavior)
        assert set(changes.days) == {_local(row[1])}
        assert "whole source" in changes.read


# --- through the command line ----------------------------------------------------------------------


def _every_table(database: Path) -> dict[str, list[str]]:
    with duckdb.connect(str(database), read_only=True) as conn:
        tables = [r[0] for r in conn.execute("SELECT table_name FROM information_schema.tables").fetchall()
                  if not r[0].startswith("_activation_source")]
        return {t: sorted(map(repr, conn.execute(
            f'SELECT * {"EXCLUDE (written_at)" if t == PARTITION_LOG else ""} FROM "{t}"').fetchall()))
            for t in tables}


def _fresh_run(directory: Path, monkeypatch) -> dict[str, list[str]]:
    fresh = directory / "fresh.yaml"
    fresh.write_text((directory / "activation.yaml").read_text().replace("warehouse.duckdb", "fresh.duckdb"))
    monkeypatch.setenv("DAGSTER_HOME", str(directory / "fresh_home"))
    assert cli.main(["materialize", "--config", str(fresh)]) == 0
    return _every_table(directory / "fresh.duckdb")


def _source_check(config: str):
    """Run only the fact's source_days_current check, as the UI's *Execute checks* does."""
    defs = build_definitions(load_config(config))
    result = dg.materialize([*defs.assets, *defs.asset_checks], resources=dict(defs.resources),
                            selection=dg.AssetSelection.checks_for_assets("fact_visited"),
                            instance=dg.DagsterInstance.ephemeral())
    [evaluation] = result.get_asset_check_evaluations()
    return evaluation


def test_materialize_finds_the_changes_says_which_and_equals_a_fresh_run(tmp_path, monkeypatch, capsys):
    rows = edge_events(SPEC, seed=33, users=USERS)
    _write_days(tmp_path, rows)
    config = str(_config(tmp_path))
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home"))
    assert cli.main(["materialize", "--config", config]) == 0
    assert cli.main(["status", "--config", config]) == 0
    assert "Everything is current." in capsys.readouterr().out

    after, files = _late_rows(rows)
    for change in (_emptied_day, _moved_across_midnight):
        after, more = change(after)
        files |= more
    for day in files:
        _rewrite_day(tmp_path, after, day)
    expected = _in_window(_local(t) for _, t in (Counter(rows) - Counter(after)) + (Counter(after) - Counter(rows)))

    assert cli.main(["status", "--config", config]) == 1
    out = capsys.readouterr().out
    assert f"{len(expected)} day(s) outdated" in out and all(str(day) in out for day in expected)
    assert f"activation materialize --config {config}" in out
    # In the UI, the fact's check says the same, listing the days.
    evaluation = _source_check(config)
    assert not evaluation.passed and evaluation.metadata["outdated_days"].value == len(expected)
    assert all(str(day) in evaluation.metadata["days"].value for day in expected)

    assert cli.main(["materialize", "--config", config]) == 0
    out = capsys.readouterr().out
    assert f"{len(expected)} fact day(s) outdated" in out
    for day in expected:
        assert f"{day}: source rows {_source_rows_per_day(rows)[day]} -> {_source_rows_per_day(after)[day]}" in out
    # One run per asset range: the fact days, then each grain from its first outdated period on.
    assert f"visited daily: {(SPEC.end_date - min(expected)).days + 1} partition(s) {min(expected)}.." in out
    assert cli.main(["status", "--config", config]) == 0
    assert cli.main(["materialize", "--config", config]) == 0
    assert "Nothing to do" in capsys.readouterr().out
    assert _source_check(config).passed
    assert _every_table(tmp_path / "warehouse.duckdb") == _fresh_run(tmp_path, monkeypatch)


def test_partitions_built_before_their_input_was_rewritten_are_found(tmp_path, monkeypatch, capsys):
    """A fact day materialized on its own (as the UI allows): every later partition is outdated."""
    rows = edge_events(SPEC, seed=34, users=USERS)
    _write_days(tmp_path, rows)
    config = _config(tmp_path)
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home"))
    assert cli.main(["materialize", "--config", str(config)]) == 0
    after, files = _late_rows(rows)
    for day in files:
        _rewrite_day(tmp_path, after, day)
    late_day = dt.date(2025, 3, 12)
    assert materialize(config, ["fact_visited"], str(late_day)).success
    capsys.readouterr()

    assert cli.main(["status", "--config", str(config)]) == 1
    out = capsys.readouterr().out
    assert "fact_visited: current" in out
    assert f"built before an input was written again, from {late_day} (fact_visited {late_day} was written" in out
    assert cli.main(["materialize", "--config", str(config)]) == 0
    assert f"visited daily: {(SPEC.end_date - late_day).days + 1} partition(s) {late_day}.." in capsys.readouterr().out
    assert cli.main(["status", "--config", str(config)]) == 0
    assert _every_table(tmp_path / "warehouse.duckdb") == _fresh_run(tmp_path, monkeypatch)


def test_a_fact_day_written_again_with_the_same_rows_outdates_nothing(tmp_path, monkeypatch, capsys):
    """`--grain weekly --from --to` rewrites the window's fact days: with their rows as they were,
    the log keeps their times and no daily or monthly partition is outdated; a day whose rows did
    change is logged anew and outdates what reads it."""
    rows = edge_events(SPEC, seed=35, users=USERS)
    _write_days(tmp_path, rows)
    config = _config(tmp_path)
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home"))
    assert cli.main(["materialize", "--config", str(config)]) == 0
    with duckdb.connect(str(tmp_path / "warehouse.duckdb")) as conn:
        logged = dict(conn.execute(f"SELECT period_start, written_at FROM {PARTITION_LOG}"
                                   " WHERE table_name = 'fact_visited'").fetchall())
    assert cli.main(["materialize", "--config", str(config), "--grain", "weekly",
                     "--from", "2025-03-10", "--to", "2025-03-23"]) == 0
    with duckdb.connect(str(tmp_path / "warehouse.duckdb")) as conn:
        again = dict(conn.execute(f"SELECT period_start, written_at FROM {PARTITION_LOG}"
                                  " WHERE table_name = 'fact_visited'").fetchall())
    assert again == logged
    capsys.readouterr()
    assert cli.main(["status", "--config", str(config)]) == 0, capsys.readouterr().out

    # One day's rows changed in the warehouse behind the layer's back: rewriting it restores them,
    # which is a change: it is logged anew, and what reads it is outdated.
    with duckdb.connect(str(tmp_path / "warehouse.duckdb")) as conn:
        conn.execute("DELETE FROM fact_visited WHERE period_start = DATE '2025-03-12'"
                     " AND user_id = (SELECT min(user_id) FROM fact_visited WHERE period_start = DATE '2025-03-12')")
    assert materialize(config, ["fact_visited"], "2025-03-12").success
    with duckdb.connect(str(tmp_path / "warehouse.duckdb")) as conn:
        rewritten = dict(conn.execute(f"SELECT period_start, written_at FROM {PARTITION_LOG}"
                                      " WHERE table_name = 'fact_visited'").fetchall())
    assert {d for d in rewritten if rewritten[d] != logged[d]} == {dt.date(2025, 3, 12)}
    capsys.readouterr()
    assert cli.main(["status", "--config", str(config)]) == 1
    assert "built before an input was written again, from 2025-03-12" in capsys.readouterr().out
