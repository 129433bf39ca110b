"""`activation report`: a landing page with each behavior's headline numbers, and one
self-contained HTML page per behavior and grain that explains the change.

Charts are drawn with matplotlib and embedded as base64 PNGs, with each chart's numbers as a CSV
link next to it, so a page opens offline, in any browser, and can be mailed around. Data comes from
the growth, transitions, cohorts, distributions, engagement, stickiness and segment growth tables
(small: one row per period, pair, cohort, bucket, window length or segment value), never from the facts.
"""

from __future__ import annotations

import base64
import hashlib
import datetime as dt
import html
import io
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display: render to memory
import matplotlib.dates as mdates  # noqa: E402
import matplotlib.ticker  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from activation_assets import tables as relations  # noqa: E402
from activation_assets.models import forecast as growth_model  # noqa: E402
from activation_assets.models import sql  # noqa: E402
from activation_assets.config import ActivationConfig, BehaviorConfig, Grain  # noqa: E402
from activation_assets.engines import ActivationError, as_warehouse, open_warehouse  # noqa: E402

COLORS = {"new": "#4C9F70", "reactivated": "#F2A541", "retained": "#3D6FB6", "churned": "#D1495B",
          "active": "#222222", "inactive": "#9AA0A6"}
ENGAGEMENT_COLORS = {"new": "#4C9F70", "current": "#3D6FB6", "reactivated": "#F2A541", "resurrected": "#9B5DE5",
                     "at_risk_wau": "#F7B2BD", "at_risk_mau": "#D1495B", "dormant": "#C8CCD0"}
STATE_ORDER = list(sql.STATES)
MAX_COHORTS = 24
MAX_TICKS = 12
LABELS = {"daily": "day", "weekly": "week", "monthly": "month"}


@dataclass
class Chart:
    title: str
    caption: str
    png: bytes
    name: str
    data: pd.DataFrame  # the numbers drawn, offered as CSV next to the chart


