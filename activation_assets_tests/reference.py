"""A brute-force reference of the activation contract, written from the spec and nothing else.

It works on Python objects (no DuckDB, no SQL, nothing from `activation_assets`): local dates via
zoneinfo, periods by walking the calendar day by day, and every column of (u, p) by looking back
through the user's whole history. Slow and obviously right is the point.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from dataclasses import dataclass
from zoneinfo import ZoneInfo

UTC = dt.timezone.utc
ACTIVE = {"new", "retained", "reactivated"}
WEEKDAYS = ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]


@dataclass(frozen=True)
class Spec:
    timezone: str
    start_date: dt.date
    end_date: dt.date
    week_start: str = "monday"


def local_date(value, timezone: str) -> dt.date | None:
    """A naive timestamp is UTC; an aware one is converted; a string is parsed first."""
    if value is None:
        return None
    if isinstance(value, str):
        value = dt.datetime.fromisoformat(value)
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(ZoneInfo(timezone)).date()


def period_of(day: dt.date, grain: str, week_start: str) -> dt.date:
    if grain == "daily":
        return day
    if grain == "monthly":
        return dt.date(day.year, day.month, 1)
    # Walk back to the configured weekday.
    while WEEKDAYS[day.weekday()] != week_start:
        day -= dt.timedelta(days=1)
    return day


def periods(spec: Spec, grain: str) -> list[dt.date]:
    """Every period that contains a day of [start_date, end_date] and ends on or before end_date."""
    days = [spec.start_date + dt.timedelta(days=i) for i in range((spec.end_date - spec.start_date).days + 1)]
    starts = sorted({period_of(d, grain, spec.week_start) for d in days})
    complete = []
    for start in starts:
        # Last day of the period: the day before the next period starts.
        day = start
        while period_of(day + dt.timedelta(days=1), grain, spec.week_start) == start:
            day += dt.timedelta(days=1)
        if day <= spec.end_date:
            complete.append(start)
    return complete


def valid_days(rows: list[tuple], spec: Spec) -> dict:
    """user -> set of local dates of valid fact rows."""
    out: dict = {}
    for user, when in rows:
        day = local_date(when, spec.timezone)
        if user is None or day is None or not (spec.start_date <= day <= spec.end_date):
            continue
        out.setdefault(user, set()).add(day)
    return out


def activation(rows: list[tuple], spec: Spec, grain: str) -> list[dict]:
    """One dict per (user, period) with every column of <b>_activation_<g>."""
    days = valid_days(rows, spec)
    plist = periods(spec, grain)
    index = {p: i for i, p in enumerate(plist)}
    out = []
    for user, user_days in days.items():
        active = [False] * len(plist)
        for day in user_days:
            p = period_of(day, grain, spec.week_start)
            if p in index:  # a day in an incomplete trailing period is activity of no period
                active[index[p]] = True
        if not any(active):
            continue
        first = active.index(True)
        states: list[str] = []
        for i in range(first, len(plist)):
            if i == first:
                state = "new"
            elif active[i]:
                state = "retained" if active[i - 1] else "reactivated"
            else:
                state = "inactive"
            states.append(state)
            streak = 0
            while i - streak >= first and active[i - streak]:
                streak += 1
            away = 0
            while i - away >= first and not active[i - away]:
                away += 1
            gap = None
            if state == "reactivated":
                gap = 0
                while not active[i - 1 - gap]:
                    gap += 1
            last = max(j for j in range(first, i + 1) if active[j])
            out.append({
                "period_start": plist[i],
                "user_id": user,
                "state": state,
                "prev_state": states[-2] if len(states) > 1 else None,
                "first_active_period": plist[first],
                "last_active_period": plist[last],
                "streak": streak,
                "inactive_streak": away,
                "return_gap": gap,
                "active_periods": sum(active[first:i + 1]),
            })
    return out


def transitions(activation_rows: list[dict]) -> list[dict]:
    counts = Counter((r["period_start"], r["prev_state"], r["state"]) for r in activation_rows)
    return [{"period_start": p, "from_state": f, "to_state": t, "users": n} for (p, f, t), n in counts.items()]


def fact_rows(rows: list[tuple], spec: Spec) -> int:
    """How many rows the fact keeps: valid, exact duplicates once."""
    kept = set()
    for user, when in rows:
        day = local_date(when, spec.timezone)
        if user is not None and day is not None and spec.start_date <= day <= spec.end_date:
            kept.add((user, when))
    return len(kept)


def active_sets(rows: list[tuple], spec: Spec, grain: str) -> tuple[list[dt.date], dict[dt.date, set]]:
    """The complete periods, and the users active in each, straight from the facts."""
    plist = periods(spec, grain)
    active: dict[dt.date, set] = {p: set() for p in plist}
    for user, days in valid_days(rows, spec).items():
        for day in days:
            p = period_of(day, grain, spec.week_start)
            if p in active:
                active[p].add(user)
    return plist, active


def classic_growth(rows: list[tuple], spec: Spec, grain: str) -> list[dict]:
    """Growth accounting as Tribe Capital / Social Capital define it, from the facts alone:
    MAU(t) = retained + new + resurrected, MAU(t-1) = retained + churned."""
    plist, active = active_sets(rows, spec, grain)
    seen: set = set()
    out = []
    for i, p in enumerate(plist):
        now, before = active[p], active[plist[i - 1]] if i else set()
        new = now - seen
        retained = now & before
        resurrected = now - before - new
        churned = before - now
        seen |= now
        out.append({"period_start": p, "active": len(now), "new": len(new), "retained": len(retained),
                    "reactivated": len(resurrected), "churned": len(churned),
                    "dormant": len(seen - now - before), "users_ever": len(seen), "active_prev": len(before),
                    "active_change": len(now) - len(before),
                    "retention_rate": len(retained) / len(before) if before else None,
                    "quick_ratio": (len(new) + len(resurrected)) / len(churned) if churned else None})
    return out


def cohorts(rows: list[tuple], spec: Spec, grain: str) -> list[dict]:
    plist, active = active_sets(rows, spec, grain)
    first: dict = {}
    for p in plist:
        for user in active[p]:
            first.setdefault(user, p)
    out = []
    for i, p in enumerate(plist):
        for j, cohort in enumerate(plist[:i + 1]):
            members = {u for u, f in first.items() if f == cohort}
            if members:
                out.append({"period_start": p, "cohort": cohort, "age": i - j, "cohort_size": len(members),
                            "active_users": len(members & active[p])})
    return out


# --- rolling engagement (daily grain), from the contract's section of the same name ---------------

ENGAGEMENT_STATES = ["new", "current", "reactivated", "resurrected", "at_risk_wau", "at_risk_mau", "dormant"]
RATES = {"nurr": "new", "curr": "current", "rurr": "reactivated", "surr": "resurrected",
         "iwaurr": "at_risk_wau", "imaurr": "at_risk_mau", "drr": "dormant"}


def _days(spec: Spec) -> list[dt.date]:
    return [spec.start_date + dt.timedelta(days=i) for i in range((spec.end_date - spec.start_date).days + 1)]


def _active_in(active: set, day: dt.date, nearest: int, farthest: int) -> bool:
    """Active on some day of [day - farthest, day - nearest]."""
    return any(day - dt.timedelta(days=k) in active for k in range(nearest, farthest + 1))


def engagement_state(active: set, first: dt.date, day: dt.date, week: int, month: int) -> str:
    if day == first:
        return "new"
    if day in active:
        if _active_in(active, day, 1, week - 1):
            return "current"
        return "reactivated" if _active_in(active, day, week, month - 1) else "resurrected"
    if _active_in(active, day, 1, week - 1):
        return "at_risk_wau"
    return "at_risk_mau" if _active_in(active, day, week, month - 1) else "dormant"


def engagement_rows(rows: list[tuple], spec: Spec, week: int = 7, month: int = 28) -> list[dict]:
    """One dict per (user, day >= first(u)): days_seen_bits and both engagement states."""
    out = []
    for user, active in valid_days(rows, spec).items():
        first = min(active)
        for day in _days(spec):
            if day < first:
                continue
            out.append({
                "period_start": day, "user_id": user,
                "days_seen_bits": sum(2 ** i for i in range(63) if day - dt.timedelta(days=i) in active),
                "engagement_state": engagement_state(active, first, day, week, month),
                "prev_engagement_state": None if day == first else engagement_state(
                    active, first, day - dt.timedelta(days=1), week, month),
            })
    return out


def engagement_daily(rows: list[tuple], spec: Spec, week: int = 7, month: int = 28) -> list[dict]:
    """One dict per day: DAU/WAU/MAU straight from the facts, the states, ratios and rates."""
    days_of = valid_days(rows, spec)
    per_day = {}
    for row in engagement_rows(rows, spec, week, month):
        per_day.setdefault(row["period_start"], []).append(row)
    out = []
    for day in _days(spec):
        users = per_day.get(day, [])

        def active_within(width: int) -> int:
            return sum(1 for active in days_of.values() if _active_in(active, day, 0, width - 1))

        dau, wau, mau = active_within(1), active_within(week), active_within(month)
        entry = {"period_start": day, "dau": dau, "wau": wau, "mau": mau, "users_ever": len(users),
                 "dau_mau": dau / mau if mau else None, "wau_mau": wau / mau if mau else None}
        for state in ENGAGEMENT_STATES:
            entry[state] = sum(1 for r in users if r["engagement_state"] == state)
        for rate, state in RATES.items():
            before = [r for r in users if r["prev_engagement_state"] == state]
            entry[rate] = (sum(1 for r in before if day in days_of[r["user_id"]]) / len(before)) if before else None
        out.append(entry)
    return out


def stickiness(rows: list[tuple], spec: Spec, week: int = 7, month: int = 28) -> list[dict]:
    counts: Counter = Counter()
    for active in valid_days(rows, spec).values():
        for day in _days(spec):
            for window, width in (("week", week), ("month", month)):
                n = sum(1 for k in range(width) if day - dt.timedelta(days=k) in active)
                if n:
                    counts[(day, window, n)] += 1
    return [{"period_start": d, "window": w, "active_days": n, "users": u} for (d, w, n), u in counts.items()]


# --- segments ------------------------------------------------------------------------------------------


def _instant(value) -> dt.datetime:
    if isinstance(value, str):
        value = dt.datetime.fromisoformat(value)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def as_text(value) -> str | None:
    """A column's value cast to text, as SQL casts it (booleans lowercase)."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def last_day(period: dt.date, grain: str, week_start: str) -> dt.date:
    day = period
    while period_of(day + dt.timedelta(days=1), grain, week_start) == period:
        day += dt.timedelta(days=1)
    return day


