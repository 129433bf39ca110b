"""What the CLI prints: one voice (`say`), the summary of the last periods, what changed, failed checks."""

from __future__ import annotations

import datetime as dt

from activation_assets.config import ActivationConfig, BehaviorConfig, Grain
from activation_assets.engines import open_warehouse
from activation_assets.models import sql
from activation_assets.periods import existing_periods
from activation_assets.pipeline.plan import Findings


class CommandError(Exception):
    pass


def say(message: str = "") -> None:
    print(message, flush=True)


def summary(config: ActivationConfig, behaviors: list[BehaviorConfig],
            last_days: dict[str, dt.date | None] | None = None) -> None:

    with open_warehouse(config, read_only=True) as warehouse:
        if warehouse is None:
            return
        say("\nLast complete period of each grain:")
        say(f"  {'behavior':<14} {'grain':<8} {'period':<11} {'active':>8} {'new':>7} {'retained':>9}"
            f" {'reactiv.':>9} {'churned':>8} {'users':>8}")
        for behavior in behaviors:
            for grain in behavior.grains:
                table = sql.activation_table(behavior.name, grain)
                periods = existing_periods(behavior, grain)
                if not periods or not warehouse.table_exists(table):
                    continue
                row = warehouse.query_one(sql.state_counts_by_period(table, periods[-1], periods[-1]))
                n = dict(zip(("period_start", "users", *sql.STATES, "churned"), row or (None,) + (0,) * 6))
                active = n["new"] + n["retained"] + n["reactivated"]
                say(f"  {behavior.name:<14} {grain.value:<8} {periods[-1]!s:<11} {active:>8} {n['new']:>7}"
                    f" {n['retained']:>9} {n['reactivated']:>9} {n['churned']:>8} {n['users']:>8}")
        engaged = [(b, sql.engagement_table(b.name)) for b in behaviors if Grain.daily in b.grains]
        rows = [(b, warehouse.query_one(f"SELECT period_start, dau, wau, mau, dau_mau FROM {sql.ident(t)}"
                                        " ORDER BY period_start DESC LIMIT 1"))
                for b, t in engaged if warehouse.table_exists(t)]
        if any(row for _, row in rows):
            say("\nRolling engagement on the last day:")
            say(f"  {'behavior':<14} {'day':<11} {'DAU':>8} {'WAU':>8} {'MAU':>8} {'DAU/MAU':>8}")
            for behavior, row in rows:
                if row:
                    day, dau, wau, mau, ratio = row
                    say(f"  {behavior.name:<14} {day!s:<11} {dau:>8} {wau:>8} {mau:>8}"
                        f" {'' if ratio is None else f'{ratio:.1%}':>8}")
    for note in stale_sources(behaviors, last_days or {}):
        say(f"note: {note}")


def say_source_changes(findings: Findings) -> None:
    for name, changes in findings.changes.items():
        if not changes.days:
            if changes.changed_files or changes.new_files or changes.removed_files or changes.days_read:
                say(f"behavior {name!r}: {changes.describe_files()}; their fact days are current"
                    f" (read {changes.read})")
            continue
        say(f"behavior {name!r}: {len(changes.days)} fact day(s) outdated, their source rows changed"
            f" ({changes.describe_files()}; read {changes.read}):")
        for line in changes.describe_days("  "):
            say(line)
    for (name, grain), outdated in findings.grains.items():
        if outdated.rebuilt_inputs:
            first = outdated.first_rebuilt
            say(f"behavior {name!r} {getattr(grain, 'value', grain)}: partitions from {first} on are outdated:"
                f" {outdated.rebuilt_inputs[first]}")


def span(days: list[dt.date]) -> str:
    return f"{days[0]}" if len(days) == 1 else f"{days[0]}..{days[-1]}"


def show_failure(outcome) -> None:
    failing = [str(p) for p in outcome.failing]
    more = f" (+{len(failing) - 10} more)" if len(failing) > 10 else ""
    say(f"     failing partitions: {', '.join(failing[:10])}{more}")
    for period, (count, detail) in list(outcome.failing.items())[:3]:
        say(f"     {period}: {count} violation(s): {detail}")
    if outcome.examples:
        names = list(outcome.examples[0])
        say("     examples: " + " | ".join(names))
        for row in outcome.examples:
            say("               " + " | ".join("NULL" if row[n] is None else str(row[n]) for n in names))


# A source whose last event is this many days before the last complete day is reported: without
# end_date, every day up to yesterday gets a partition, and the later ones are empty.
STALE_SOURCE_DAYS = 7


def stale_sources(behaviors: list[BehaviorConfig], last_days: dict[str, dt.date | None],
                  today: dt.date | None = None) -> list[str]:
    """Behaviors without end_date whose source ended well before the last complete day."""
    notes = []
    for behavior in behaviors:
        if behavior.name not in last_days:
            continue
        days = existing_periods(behavior, Grain.daily, today)
        last = last_days[behavior.name]
        if not days or (last is not None and (days[-1] - last).days < STALE_SOURCE_DAYS):
            continue
        empty = (days[-1] - last).days if last else len(days)
        notes.append(
            f"behavior {behavior.name!r}: its source's last event is on {last or '(none)'}, but without"
            f" `end_date` partitions are built up to {days[-1]}: the last {empty} day(s) have no events"
            f" (every user inactive). If the source has ended, set `end_date: {last}`.")
    return notes


def describe_segment_values(behavior: str, segment, counts: list[tuple[str | None, int]], shown: int = 8) -> str:
    """One line per segment for `activation validate`: its distinct values in the source, the most
    frequent first with their share of rows, and what `values:` and `max_values:` make of them."""
    total = sum(n for _, n in counts) or 1
    present = [(v, n) for v, n in counts if v is not None]
    missing = sum(n for v, n in counts if v is None)
    listed = ", ".join(f"{v} {100 * n / total:.0f}%" for v, n in present[:shown])
    more = f", and {len(present) - shown} more" if len(present) > shown else ""
    line = (f"behavior {behavior!r}: segment {segment.key!r} (column {segment.column!r}): {len(present)} distinct"
            f" value(s) in the source: {listed or 'none'}{more}")
    if missing:
        line += f"; {100 * missing / total:.0f}% of rows have none"
    if segment.values is not None:
        other = sum(1 for v, _ in present if v not in segment.values)
        line += f"; values: keeps {len(segment.values)}, {other} become 'other'"
    elif len(present) > segment.max_values:
        line += (f". More than max_values {segment.max_values}: a partition with that many values fails; list"
                 " the values to keep with `values:` or raise `max_values:`")
    return line