def period_ticks(x: pd.Series, grain: Grain) -> list[pd.Timestamp] | None:
    """Where a weekly or monthly chart puts its ticks: on period starts (every k-th, at most
    MAX_TICKS), not on the calendar days a date locator would pick. None: let matplotlib choose."""
    if grain is Grain.daily or x.empty:
        return None
    step = max(1, -(-len(x) // MAX_TICKS))
    return list(pd.to_datetime(x).iloc[::step])


def _period_axis(ax, x: pd.Series, grain: Grain) -> None:
    ticks = period_ticks(x, grain)
    if ticks is None:
        ax.xaxis.set_major_locator(mdates.AutoDateLocator(maxticks=MAX_TICKS))
    else:
        ax.set_xticks(ticks)
    ax.xaxis.set_major_formatter(mdates.DateFormatter("%Y-%m-%d"))
    ax.figure.autofmt_xdate()


def _partial_first(growth: pd.DataFrame, behavior: BehaviorConfig) -> dt.date | None:
    """The first period when it starts before start_date (it only sees activity from start_date on)."""
    if growth.empty:
        return None
    first = pd.Timestamp(growth["period_start"].iloc[0]).date()
    return first if first < behavior.start_date else None


def _png(fig) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return buffer.getvalue()


def growth_chart(growth: pd.DataFrame, grain: Grain, partial: dt.date | None = None) -> bytes:
    fig, ax = plt.subplots(figsize=(10, 4.2))
    x = pd.to_datetime(growth["period_start"])
    width = (x.diff().median() if len(x) > 1 else pd.Timedelta(days=1)) * 0.85
    bottom = np.zeros(len(growth))
    for state in ("retained", "new", "reactivated"):
        ax.bar(x, growth[state], width=width, bottom=bottom, color=COLORS[state], label=state, linewidth=0)
        bottom += growth[state].to_numpy()
    ax.bar(x, -growth["churned"], width=width, color=COLORS["churned"], label="churned", linewidth=0)
    ax.plot(x, growth["active"], color=COLORS["active"], linewidth=1.4, label="active")
    if partial is not None:  # hatched over, and named: it only counts activity from start_date on
        ax.bar(x.iloc[:1], bottom[:1], width=width, facecolor="white", alpha=0.5, hatch="///", edgecolor="#555",
               linewidth=0)
        ax.annotate(f"partial {LABELS[grain.value]}", (x.iloc[0], bottom[0]), textcoords="offset points",
                    xytext=(0, 6), ha="center", fontsize=8, color="#555")
    ax.axhline(0, color="#555", linewidth=0.6)
    ax.set_ylabel(f"users per {LABELS[grain.value]}")
    ax.legend(loc="lower left", bbox_to_anchor=(0, 1.0), ncols=5, frameon=False, fontsize=9)
    ax.grid(axis="y", alpha=0.3)
    _period_axis(ax, x, grain)
    return _png(fig)


def quick_ratio_chart(growth: pd.DataFrame, grain: Grain) -> bytes:
    fig, ax = plt.subplots(figsize=(10, 2.8))
    x = pd.to_datetime(growth["period_start"])
    ax.plot(x, growth["quick_ratio"], color=COLORS["retained"], linewidth=1.3)
    ax.axhline(1, color=COLORS["churned"], linewidth=0.8, linestyle="--", label="1: as many gained as lost")
    ax.set_ylabel("quick ratio")
    ax.legend(loc="upper right", frameon=False, fontsize=9)
    ax.grid(alpha=0.3)
    _period_axis(ax, x, grain)
    return _png(fig)


def transition_counts(transitions: pd.DataFrame) -> pd.DataFrame:
    rows = ["(none)"] + STATE_ORDER
    matrix = pd.DataFrame(0, index=rows, columns=STATE_ORDER, dtype="int64")
    for _, r in transitions.iterrows():
        source = "(none)" if pd.isna(r["from_state"]) else r["from_state"]  # null before `new`
        matrix.loc[source, r["to_state"]] = int(r["users"])
    return matrix


def transition_matrix(matrix: pd.DataFrame, period: dt.date) -> bytes:
    rows = list(matrix.index)
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    ax.imshow(np.log1p(matrix.to_numpy()), cmap="Blues")
    ax.set_xticks(range(len(STATE_ORDER)), STATE_ORDER, rotation=15)
    ax.set_yticks(range(len(rows)), rows)
    ax.set_xlabel(f"state in {period}")
    ax.set_ylabel("state in the period before")
    for i in range(len(rows)):
        for j in range(len(STATE_ORDER)):
            value = int(matrix.iat[i, j])
            ax.text(j, i, f"{value:,}" if value else "·", ha="center", va="center", fontsize=9,
                    color="white" if value > matrix.to_numpy().max() / 3 else "#222")
    return _png(fig)


def recent_cohorts(cohorts: pd.DataFrame) -> pd.DataFrame:
    recent = sorted(cohorts["cohort"].unique())[-MAX_COHORTS:]
    return cohorts[cohorts["cohort"].isin(recent)]


def cohort_scale(data: pd.DataFrame) -> float:
    """The top of the heatmap's colour scale: the highest retention at ages 1 and up (1.0 if none)."""
    later = data.loc[data["age"] >= 1, "retention"]
    top = float(later.max()) if len(later) else 1.0
    return top if top > 0 else 1.0


# A cell this wide (inches) or wider gets its percentage printed.
MIN_LABELLED_CELL = 0.32


def cohort_heatmap(data: pd.DataFrame, label: str) -> bytes:
    """Colours scaled on ages >= 1: age 0 is always 100% and would flatten every later age into one
    colour. Age 0 cells are drawn above the scale (grey) and labelled."""
    triangle = data.pivot_table(index="cohort", columns="age", values="retention")
    sizes = data.groupby("cohort")["cohort_size"].max()
    top = cohort_scale(data)
    width = 10
    fig, ax = plt.subplots(figsize=(width, max(3, 0.28 * len(triangle) + 1.2)))
    cmap = matplotlib.colormaps["viridis"].with_extremes(over="#D9DCE0")
    values = triangle.to_numpy()
    image = ax.imshow(np.where(triangle.columns.to_numpy()[None, :] == 0, top * 2, values),
                      cmap=cmap, vmin=0, vmax=top, aspect="auto")
    ax.set_yticks(range(len(triangle)), [f"{pd.Timestamp(c).date()} (n={sizes[c]:,})" for c in triangle.index],
                  fontsize=8)
    step = max(1, len(triangle.columns) // 20)
    ax.set_xticks(range(0, len(triangle.columns), step), [str(a) for a in triangle.columns[::step]], fontsize=8)
    ax.set_xlabel(f"age ({label}s since the cohort's first active {label})")
    if triangle.shape[1] and width * 0.8 / triangle.shape[1] >= MIN_LABELLED_CELL:
        for i in range(values.shape[0]):
            for j in range(values.shape[1]):
                if not np.isnan(values[i, j]):
                    dark = triangle.columns[j] != 0 and values[i, j] < top * 0.6
                    ax.text(j, i, f"{values[i, j]:.0%}", ha="center", va="center", fontsize=7,
                            color="white" if dark else "#222")
    fig.colorbar(image, ax=ax, extend="max", label="share of the cohort active (ages >= 1)")
    return _png(fig)


def bucket_sums(distributions: pd.DataFrame, measure: str) -> pd.DataFrame:
    return (distributions[distributions["measure"] == measure]
            .groupby(["bucket_start", "bucket"], as_index=False)["users"].sum().sort_values("bucket_start"))


def distribution_chart(data: pd.DataFrame, measure: str, title: str, label: str) -> bytes:
    fig, ax = plt.subplots(figsize=(5.6, 3.4))
    ax.bar(data["bucket"], data["users"], color=COLORS["reactivated" if measure == "return_gap" else "retained"])
    ax.set_xlabel(f"{title} ({label}s)")
    ax.set_ylabel("users")
    ax.grid(axis="y", alpha=0.3)
    return _png(fig)


def charts_for(conn, behavior: BehaviorConfig, grain: Grain) -> list[Chart]:
    warehouse = as_warehouse(conn)
    _frame = lambda query: warehouse.frame(query)  # noqa: E731
    b = behavior.name
    for table in (sql.growth_table(b, grain), sql.transitions_table(b, grain), sql.cohorts_table(b, grain),
                  sql.distributions_table(b, grain)):
        if not warehouse.table_exists(table):
            raise ActivationError(f"{table} has not been materialized; run `activation materialize` first.")
    label = LABELS[grain.value]
    growth = _frame(f"SELECT * FROM {sql.ident(sql.growth_table(b, grain))} ORDER BY period_start")
    if growth.empty:
        raise ActivationError(f"{sql.growth_table(b, grain)} is empty; materialize it first.")
    latest = growth["period_start"].iloc[-1]
    latest = latest.date() if hasattr(latest, "date") else latest
    transitions = _frame(
        f"SELECT * FROM {sql.ident(sql.transitions_table(b, grain))} WHERE period_start = {sql.date_lit(latest)}")
    cohorts = recent_cohorts(_frame(f"SELECT * FROM {sql.ident(sql.cohorts_table(b, grain))}"))
    distributions = _frame(f"SELECT * FROM {sql.ident(sql.distributions_table(b, grain))}")
    window = distributions[pd.to_datetime(distributions["period_start"]) > pd.Timestamp(latest) - pd.Timedelta(days=90)]
    gaps = bucket_sums(window, "return_gap")
    matrix = transition_counts(transitions)
    partial = _partial_first(growth, behavior)
    partial_note = (f" The first {label} ({partial}) starts before start_date ({behavior.start_date}) and only"
                    " counts activity from then on: it is hatched." if partial else "")
    last = growth.iloc[-1]
    charts = [
        Chart("Growth accounting",
              f"Per {label}: retained, new and reactivated users stack up to the active users (line); churned"
              f" users go down. Latest {label} ({latest}): {int(last.active):,} active = {int(last.new):,} new +"
              f" {int(last.retained):,} retained + {int(last.reactivated):,} reactivated; {int(last.churned):,}"
              f" churned.{partial_note}", growth_chart(growth, grain, partial), "growth", growth),
        Chart("Quick ratio", "(new + reactivated) / churned: above 1 the active base grows.",
              quick_ratio_chart(growth, grain), "quick_ratio",
              growth[["period_start", "new", "reactivated", "churned", "quick_ratio"]]),
        Chart(f"Transitions into {latest}", "Users by state in the previous period (rows) and in the latest (columns).",
              transition_matrix(matrix, latest), "transitions", matrix.rename_axis("from_state").reset_index()),
        Chart("Cohort retention", f"Share of each cohort (first active {label}) active at each age; the"
              f" {MAX_COHORTS} most recent cohorts. Colours are scaled on ages 1 and up (age 0 is always 100%).",
              cohort_heatmap(cohorts, label), "cohorts", cohorts),
        Chart("Return gap", f"How long reactivated users had been away, over the last 90 days of {label}s.",
              distribution_chart(gaps, "return_gap", "return gap", label), "return_gap", gaps),
    ]
    if grain is Grain.daily and warehouse.table_exists(sql.engagement_table(b)):
        charts += engagement_charts(warehouse, behavior)
        charts += forecast_charts(warehouse, behavior)
    for segment in behavior.segments:
        charts += segment_charts(warehouse, behavior, grain, segment.key)
    return charts


# --- segments: where the change came from ------------------------------------------------------------

# Beyond this many values a chart shows the values that matter most and sums the others as one.
MAX_VALUES = 12
NONE_LABEL = "(none)"  # users without a value yet
CHANGE_PARTS = (("new", 1, COLORS["new"]), ("reactivated", 1, COLORS["reactivated"]),
                ("moved_in", 1, "#7FB3D5"), ("churned", -1, COLORS["churned"]), ("moved_out", -1, "#F1948A"))
SEGMENT_COUNTS = ("active", "active_prev", "active_change", "new", "reactivated", "churned", "moved_in", "moved_out")


def segment_growth(warehouse, behavior: BehaviorConfig, grain: Grain, segment: str) -> pd.DataFrame:
    """The segment growth rows of one segment, every period, values as labels (null: NONE_LABEL)."""
    table = sql.segment_growth_table(behavior.name, grain)
    if not warehouse.table_exists(table):
        raise ActivationError(f"{table} has not been materialized; run `activation materialize` first.")
    frame = warehouse.frame(
        f"SELECT period_start, value, {', '.join(SEGMENT_COUNTS)} FROM {sql.ident(table)}"
        f" WHERE segment = {sql.literal(segment)} ORDER BY period_start, value")
    frame["value"] = frame["value"].fillna(NONE_LABEL).astype(str)
    return frame


def fold_values(frame: pd.DataFrame, keep: list[str]) -> pd.DataFrame:
    """The rows of the values in `keep`, and the other values summed per period as one row named
    "the other N values" (counts add up, so the values still add up to the whole)."""
    others = sorted(set(frame["value"]) - set(keep))
    if not others:
        return frame
    label = f"the other {len(others)} values"
    rest = frame[frame["value"].isin(others)].groupby("period_start", as_index=False)[list(SEGMENT_COUNTS)].sum()
    return pd.concat([frame[frame["value"].isin(keep)], rest.assign(value=label)], ignore_index=True)


def biggest_changes(latest: pd.DataFrame) -> pd.DataFrame:
    """The latest period's rows, the biggest contributions to the change first: by the size of the
    value's net change, then by its churn and inflow (what moved most), then by name."""
    gross = latest["new"] + latest["reactivated"] + latest["moved_in"] + latest["churned"] + latest["moved_out"]
    order = latest.assign(_net=latest["active_change"].abs(), _gross=gross)
    return order.sort_values(["_net", "_gross", "value"], ascending=[False, False, True]).drop(columns=["_net", "_gross"])


def segment_active_chart(data: pd.DataFrame, grain: Grain, segment: str) -> bytes:
    fig, ax = plt.subplots(figsize=(10, 3.6))
    latest = data[data["period_start"] == data["period_start"].max()]
    order = list(latest.sort_values("active", ascending=False)["value"])
    order += sorted(set(data["value"]) - set(order))
    colors = matplotlib.colormaps["tab10"].colors
    for i, value in enumerate(order):
        rows = data[data["value"] == value].sort_values("period_start")
        ax.plot(pd.to_datetime(rows["period_start"]), rows["active"], linewidth=1.2, label=value,
                color="#9AA0A6" if value.startswith("the other") else colors[i % len(colors)])
    ax.set_ylabel(f"active users per {LABELS[grain.value]}")
    ax.legend(loc="lower left", bbox_to_anchor=(0, 1.0), ncols=min(6, max(1, len(order))), frameon=False, fontsize=8,
              title=segment, title_fontsize=8)
    ax.grid(alpha=0.3)
    _period_axis(ax, pd.Series(sorted(data["period_start"].unique())), grain)
    return _png(fig)


def segment_change_chart(latest: pd.DataFrame, segment: str) -> bytes:
    """One bar per value: what came in (new, reactivated, moved in) to the right, what left (churned,
    moved out) to the left, and the net change as a dot; the biggest contributions on top."""
    rows = latest.iloc[::-1]  # barh draws the first row at the bottom
    fig, ax = plt.subplots(figsize=(10, max(2.2, 0.36 * len(rows) + 1.2)))
    y = np.arange(len(rows))
    for sign in (1, -1):
        left = np.zeros(len(rows))
        for part, part_sign, color in CHANGE_PARTS:
            if part_sign != sign:
                continue
            width = sign * rows[part].to_numpy()
            ax.barh(y, width, left=left, color=color, label=part.replace("_", " "), height=0.7, linewidth=0)
            left += width
    ax.plot(rows["active_change"], y, "D", color=COLORS["active"], markersize=5, label="net change")
    for i, change in enumerate(rows["active_change"]):
        ax.annotate(f"{int(change):+,}", (1, i), xytext=(4, 0), textcoords="offset points",
                    xycoords=("axes fraction", "data"), va="center", fontsize=8, color="#333")
    ax.set_yticks(y, list(rows["value"]), fontsize=8)
    ax.axvline(0, color="#555", linewidth=0.6)
    ax.set_xlabel("users gained (right) and lost (left)")
    ax.legend(loc="lower left", bbox_to_anchor=(0, 1.0), ncols=6, frameon=False, fontsize=8, title=segment,
              title_fontsize=8)
    ax.grid(axis="x", alpha=0.3)
    return _png(fig)


def segment_charts(warehouse, behavior: BehaviorConfig, grain: Grain, segment: str) -> list[Chart]:
    """Active users per value over time, and the latest period's change decomposed by value."""
    frame = segment_growth(warehouse, behavior, grain, segment)
    if frame.empty:
        return []
    label = LABELS[grain.value]
    latest_period = frame["period_start"].max()
    latest = frame[frame["period_start"] == latest_period]
    by_size = list(latest.sort_values(["active", "value"], ascending=[False, True])["value"])
    shown = frame if frame["value"].nunique() <= MAX_VALUES else fold_values(frame, by_size[:MAX_VALUES - 1])
    ranked = biggest_changes(latest)
    if len(ranked) > MAX_VALUES:
        ranked = biggest_changes(fold_values(latest, list(ranked["value"][:MAX_VALUES - 1])))
    day = pd.Timestamp(latest_period).date()
    total = int(latest["active_change"].sum())
    lead = ranked.iloc[0]
    folded = " Beyond a dozen values, the others are summed as one line." if frame["value"].nunique() > MAX_VALUES else ""
    return [
        Chart(f"Active users by {segment}",
              f"Per {label}, the users active in it, by their {segment} at its end (the last value known; users"
              f" without one are {NONE_LABEL}). The values add up to the active users above.{folded}",
              segment_active_chart(shown, grain, segment), f"segment_active_{segment}",
              shown[["period_start", "value", "active"]].sort_values(["period_start", "value"])),
        Chart(f"Where the change came from: {segment}, {label} of {day}",
              f"Active users changed by {total:+,} against the {label} before. Per {segment}: users gained (new,"
              f" reactivated, moved in from another value) and lost (churned, moved out to another value), the"
              f" biggest net change first: {lead['value']} {int(lead['active_change']):+,}. A user who changed"
              f" {segment} while active is a move, not a churn plus a new user.",
              segment_change_chart(ranked, segment), f"segment_change_{segment}",
              ranked[["period_start", "value", *SEGMENT_COUNTS]]),
    ]


def where_it_changed(warehouse, behavior: BehaviorConfig, grain: Grain, top: int = 3) -> list[tuple[str, str, list]]:
    """The landing page's "where": per segment, the latest period and its values with the biggest net
    change (value, change), biggest first."""
    out = []
    if not warehouse.table_exists(sql.segment_growth_table(behavior.name, grain)):
        return out
    for segment in behavior.segments:
        frame = segment_growth(warehouse, behavior, grain, segment.key)
        if frame.empty:
            continue
        latest_period = frame["period_start"].max()
        ranked = biggest_changes(frame[frame["period_start"] == latest_period])
        out.append((segment.key, str(pd.Timestamp(latest_period).date()),
                    [(v, int(c)) for v, c in zip(ranked["value"][:top], ranked["active_change"][:top])]))
    return out


RETENTION_LINES = (("curr", "current"), ("nurr", "new"), ("rurr", "reactivated"), ("surr", "resurrected"))


def engagement_charts(warehouse, behavior: BehaviorConfig) -> list[Chart]:
    """DAU/WAU/MAU, the engagement-state stack, next-day retention by state, and stickiness."""
    b, windows = behavior.name, behavior.engagement
    engagement = warehouse.frame(f"SELECT * FROM {sql.ident(sql.engagement_table(b))} ORDER BY period_start")
    if engagement.empty:
        return []
    latest = pd.Timestamp(engagement["period_start"].iloc[-1]).date()
    stickiness = warehouse.frame(
        f"SELECT * FROM {sql.ident(sql.stickiness_table(b))} WHERE period_start = {sql.date_lit(latest)}"
        f" ORDER BY {sql.ident('window')} DESC, active_days") if warehouse.table_exists(sql.stickiness_table(b)) \
        else pd.DataFrame(columns=["period_start", "window", "active_days", "users"])
    x = pd.to_datetime(engagement["period_start"])
    last = engagement.iloc[-1]
    w, m = windows.week_days, windows.month_days

    fig, ax = plt.subplots(figsize=(10, 3.6))
    for column, color in (("mau", "#9AA0A6"), ("wau", COLORS["retained"]), ("dau", COLORS["active"])):
        ax.plot(x, engagement[column], color=color, linewidth=1.3, label=column.upper())
    full = pd.Timestamp(behavior.start_date + dt.timedelta(days=m - 1))
    if x.iloc[0] < full:  # no activity before start_date: the first M - 1 days' MAU covers fewer days
        ax.axvspan(x.iloc[0], min(full, x.iloc[-1]), color="#9AA0A6", alpha=0.15, linewidth=0,
                   label=f"MAU window not yet full ({m} days from start_date)")
    ax.set_ylabel("users")
    ax.legend(loc="lower left", bbox_to_anchor=(0, 1.0), ncols=4, frameon=False, fontsize=9)
    ax.grid(alpha=0.3)
    _period_axis(ax, x, Grain.daily)
    lines = _png(fig)

    fig, ax = plt.subplots(figsize=(10, 3.8))
    ax.stackplot(x, *[engagement[s] for s in sql.ENGAGEMENT_STATES], labels=list(sql.ENGAGEMENT_STATES),
                 colors=[ENGAGEMENT_COLORS[s] for s in sql.ENGAGEMENT_STATES], linewidth=0)
    ax.set_ylabel("users ever seen")
    ax.legend(loc="lower left", bbox_to_anchor=(0, 1.0), ncols=7, frameon=False, fontsize=8)
    _period_axis(ax, x, Grain.daily)
    stack = _png(fig)

    fig, ax = plt.subplots(figsize=(10, 3.2))
    for rate, state in RETENTION_LINES:
        ax.plot(x, engagement[rate], color=ENGAGEMENT_COLORS[state], linewidth=1.1, label=f"{rate.upper()} ({state})")
    ax.set_ylabel("active the next day")
    ax.yaxis.set_major_formatter(matplotlib.ticker.PercentFormatter(1.0))
    ax.legend(loc="lower left", bbox_to_anchor=(0, 1.0), ncols=4, frameon=False, fontsize=8)
    ax.grid(alpha=0.3)
    _period_axis(ax, x, Grain.daily)
    rates = _png(fig)

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.2), sharey=False)
    for ax, (window, days) in zip(axes, (("week", w), ("month", m))):
        data = stickiness[stickiness["window"] == window]
        ax.bar(data["active_days"], data["users"], color=COLORS["retained"])
        ax.set_xlabel(f"active days in the {window} ({days} days) ending {latest}")
        ax.set_xlim(0.4, days + 0.6)
        ax.grid(axis="y", alpha=0.3)
    axes[0].set_ylabel("users")
    histogram = _png(fig)

    stickiness_share = "" if pd.isna(last.dau_mau) else f" DAU/MAU {last.dau_mau:.1%}."
    return [
        Chart("DAU, WAU and MAU", f"Users active on the day, in the {w} days and in the {m} days ending on it."
              f" Latest day ({latest}): DAU {int(last.dau):,}, WAU {int(last.wau):,}, MAU {int(last.mau):,}."
              f"{stickiness_share}", lines, "dau_wau_mau",
              engagement[["period_start", "dau", "wau", "mau", "dau_mau", "wau_mau"]]),
        Chart("Engagement states", "Every user ever seen, by daily state: active ones (new, current, reactivated,"
              f" resurrected) at the bottom, then at risk (active in the last {w} or {m} days but not today) and"
              " dormant.", stack, "engagement_states",
              engagement[["period_start", *sql.ENGAGEMENT_STATES]]),
        Chart("Next-day retention by state", "Of the users in each state yesterday, the share active today:"
              " CURR (current), NURR (new), RURR (reactivated), SURR (resurrected).", rates, "retention_rates",
              engagement[["period_start", *(rate for rate, _ in RETENTION_LINES)]]),
        Chart("Stickiness", f"Users by the number of days they were active in the week and in the month ending"
              f" {latest} (users with no active day are left out).", histogram, "stickiness", stickiness),
    ]


# --- the growth model: forecasts, levers, and how good they were ------------------------------------

LEVER_LABELS = {"new_users": "+10 % new users", **{rate: f"+1 pp {rate.upper()} ({state})"
                                                    for rate, state in relations.RETENTION_RATES}}


def latest_forecast(warehouse, behavior: BehaviorConfig) -> dict | None:
    """The newest day with a forecast: its day, the baseline rates and inflow, the day's states, the
    projections per scenario, and the levers (DAU at H for +1 pp on each rate, +10 % new users)."""
    if behavior.growth_model is None:
        return None
    forecast, rates, _ = sql.forecast_tables(behavior.name)
    if not (warehouse.table_exists(forecast) and warehouse.table_exists(rates)):
        return None
    latest = warehouse.query(f"SELECT max(period_start) FROM {sql.ident(forecast)}")[0][0]
    if latest is None:
        return None
    matrix: dict[str, dict[str, float]] = {s: {} for s in sql.ENGAGEMENT_STATES}
    inflow = 0.0
    for from_state, to_state, rate in warehouse.query(
            f"SELECT from_state, to_state, rate FROM {sql.ident(rates)} WHERE period_start = {sql.date_lit(latest)}"):
        if from_state is None:
            inflow = rate
        else:
            matrix[from_state][to_state] = rate
    names = ", ".join(sql.ident(s) for s in sql.ENGAGEMENT_STATES)
    start = dict(zip(sql.ENGAGEMENT_STATES, warehouse.query(
        f"SELECT {names} FROM {sql.ident(sql.engagement_table(behavior.name))}"
        f" WHERE period_start = {sql.date_lit(latest)}")[0]))
    horizon = behavior.growth_model.horizon_days
    projections = warehouse.frame(f"SELECT * FROM {sql.ident(forecast)} WHERE period_start = {sql.date_lit(latest)}"
                                  " ORDER BY scenario, horizon")
    return {"day": latest, "horizon": horizon, "projections": projections,
            "levers": growth_model.levers(matrix, inflow, start, horizon)}


def forecast_charts(warehouse, behavior: BehaviorConfig) -> list[Chart]:
    """Actual DAU, WAU and MAU with the forecast made L days ago and today's per scenario; the levers;
    the error of the forecasts made 7 and 28 days before each day."""
    latest = latest_forecast(warehouse, behavior)
    if latest is None:
        return []
    b, model = behavior.name, behavior.growth_model
    forecast, _, accuracy = sql.forecast_tables(b)
    day, horizon = latest["day"], latest["horizon"]
    earlier = day - dt.timedelta(days=model.window_days)
    actual = warehouse.frame(f"SELECT period_start, dau, wau, mau FROM {sql.ident(sql.engagement_table(b))}"
                             " ORDER BY period_start")
    before = warehouse.frame(f"SELECT * FROM {sql.ident(forecast)} WHERE period_start = {sql.date_lit(earlier)}"
                             " AND scenario = 'baseline' ORDER BY horizon")
    ahead = latest["projections"]
    scenarios = list(dict.fromkeys(ahead["scenario"]))
    palette = ["#222222", "#4C9F70", "#F2A541", "#9B5DE5", "#D1495B", "#3D6FB6"]

    fig, axes = plt.subplots(1, 3, figsize=(12, 3.6), sharex=True)
    for ax, measure in zip(axes, ("dau", "wau", "mau")):
        ax.plot(pd.to_datetime(actual["period_start"]), actual[measure], color=COLORS["retained"], linewidth=1.2,
                label="actual")
        if not before.empty:
            ax.plot(pd.to_datetime(before["day"]), before[measure], color="#9AA0A6", linewidth=1.1, linestyle="--",
                    label=f"forecast made {earlier}")
        for i, name in enumerate(scenarios):
            rows = ahead[ahead["scenario"] == name]
            ax.plot(pd.to_datetime(rows["day"]), rows[measure], color=palette[i % len(palette)], linewidth=1.1,
                    linestyle="-" if name == "baseline" else ":", label=f"{name} (made {day})")
        ax.set_title(measure.upper(), fontsize=10)
        ax.grid(alpha=0.3)
        ax.xaxis.set_major_locator(mdates.AutoDateLocator(maxticks=5))
        ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(ax.xaxis.get_major_locator()))
    axes[0].set_ylabel("users")
    axes[0].legend(loc="lower left", bbox_to_anchor=(0, 1.08), ncols=min(6, 2 + len(scenarios)), frameon=False,
                   fontsize=8)
    lines = _png(fig)

    levers = pd.DataFrame(latest["levers"], columns=["lever", "dau_gained"])
    base_dau = float(ahead[(ahead["scenario"] == "baseline") & (ahead["horizon"] == horizon)]["dau"].iloc[0])
    levers["dau_at_horizon"] = base_dau + levers["dau_gained"]
    fig, ax = plt.subplots(figsize=(10, 3.4))
    shown = levers.iloc[::-1]
    ax.barh([LEVER_LABELS[lever] for lever in shown["lever"]], shown["dau_gained"], color=COLORS["new"])
    ax.set_xlabel(f"DAU gained {horizon} days after {day}, against the baseline's {base_dau:,.0f}")
    ax.grid(axis="x", alpha=0.3)
    lever_chart = _png(fig)

    errors = warehouse.frame(f"SELECT period_start, horizon, relative_error FROM {sql.ident(accuracy)}"
                             " WHERE measure = 'dau' AND horizon IN (7, 28) ORDER BY period_start")
    wide = errors.pivot_table(index="period_start", columns="horizon", values="relative_error").reset_index()
    fig, ax = plt.subplots(figsize=(10, 3.0))
    for h, color in ((7, COLORS["retained"]), (28, COLORS["churned"])):
        if h in wide.columns:
            ax.plot(pd.to_datetime(wide["period_start"]), wide[h], color=color, linewidth=1.1,
                    label=f"made {h} days before")
    ax.axhline(0, color="#777", linewidth=0.8)
    ax.yaxis.set_major_formatter(matplotlib.ticker.PercentFormatter(1.0))
    ax.set_ylabel("DAU forecast error")
    ax.legend(loc="lower left", bbox_to_anchor=(0, 1.0), ncols=2, frameon=False, fontsize=8)
    ax.grid(alpha=0.3)
    if len(wide):
        _period_axis(ax, pd.to_datetime(wide["period_start"]), Grain.daily)
    error_chart = _png(fig)
    wide.columns = [c if isinstance(c, str) else f"dau_error_{c}d" for c in wide.columns]

    top = latest["levers"][0]
    described = ", ".join(f"{name}: {changes}" for name, changes in model.scenarios.items()) or "none configured"
    return [
        Chart("Forecast", f"Actual DAU, WAU and MAU, the baseline forecast made {model.window_days} days ago"
              f" ({earlier}), and the forecasts made on {day} for the next {horizon} days: the baseline (rates of the"
              f" last {model.window_days} days) and each scenario ({described}). In {horizon} days the baseline"
              f" projects {base_dau:,.0f} DAU.", lines, "forecast",
              ahead[["scenario", "horizon", "day", "dau", "wau", "mau"]]),
        Chart("Levers", f"DAU {horizon} days after {day} for one point more on each next-day retention rate, and for"
              f" 10 % more new users a day, each alone, biggest effect first. The biggest: {LEVER_LABELS[top[0]]},"
              f" {top[1]:+,.0f} DAU.", lever_chart, "levers", levers),
        Chart("Forecast error", "How far the baseline forecasts of DAU made 7 and 28 days before each day were from"
              " what happened (forecast - actual, relative to actual): a lasting gap means the rates changed.",
              error_chart, "forecast_error", wide),
    ]