def segment_of(rows: list[tuple], spec: Spec, values: list[str] | None = None):
    """seg(u, p) from the spec: `rows` are (user, when, value); returns a function of (user, last day
    of p) -> the value (as text) on the user's latest valid row on or before that day with a value,
    the latest by instant and then by the value as text; mapped through `values`."""
    by_user: dict = {}
    for user, when, value in rows:
        day = local_date(when, spec.timezone)
        if user is None or day is None or not (spec.start_date <= day <= spec.end_date) or value is None:
            continue
        by_user.setdefault(user, []).append((day, _instant(when), as_text(value)))

    def seg(user, through: dt.date) -> str | None:
        known = [(at, text) for day, at, text in by_user.get(user, []) if day <= through]
        if not known:
            return None
        _, text = max(known)  # by instant, then by text: the greatest last
        if values is not None and text not in values:
            return "other"
        return text

    return seg


def segmented_activation(rows: list[tuple], spec: Spec, grain: str, name: str,
                         values: list[str] | None = None) -> list[dict]:
    """The activation rows of `rows` (user, when, value), each with seg(u, p) as `name` and
    seg(u, p-1) as `prev_<name>` (null for a new user)."""
    seg = segment_of(rows, spec, values)
    plist = periods(spec, grain)
    previous = {p: plist[i - 1] for i, p in enumerate(plist) if i}
    out = []
    for row in activation([(u, w) for u, w, _ in rows], spec, grain):
        p = row["period_start"]
        out.append({**row, name: seg(row["user_id"], last_day(p, grain, spec.week_start)),
                    f"prev_{name}": None if row["state"] == "new" else
                    seg(row["user_id"], last_day(previous[p], grain, spec.week_start))})
    return out


