"""The growth model's arithmetic on hand-worked examples (the contract's "Growth model")."""

from __future__ import annotations

import pytest

from activation_assets.models.forecast import BASELINE, STATES, project, rates, scenario_rates, with_change

WINDOW = [  # (from_state, to_state, users) over the window's days
    (None, "new", 7),  # entries into new: no rate
    ("current", "current", 6), ("current", "at_risk_wau", 4),
    ("at_risk_mau", "reactivated", 1), ("at_risk_mau", "at_risk_mau", 6), ("at_risk_mau", "dormant", 3),
    ("current", "current", 0),
]


def test_rates_are_shares_of_each_states_users_and_an_unobserved_state_moves_one_day_away():
    matrix, unobserved = rates(WINDOW)
    assert matrix["current"] == pytest.approx({"current": 0.6, "at_risk_wau": 0.4})
    assert matrix["at_risk_mau"] == pytest.approx({"reactivated": 0.1, "at_risk_mau": 0.6, "dormant": 0.3})
    # No user was new, reactivated, resurrected, at risk of WAU or dormant the day before a day of
    # the window: their users go where one more day away takes them.
    assert unobserved == {"new", "reactivated", "resurrected", "at_risk_wau", "dormant"}
    assert matrix["new"] == matrix["resurrected"] == {"at_risk_wau": 1.0}
    assert matrix["at_risk_wau"] == {"at_risk_wau": 1.0} and matrix["dormant"] == {"dormant": 1.0}
    assert all(sum(matrix[s].values()) == pytest.approx(1.0) for s in STATES)


def test_a_change_moves_mass_between_the_active_next_state_and_the_inactive_ones():
    matrix, _ = rates(WINDOW)
    # +0.09 on imaurr: from at_risk_mau (0.6) and dormant (0.3) in proportion, to reactivated.
    assert with_change(matrix, "imaurr", 0.09)["at_risk_mau"] == pytest.approx(
        {"reactivated": 0.19, "at_risk_mau": 0.54, "dormant": 0.27})
    # A DELTA larger than the inactive states hold moves what they hold.
    assert with_change(matrix, "curr", 0.5)["current"] == pytest.approx({"current": 1.0, "at_risk_wau": 0.0})
    # A negative one, at most what the active next state holds.
    assert with_change(matrix, "curr", -0.7)["current"] == pytest.approx({"current": 0.0, "at_risk_wau": 1.0})
    assert with_change(matrix, "curr", -0.1)["current"] == pytest.approx({"current": 0.5, "at_risk_wau": 0.5})
    # An unobserved state (dormant: all to dormant) gains its active next state from the inactive one.
    assert with_change(matrix, "drr", 0.2)["dormant"] == pytest.approx({"dormant": 0.8, "resurrected": 0.2})
    # Other states are untouched; the baseline changes nothing.
    assert with_change(matrix, "curr", 0.1)["at_risk_mau"] == matrix["at_risk_mau"]
    assert scenario_rates(matrix, BASELINE) == matrix


def test_the_projection_by_hand():
    """100 current users, inflow 10: current keeps half, the rest and the new are away the next day."""
    matrix, _ = rates([("current", "current", 5), ("current", "at_risk_wau", 5)])
    day1, day2 = project({"current": 100}, matrix, inflow=10, horizon=2)
    assert (day1["new"], day1["current"], day1["at_risk_wau"]) == (10, 50, 50)
    assert (day1["dau"], day1["wau"], day1["mau"]) == (60, 110, 110)
    assert (day2["new"], day2["current"], day2["at_risk_wau"]) == (10, 25, 85)  # 25 + 50 + 10 new away
    assert day2["dau"] == 35
    # The states add up to the users ever seen plus k days of inflow.
    assert sum(day2[s] for s in STATES) == pytest.approx(100 + 2 * 10)