def headline(warehouse, behavior: BehaviorConfig) -> dict:
    """The landing page's numbers for one behavior: the latest day's DAU/WAU/MAU and stickiness, and
    per grain the latest period's active users, their change and the quick ratio, with the series
    behind each sparkline."""
    b = behavior.name
    out: dict = {"engagement": None, "grains": {}}
    if Grain.daily in behavior.grains and warehouse.table_exists(sql.engagement_table(b)):
        frame = warehouse.frame(f"SELECT period_start, dau, wau, mau, dau_mau FROM"
                                f" {sql.ident(sql.engagement_table(b))} ORDER BY period_start")
        if not frame.empty:
            out["engagement"] = frame
    for grain in behavior.grains:
        if warehouse.table_exists(sql.growth_table(b, grain)):
            frame = warehouse.frame(f"SELECT period_start, active, active_change, active_prev, quick_ratio FROM"
                                    f" {sql.ident(sql.growth_table(b, grain))} ORDER BY period_start")
            if not frame.empty:
                out["grains"][grain] = frame
    out["where"] = {grain: where_it_changed(warehouse, behavior, grain) for grain in behavior.grains}
    out["forecast"] = latest_forecast(warehouse, behavior) if Grain.daily in behavior.grains else None
    return out


def sparkline(values: pd.Series, color: str = COLORS["retained"]) -> bytes:
    fig, ax = plt.subplots(figsize=(2.2, 0.5))
    data = values.reset_index(drop=True)
    ax.plot(data.index, data, color=color, linewidth=1.1)
    if len(data):
        ax.plot([data.index[-1]], [data.iloc[-1]], "o", color=color, markersize=2.5)
    ax.axis("off")
    fig.subplots_adjust(0, 0, 1, 1)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, transparent=True)
    plt.close(fig)
    return buffer.getvalue()