def segment_transitions(rows: list[dict], name: str) -> list[dict]:
    counts = Counter((r["period_start"], r[f"prev_{name}"], r[name], r["prev_state"], r["state"]) for r in rows)
    return [{"period_start": p, "segment": name, "prev_value": a, "value": b, "from_state": f, "to_state": t,
             "users": n} for (p, a, b, f, t), n in counts.items()]


def segment_growth(rows: list[dict], name: str) -> list[dict]:
    """Per (period, value) with a user in p or an active user in p-1, each count as the spec defines it."""
    by_period: dict = {}
    for r in rows:
        by_period.setdefault(r["period_start"], []).append(r)
    out = []
    for period, users in by_period.items():
        prev = f"prev_{name}"
        seen = {r[name] for r in users} | {r[prev] for r in users if r["prev_state"] in ACTIVE}
        for value in seen:
            mine = [r for r in users if r[name] == value]
            before = [r for r in users if r["prev_state"] in ACTIVE and r[prev] == value]
            entry = {
                "period_start": period, "segment": name, "value": value,
                "active": sum(r["state"] in ACTIVE for r in mine),
                "new": sum(r["state"] == "new" for r in mine),
                "retained": sum(r["state"] == "retained" for r in mine),
                "reactivated": sum(r["state"] == "reactivated" for r in mine),
                "dormant": sum(r["state"] == "inactive" and r["prev_state"] == "inactive" for r in mine),
                "users_ever": len(mine),
                "active_prev": len(before),
                "churned": sum(r["state"] == "inactive" for r in before),
                "moved_in": sum(r["state"] == "retained" and r[prev] != value for r in mine),
                "moved_out": sum(r["state"] == "retained" and r[name] != value for r in before),
            }
            entry["active_change"] = entry["active"] - entry["active_prev"]
            entry["retention_rate"] = ((entry["active_prev"] - entry["churned"]) / entry["active_prev"]
                                       if entry["active_prev"] else None)
            inflow, outflow = entry["new"] + entry["reactivated"] + entry["moved_in"], entry["churned"] + entry["moved_out"]
            entry["quick_ratio"] = inflow / outflow if outflow else None
            out.append(entry)
    return out


