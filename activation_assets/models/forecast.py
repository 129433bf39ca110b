"""The growth model's arithmetic (the contract's "Growth model"), as small pure functions over small
inputs: a trailing window's engagement transitions and `new` counts in, the rates, a scenario's
rates and the day-by-day projection of the seven state counts out. The SQL reads the stored
engagement tables (a few hundred rows per day, never per-user rows); what is computed here is a
7 × 7 matrix and H days of seven numbers per scenario, the same on either engine.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from activation_assets.config import BASELINE as BASELINE_NAME
from activation_assets.config import NEW_USERS, BehaviorConfig
from activation_assets.tables import ENGAGEMENT_ACTIVE, ENGAGEMENT_STATES, RETENTION_RATES

STATES = ENGAGEMENT_STATES
INACTIVE = tuple(s for s in STATES if s not in ENGAGEMENT_ACTIVE)
RATE_STATE = dict(RETENTION_RATES)  # curr -> current, ...: the state whose next-day retention a rate is
# The state a user of each state enters by being active the next day (the contract's "active next state").
ACTIVE_NEXT = {"new": "current", "current": "current", "reactivated": "current", "resurrected": "current",
               "at_risk_wau": "current", "at_risk_mau": "reactivated", "dormant": "resurrected"}
# Where the users of a state with no users in the window go: the inactive state one more day away
# gives them (its own, for an inactive state). This project's reading; see docs/contract.md.
UNOBSERVED_NEXT = {"new": "at_risk_wau", "current": "at_risk_wau", "reactivated": "at_risk_wau",
                   "resurrected": "at_risk_wau", "at_risk_wau": "at_risk_wau", "at_risk_mau": "at_risk_mau",
                   "dormant": "dormant"}

Rates = dict[str, dict[str, float]]  # from_state -> to_state -> p


def rates(transitions: Iterable[tuple[str | None, str, int]]) -> tuple[Rates, set[str]]:
    """p(s -> t) from the window's (from_state, to_state, users) rows; entries into `new` (no
    from_state) are no rate. Also the states with no users in the window, which move as
    `UNOBSERVED_NEXT` says."""
    counts: dict[str, dict[str, int]] = {s: {} for s in STATES}
    for from_state, to_state, users in transitions:
        if from_state is None:
            continue
        counts[from_state][to_state] = counts[from_state].get(to_state, 0) + users
    matrix, unobserved = {}, set()
    for s in STATES:
        total = sum(counts[s].values())
        if total == 0:
            unobserved.add(s)
            matrix[s] = {UNOBSERVED_NEXT[s]: 1.0}
        else:
            matrix[s] = {t: n / total for t, n in counts[s].items() if n}
    return matrix, unobserved


def with_change(matrix: Rates, rate: str, delta: float) -> Rates:
    """The rates with `rate`'s state's next-day retention moved by `delta` (absolute): that share of
    its mass moves from its inactive next states, in proportion to their rates, to its active next
    state; at most what they hold (delta > 0) or what the active one holds (delta < 0)."""
    state = RATE_STATE[rate]
    row = dict(matrix[state])
    active = ACTIVE_NEXT[state]
    inactive = {t: p for t, p in row.items() if t in INACTIVE}
    held = sum(inactive.values())
    moved = min(delta, held) if delta >= 0 else -min(-delta, row.get(active, 0.0))
    if moved > 0:
        for t, p in inactive.items():
            row[t] = p - moved * p / held
    elif moved < 0:
        # Back to the inactive states in proportion to their rates; with none, to the state's own
        # structural inactive next state.
        targets = inactive or {UNOBSERVED_NEXT[state]: 1.0}
        total = sum(targets.values())
        for t, p in targets.items():
            row[t] = row.get(t, 0.0) - moved * p / total
    row[active] = row.get(active, 0.0) + moved
    return {**matrix, state: {t: p for t, p in row.items()}}


@dataclass(frozen=True)
class Scenario:
    name: str
    changes: Mapping[str, float]  # rate -> delta
    new_users: float = 1.0  # factor on the inflow


BASELINE = Scenario(BASELINE_NAME, {})


def scenario_rates(matrix: Rates, scenario: Scenario) -> Rates:
    for rate, delta in scenario.changes.items():
        matrix = with_change(matrix, rate, delta)
    return matrix


def project(start: Mapping[str, float], matrix: Rates, inflow: float, horizon: int) -> list[dict[str, float]]:
    """c(1) .. c(H): c(k+1)[t] = sum_s c(k)[s] p(s -> t), plus `inflow` into `new`; each day with
    its dau, wau and mau."""
    counts = {s: float(start.get(s, 0)) for s in STATES}
    days = []
    for _ in range(horizon):
        following = {s: 0.0 for s in STATES}
        for s, users in counts.items():
            for t, p in matrix[s].items():
                following[t] += users * p
        following["new"] += inflow
        counts = following
        dau = sum(counts[s] for s in ENGAGEMENT_ACTIVE)
        wau = dau + counts["at_risk_wau"]
        days.append({**counts, "dau": dau, "wau": wau, "mau": wau + counts["at_risk_mau"]})
    return days


def scenarios(behavior: BehaviorConfig) -> list[Scenario]:
    """The baseline, then the configured scenarios in the order the config lists them."""
    model = behavior.growth_model
    configured = model.scenarios.items() if model else ()
    return [BASELINE] + [
        Scenario(name, {k: v for k, v in changes.items() if k != NEW_USERS}, changes.get(NEW_USERS, 1.0))
        for name, changes in configured]


@dataclass(frozen=True)
class Window:
    """What the forecast of day d reads: the engagement transitions of days d-L+1 .. d, the `new`
    counts of those days, and the state counts of d."""
    transitions: list[tuple[str | None, str, int]]
    new_users: list[int]
    start: Mapping[str, float]

    @property
    def inflow(self) -> float:
        return sum(self.new_users) / len(self.new_users)


def forecast(window: Window, horizon: int, chosen: Iterable[Scenario]) -> tuple[Rates, dict[str, list[dict]]]:
    """The baseline rates and each scenario's projection, H days of the seven states with dau, wau, mau."""
    matrix, _ = rates(window.transitions)
    return matrix, {s.name: project(window.start, scenario_rates(matrix, s), window.inflow * s.new_users, horizon)
                    for s in chosen}


LEVER_DELTA = 0.01  # +1 point on a rate
LEVER_NEW_USERS = 1.10  # +10 % new users


def levers(matrix: Rates, inflow: float, start: Mapping[str, float], horizon: int) -> list[tuple[str, float]]:
    """DAU at `horizon` for +1 point on each of the seven rates and for +10 % new users, against the
    baseline's: (lever, DAU gained), the biggest effect first. The same arithmetic as a scenario's."""
    base = project(start, matrix, inflow, horizon)[-1]["dau"]
    effects = [(rate, project(start, with_change(matrix, rate, LEVER_DELTA), inflow, horizon)[-1]["dau"])
               for rate in RATE_STATE]
    effects.append((NEW_USERS, project(start, matrix, inflow * LEVER_NEW_USERS, horizon)[-1]["dau"]))
    return sorted(((lever, dau - base) for lever, dau in effects), key=lambda item: -item[1])