SPARK_PERIODS = 90


PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 1100px; color: #222; }}
h1 {{ font-size: 1.5rem; }} h2 {{ font-size: 1.1rem; margin-top: 2rem; }}
figure {{ margin: 0; }} figcaption {{ color: #555; font-size: .9rem; margin: .3rem 0 1rem; }}
img {{ max-width: 100%; }} nav a {{ margin-right: 1rem; }} .meta {{ color: #777; font-size: .85rem; }}
a.csv {{ font-size: .8rem; color: #3D6FB6; }}
.behavior {{ border: 1px solid #ddd; border-radius: 8px; padding: .8rem 1.2rem; margin: 1rem 0; }}
.behavior h2 {{ margin: .2rem 0 .6rem; }}
.tiles {{ display: flex; flex-wrap: wrap; gap: .8rem; }}
.tile {{ border: 1px solid #eee; border-radius: 6px; padding: .5rem .8rem; min-width: 12rem; }}
.tile .label {{ color: #666; font-size: .8rem; }} .tile .value {{ font-size: 1.5rem; font-weight: 600; }}
.tile .change {{ font-size: .85rem; }} .up {{ color: #2E7D4F; }} .down {{ color: #B3261E; }}
.tile img {{ display: block; margin-top: .3rem; }}
table.where {{ border-collapse: collapse; margin-top: .8rem; font-size: .85rem; }}
table.where caption {{ text-align: left; color: #666; font-size: .8rem; padding-bottom: .2rem; }}
table.where td {{ padding: .15rem .8rem .15rem 0; border-top: 1px solid #eee; }}
</style></head><body>
{body}
</body></html>
"""


def render_page(behavior: BehaviorConfig, grain: Grain, charts: list[Chart], links: str) -> str:
    parts = [f"<nav>{links}</nav>", f"<h1>{html.escape(behavior.name)} — {grain.value}</h1>",
             f"<p class='meta'>{html.escape(behavior.description or '')} Generated {dt.date.today()}"
             f" from the activation layer; timezone {behavior.timezone}.</p>"]
    for chart in charts:
        encoded = base64.b64encode(chart.png).decode()
        csv_name = f"{behavior.name}_{grain.value}_{chart.name}.csv"
        parts.append(f"<section><h2>{html.escape(chart.title)}</h2><figure>"
                     f"<img class='chart' data-chart='{chart.name}' alt='{html.escape(chart.title)}'"
                     f" src='data:image/png;base64,{encoded}'>"
                     f"<figcaption>{html.escape(chart.caption)} {_csv_link(chart.data, csv_name)}</figcaption>"
                     "</figure></section>")
    return PAGE.format(title=f"{behavior.name} {grain.value} activation", body="\n".join(parts))


def _csv_link(data: pd.DataFrame, name: str) -> str:
    encoded = base64.b64encode(data.to_csv(index=False).encode()).decode()
    return (f"<a class='csv' download='{html.escape(name)}' href='data:text/csv;charset=utf-8;base64,{encoded}'>"
            "numbers (CSV)</a>")


def _img(png: bytes, alt: str) -> str:
    return f"<img alt='{html.escape(alt)}' src='data:image/png;base64,{base64.b64encode(png).decode()}'>"


def _change(now: float, before: float | None, change: float | None = None) -> str:
    change = now - before if change is None and before is not None else change
    if change is None or pd.isna(change):
        return "<span class='change'>no previous period</span>"
    share = f" ({change / before:+.1%})" if before else ""
    css = "up" if change > 0 else "down" if change < 0 else ""
    return f"<span class='change {css}'>{int(change):+,}{share}</span>"


def _tile(label: str, value: str, change: str, series: pd.Series) -> str:
    return (f"<div class='tile'><div class='label'>{html.escape(label)}</div><div class='value'>{value}</div>"
            f"{change}{_img(sparkline(series.tail(SPARK_PERIODS)), label + ' trend')}</div>")


def _where(where: dict) -> str:
    """The values of each segment that changed most in each grain's latest period, as a short table."""
    rows = []
    for grain, segments in where.items():
        for segment, period, changes in segments:
            listed = ", ".join(f"<span class='{'up' if c > 0 else 'down' if c < 0 else ''}'>{html.escape(v)}"
                               f" {c:+,}</span>" for v, c in changes)
            rows.append(f"<tr><td>{LABELS[grain.value]} of {period}</td><td>{html.escape(segment)}</td>"
                        f"<td>{listed}</td></tr>")
    if not rows:
        return ""
    return ("<table class='where'><caption>Where the latest change in active users came from (net change per"
            " value, biggest first)</caption>" + "".join(rows) + "</table>")


def render_index(cards: list[tuple[BehaviorConfig, dict, list[Grain]]]) -> str:
    """The page analysts open first: per behavior its headline numbers with trend lines, linking to
    the detail pages."""
    parts = ["<h1>Activation — what changed</h1>",
             f"<p class='meta'>Generated {dt.date.today()} from the activation layer. Each number is the latest"
             " complete period; the line under it shows up to the last 90 periods. Changes compare with the"
             " period before.</p>"]
    for behavior, numbers, grains in cards:
        links = " ".join(f"<a href='{behavior.name}_{g.value}.html'>{g.value} details</a>" for g in grains)
        tiles = []
        engagement = numbers["engagement"]
        if engagement is not None:
            last = engagement.iloc[-1]
            before = engagement.iloc[-2] if len(engagement) > 1 else None
            day = pd.Timestamp(last.period_start).date()
            w, m = behavior.engagement.week_days, behavior.engagement.month_days
            for column, label in (("dau", f"DAU on {day}"), ("wau", f"WAU ({w} days to {day})"),
                                  ("mau", f"MAU ({m} days to {day})")):
                tiles.append(_tile(label, f"{int(last[column]):,}",
                                   _change(last[column], None if before is None else before[column]),
                                   engagement[column]))
            stickiness = "n/a" if pd.isna(last.dau_mau) else f"{last.dau_mau:.1%}"
            moved = "&nbsp;"
            if before is not None and not pd.isna(last.dau_mau) and not pd.isna(before.dau_mau):
                points = (last.dau_mau - before.dau_mau) * 100
                moved = f"<span class='{'up' if points > 0 else 'down' if points < 0 else ''}'>{points:+.1f} pp</span>"
            tiles.append(_tile("stickiness (DAU/MAU)", stickiness, f"<span class='change'>{moved}</span>",
                               engagement["dau_mau"].fillna(0)))
        ahead = numbers.get("forecast")
        if ahead is not None and engagement is not None:
            rows = ahead["projections"][ahead["projections"]["scenario"] == "baseline"]
            projected = float(rows["dau"].iloc[-1])
            today = float(engagement["dau"].iloc[-1])
            lever, gained = ahead["levers"][0]
            tiles.append(_tile(f"DAU in {ahead['horizon']} days (forecast of {ahead['day']})", f"{projected:,.0f}",
                               _change(projected, today) + " <span class='change'>vs today</span>",
                               pd.concat([engagement["dau"], rows["dau"]], ignore_index=True)))
            tiles.append(f"<div class='tile'><div class='label'>biggest lever</div>"
                         f"<div class='value'>{html.escape(LEVER_LABELS[lever])}</div>"
                         f"<div class='change'>{gained:+,.0f} DAU in {ahead['horizon']} days</div></div>")
        for grain, growth in numbers["grains"].items():
            last = growth.iloc[-1]
            period = pd.Timestamp(last.period_start).date()
            quick = "no churn" if pd.isna(last.quick_ratio) else f"quick ratio {last.quick_ratio:.2f}"
            tiles.append(_tile(f"active, {LABELS[grain.value]} of {period}", f"{int(last.active):,}",
                               _change(last.active, last.active_prev, last.active_change)
                               + f" <span class='change'>· {quick}</span>", growth["active"]))
        description = html.escape(behavior.description or "")
        parts.append(f"<section class='behavior' data-behavior='{behavior.name}'><h2>{html.escape(behavior.name)}"
                     f"</h2><p class='meta'>{description}</p><div class='tiles'>{''.join(tiles)}</div>"
                     f"{_where(numbers.get('where', {}))}<p>{links}</p></section>")
    return PAGE.format(title="Activation reports", body="\n".join(parts))


FINGERPRINT_FILE = ".activation_report"


def _fingerprint(warehouse, behaviors: list[BehaviorConfig], pages: list, png_dir: Path | None) -> str:
    """What the pages are made of: every partition the layer logged for the behaviors' tables (when it
    was written), the behaviors' settings, the selection, and this module's code."""
    logged = sorted(f"{table} {period} {at}"
                    for table, period, at in warehouse.log_entries(relations.behavior_tables(behaviors)))
    settings = [b.model_dump_json() for b in behaviors]
    selection = [f"{b.name}_{g.value}" for b, g in pages] + [str(png_dir)]
    text = "\n".join([*logged, *settings, *selection, Path(__file__).read_text()])
    return hashlib.sha256(text.encode()).hexdigest()


def write_reports(
    config: ActivationConfig, behaviors: list[BehaviorConfig], grains: list[Grain] | None, out: Path,
    png_dir: Path | None = None,
) -> tuple[Path, bool]:
    """Write `<behavior>_<grain>.html` for each selection and an index.html; return the index path
    and whether anything was written: nothing is when every page exists and nothing it is made of
    changed since it was written (`_fingerprint`)."""
    out.mkdir(parents=True, exist_ok=True)
    pages = [(b, g) for b in behaviors for g in b.grains if grains is None or g in grains]
    links = "<a href='index.html'>overview</a> " + " ".join(
        f"<a href='{b.name}_{g.value}.html'>{b.name} {g.value}</a>" for b, g in pages)
    index = out / "index.html"
    with open_warehouse(config, read_only=True) as warehouse:
        if warehouse is None:
            raise ActivationError(f"{config.database} does not exist; run `activation materialize` first.")
        fingerprint = _fingerprint(warehouse, behaviors, pages, png_dir)
        recorded = out / FINGERPRINT_FILE
        files = [index, *(out / f"{b.name}_{g.value}.html" for b, g in pages)]
        if recorded.exists() and recorded.read_text() == fingerprint and all(f.exists() for f in files):
            return index, False
        for behavior, grain in pages:
            charts = charts_for(warehouse, behavior, grain)
            (out / f"{behavior.name}_{grain.value}.html").write_text(render_page(behavior, grain, charts, links))
            if png_dir is not None:
                png_dir.mkdir(parents=True, exist_ok=True)
                for chart in charts:
                    (png_dir / f"report_{behavior.name}_{grain.value}_{chart.name}.png").write_bytes(chart.png)
        cards = [(b, headline(warehouse, b), [g for g in b.grains if (b, g) in pages])
                 for b in dict.fromkeys(b for b, _ in pages)]
    index.write_text(render_index(cards))
    recorded.write_text(fingerprint)
    return index, True