def segment_engagement(rows: list[tuple], spec: Spec, name: str, values: list[str] | None = None,
                       week: int = 7, month: int = 28) -> list[dict]:
    """Per (day, value) with a user: DAU/WAU/MAU straight from the facts, and users per state."""
    seg = segment_of(rows, spec, values)
    plain = [(u, w) for u, w, _ in rows]
    days_of = valid_days(plain, spec)
    groups: dict = {}
    for r in engagement_rows(plain, spec, week, month):
        groups.setdefault((r["period_start"], seg(r["user_id"], r["period_start"])), []).append(r)
    out = []
    for (day, value), users in groups.items():
        def active_within(width: int) -> int:
            return sum(1 for r in users if _active_in(days_of[r["user_id"]], day, 0, width - 1))

        entry = {"period_start": day, "segment": name, "value": value, "dau": active_within(1),
                 "wau": active_within(week), "mau": active_within(month), "users_ever": len(users)}
        for state in ENGAGEMENT_STATES:
            entry[state] = sum(1 for r in users if r["engagement_state"] == state)
        out.append(entry)
    return out


# --- the growth model, from the engagement tables (the contract's "Growth model") --------------------

ENGAGEMENT_STATES = ["new", "current", "reactivated", "resurrected", "at_risk_wau", "at_risk_mau", "dormant"]
ACTIVE_ENGAGEMENT = ENGAGEMENT_STATES[:4]
RATE_OF = {"nurr": "new", "curr": "current", "rurr": "reactivated", "surr": "resurrected",
           "iwaurr": "at_risk_wau", "imaurr": "at_risk_mau", "drr": "dormant"}
# The contract's active next state of each state.
ACTIVE_NEXT = {"new": "current", "current": "current", "reactivated": "current", "resurrected": "current",
               "at_risk_wau": "current", "at_risk_mau": "reactivated", "dormant": "resurrected"}
# The project's rule (docs/contract.md) for a state without users in the window: its users stay
# inactive, as one more day away leaves them: the active ones and at_risk_wau at risk of WAU,
# at_risk_mau and dormant where they are.
NO_USERS_NEXT = {"new": "at_risk_wau", "current": "at_risk_wau", "reactivated": "at_risk_wau",
                 "resurrected": "at_risk_wau", "at_risk_wau": "at_risk_wau", "at_risk_mau": "at_risk_mau",
                 "dormant": "dormant"}


