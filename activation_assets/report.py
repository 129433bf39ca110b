"""`activation report`: one self-contained HTML page per behavior and grain that explains the change.

Charts are drawn with matplotlib and embedded as base64 PNGs, so a page opens offline, in any
browser, and can be mailed around. Data comes from the growth, transitions, cohorts and
distributions tables (small: one row per period, pair, cohort or bucket), never from the facts.
"""

from __future__ import annotations

import base64
import datetime as dt
import html
import io
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display: render to memory
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from . import sql  # noqa: E402
from .config import ActivationConfig, BehaviorConfig, Grain  # noqa: E402
from .warehouse import ActivationError, as_warehouse, open_warehouse  # noqa: E402

COLORS = {"new": "#4C9F70", "reactivated": "#F2A541", "retained": "#3D6FB6", "churned": "#D1495B",
          "active": "#222222", "inactive": "#9AA0A6"}
STATE_ORDER = ["new", "retained", "reactivated", "inactive"]
MAX_COHORTS = 24


@dataclass
class Chart:
    title: str
    caption: str
    png: bytes
    name: str


def _png(fig) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return buffer.getvalue()


def growth_chart(growth: pd.DataFrame, label: str) -> bytes:
    fig, ax = plt.subplots(figsize=(10, 4.2))
    x = pd.to_datetime(growth["period_start"])
    width = (x.diff().median() if len(x) > 1 else pd.Timedelta(days=1)) * 0.85
    bottom = np.zeros(len(growth))
    for state in ("retained", "new", "reactivated"):
        ax.bar(x, growth[state], width=width, bottom=bottom, color=COLORS[state], label=state, linewidth=0)
        bottom += growth[state].to_numpy()
    ax.bar(x, -growth["churned"], width=width, color=COLORS["churned"], label="churned", linewidth=0)
    ax.plot(x, growth["active"], color=COLORS["active"], linewidth=1.4, label="active")
    ax.axhline(0, color="#555", linewidth=0.6)
    ax.set_ylabel(f"users per {label}")
    ax.legend(loc="upper left", ncols=5, frameon=False, fontsize=9)
    ax.grid(axis="y", alpha=0.3)
    fig.autofmt_xdate()
    return _png(fig)


def quick_ratio_chart(growth: pd.DataFrame) -> bytes:
    fig, ax = plt.subplots(figsize=(10, 2.8))
    x = pd.to_datetime(growth["period_start"])
    ax.plot(x, growth["quick_ratio"], color=COLORS["retained"], linewidth=1.3)
    ax.axhline(1, color=COLORS["churned"], linewidth=0.8, linestyle="--", label="1: as many gained as lost")
    ax.set_ylabel("quick ratio")
    ax.legend(loc="upper right", frameon=False, fontsize=9)
    ax.grid(alpha=0.3)
    fig.autofmt_xdate()
    return _png(fig)


def transition_matrix(transitions: pd.DataFrame, period: dt.date) -> bytes:
    rows = ["(none)"] + STATE_ORDER
    matrix = pd.DataFrame(0, index=rows, columns=STATE_ORDER, dtype="int64")
    for _, r in transitions.iterrows():
        source = "(none)" if pd.isna(r["from_state"]) else r["from_state"]  # null before `new`
        matrix.loc[source, r["to_state"]] = int(r["users"])
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