def growth_rates(transitions: list[dict], day: dt.date, window: int) -> dict[str, dict[str, float]]:
    """p(s -> t) over the transitions of days day-window+1 .. day (entries into new excluded)."""
    first = day - dt.timedelta(days=window - 1)
    users: dict[str, Counter] = {s: Counter() for s in ENGAGEMENT_STATES}
    for row in transitions:
        if first <= row["period_start"] <= day and row["from_state"] is not None:
            users[row["from_state"]][row["to_state"]] += row["users"]
    rates = {}
    for s in ENGAGEMENT_STATES:
        total = sum(users[s].values())
        rates[s] = {t: n / total for t, n in users[s].items() if n} if total else {NO_USERS_NEXT[s]: 1.0}
    return rates


def changed_rates(rates: dict, rate: str, delta: float) -> dict:
    """The contract's scenario rule for one RATE: DELTA moves share from the inactive next states
    (in proportion) to the active next one, at most what the side it comes from holds."""
    state = RATE_OF[rate]
    row = dict(rates[state])
    active = ACTIVE_NEXT[state]
    away = {t: p for t, p in row.items() if t not in ACTIVE_ENGAGEMENT}
    if delta > 0:
        moved = min(delta, sum(away.values()))
        for t, p in away.items():
            row[t] = p * (1 - moved / sum(away.values()))
    else:
        moved = max(delta, -row.get(active, 0.0))
        back = away or {NO_USERS_NEXT[state]: 1.0}
        for t, p in back.items():
            row[t] = row.get(t, 0.0) + (-moved) * p / sum(back.values())
    row[active] = row.get(active, 0.0) + moved
    return {**rates, state: row}


def growth_forecasts(engagement: list[dict], transitions: list[dict], start_date: dt.date, window: int,
                     horizon: int, scenarios: dict[str, dict[str, float]]) -> tuple[list[dict], list[dict]]:
    """The forecast rows and rate rows of every day with a full window, from the two engagement tables."""
    by_day = {row["period_start"]: row for row in engagement}
    forecast_rows, rate_rows = [], []
    for day in sorted(d for d in by_day if d >= start_date + dt.timedelta(days=window)):
        rates = growth_rates(transitions, day, window)
        inflow = sum(by_day[day - dt.timedelta(days=i)]["new"] for i in range(window)) / window
        rate_rows += [{"period_start": day, "from_state": s, "to_state": t, "rate": p}
                      for s in ENGAGEMENT_STATES for t, p in rates[s].items() if p > 0]
        rate_rows.append({"period_start": day, "from_state": None, "to_state": "new", "rate": inflow})
        for name, changes in {"baseline": {}, **scenarios}.items():
            moved = rates
            for rate, delta in changes.items():
                if rate != "new_users":
                    moved = changed_rates(moved, rate, delta)
            counts = {s: float(by_day[day][s]) for s in ENGAGEMENT_STATES}
            for k in range(1, horizon + 1):
                following = dict.fromkeys(ENGAGEMENT_STATES, 0.0)
                for s in ENGAGEMENT_STATES:
                    for t, p in moved[s].items():
                        following[t] += counts[s] * p
                following["new"] += inflow * changes.get("new_users", 1.0)
                counts = following
                dau = sum(counts[s] for s in ACTIVE_ENGAGEMENT)
                forecast_rows.append({"period_start": day, "scenario": name, "horizon": k,
                                      "day": day + dt.timedelta(days=k), **counts, "dau": dau,
                                      "wau": dau + counts["at_risk_wau"],
                                      "mau": dau + counts["at_risk_wau"] + counts["at_risk_mau"]})
    return forecast_rows, rate_rows


def growth_accuracy(forecast_rows: list[dict], engagement: list[dict]) -> list[dict]:
    by_day = {row["period_start"]: row for row in engagement}
    rows = []
    for f in forecast_rows:
        if f["scenario"] == "baseline" and f["horizon"] in (1, 7, 28) and f["day"] in by_day:
            for measure in ("dau", "wau", "mau"):
                actual = by_day[f["day"]][measure]
                error = f[measure] - actual
                rows.append({"period_start": f["day"], "horizon": f["horizon"], "measure": measure,
                             "forecast": f[measure], "actual": actual, "error": error,
                             "relative_error": error / actual if actual else None})
    return rows