def cohort_heatmap(cohorts: pd.DataFrame, label: str) -> bytes:
    recent = sorted(cohorts["cohort"].unique())[-MAX_COHORTS:]
    data = cohorts[cohorts["cohort"].isin(recent)]
    triangle = data.pivot_table(index="cohort", columns="age", values="retention")
    sizes = data.groupby("cohort")["cohort_size"].max()
    fig, ax = plt.subplots(figsize=(10, max(3, 0.28 * len(triangle) + 1.2)))
    image = ax.imshow(triangle.to_numpy(), cmap="viridis", vmin=0, vmax=1, aspect="auto")
    ax.set_yticks(range(len(triangle)), [f"{pd.Timestamp(c).date()} (n={sizes[c]:,})" for c in triangle.index],
                  fontsize=8)
    step = max(1, len(triangle.columns) // 20)
    ax.set_xticks(range(0, len(triangle.columns), step), [str(a) for a in triangle.columns[::step]], fontsize=8)
    ax.set_xlabel(f"age ({label}s since the cohort's first active {label})")
    fig.colorbar(image, ax=ax, label="share of the cohort active")
    return _png(fig)


def distribution_chart(distributions: pd.DataFrame, measure: str, title: str, label: str) -> bytes:
    data = (distributions[distributions["measure"] == measure]
            .groupby(["bucket_start", "bucket"], as_index=False)["users"].sum().sort_values("bucket_start"))
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
    label = {"daily": "day", "weekly": "week", "monthly": "month"}[grain.value]
    growth = _frame(f"SELECT * FROM {sql.ident(sql.growth_table(b, grain))} ORDER BY period_start")
    if growth.empty:
        raise ActivationError(f"{sql.growth_table(b, grain)} is empty; materialize it first.")
    latest = growth["period_start"].iloc[-1]
    latest = latest.date() if hasattr(latest, "date") else latest
    transitions = _frame(
        f"SELECT * FROM {sql.ident(sql.transitions_table(b, grain))} WHERE period_start = {sql.date_lit(latest)}")
    cohorts = _frame(f"SELECT * FROM {sql.ident(sql.cohorts_table(b, grain))}")
    distributions = _frame(f"SELECT * FROM {sql.ident(sql.distributions_table(b, grain))}")
    window = distributions[pd.to_datetime(distributions["period_start"]) > pd.Timestamp(latest) - pd.Timedelta(days=90)]
    last = growth.iloc[-1]
    return [
        Chart("Growth accounting",
              f"Per {label}: retained, new and reactivated users stack up to the active users (line); churned"
              f" users go down. Latest {label} ({latest}): {int(last.active):,} active = {int(last.new):,} new +"
              f" {int(last.retained):,} retained + {int(last.reactivated):,} reactivated; {int(last.churned):,}"
              " churned.", growth_chart(growth, label), "growth"),
        Chart("Quick ratio", "(new + reactivated) / churned: above 1 the active base grows.",
              quick_ratio_chart(growth), "quick_ratio"),
        Chart(f"Transitions into {latest}", "Users by state in the previous period (rows) and in the latest (columns).",
              transition_matrix(transitions, latest), "transitions"),
        Chart("Cohort retention", f"Share of each cohort (first active {label}) active at each age; the"
              f" {MAX_COHORTS} most recent cohorts.", cohort_heatmap(cohorts, label), "cohorts"),
        Chart("Return gap", f"How long reactivated users had been away, over the last 90 days of {label}s.",
              distribution_chart(window, "return_gap", "return gap", label), "return_gap"),
    ]


PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 1100px; color: #222; }}
h1 {{ font-size: 1.5rem; }} h2 {{ font-size: 1.1rem; margin-top: 2rem; }}
figure {{ margin: 0; }} figcaption {{ color: #555; font-size: .9rem; margin: .3rem 0 1rem; }}
img {{ max-width: 100%; }} nav a {{ margin-right: 1rem; }} .meta {{ color: #777; font-size: .85rem; }}
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
        parts.append(f"<section><h2>{html.escape(chart.title)}</h2><figure>"
                     f"<img class='chart' data-chart='{chart.name}' alt='{html.escape(chart.title)}'"
                     f" src='data:image/png;base64,{encoded}'>"
                     f"<figcaption>{html.escape(chart.caption)}</figcaption></figure></section>")
    return PAGE.format(title=f"{behavior.name} {grain.value} activation", body="\n".join(parts))


def write_reports(
    config: ActivationConfig, behaviors: list[BehaviorConfig], grains: list[Grain] | None, out: Path,
    png_dir: Path | None = None,
) -> Path:
    """Write `<behavior>_<grain>.html` for each selection and an index.html; return the index path."""
    out.mkdir(parents=True, exist_ok=True)
    pages = [(b, g) for b in behaviors for g in b.grains if grains is None or g in grains]
    links = " ".join(f"<a href='{b.name}_{g.value}.html'>{b.name} {g.value}</a>" for b, g in pages)
    with open_warehouse(config, read_only=True) as warehouse:
        if warehouse is None:
            raise ActivationError(f"{config.database} does not exist; run `activation materialize` first.")
        for behavior, grain in pages:
            charts = charts_for(warehouse, behavior, grain)
            (out / f"{behavior.name}_{grain.value}.html").write_text(render_page(behavior, grain, charts, links))
            if png_dir is not None:
                png_dir.mkdir(parents=True, exist_ok=True)
                for chart in charts:
                    (png_dir / f"report_{behavior.name}_{grain.value}_{chart.name}.png").write_bytes(chart.png)
    index = out / "index.html"
    items = "".join(f"<li><a href='{b.name}_{g.value}.html'>{b.name} — {g.value}</a></li>" for b, g in pages)
    index.write_text(PAGE.format(title="Activation reports", body=f"<h1>Activation reports</h1><ul>{items}</ul>"))
    return index
