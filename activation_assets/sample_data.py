"""A deterministic, realistic marketplace to try the layer on (and to benchmark it at scale).

Users sign up through the year at a growing rate; each alternates between engaged spells and
dormant spells (churn and returns), visits with a personal, heavy-tailed propensity modulated by
weekday and season, and sometimes lists an item or writes a community post. The logs carry the
noise real ones do: exact duplicates, null user ids and timestamps, test rows outside the year, and
late rows that land in the next month's file.

Users have attributes to break the numbers down by (the bundled config's `segments:`): a home
platform, which about one user in twelve changes for good during the sample (a new phone), and from
which an event now and then comes from another (a look on the web); and a country, which a few users
change (a move), and which the logs miss on some events (an unknown location).

Outputs (under `out`):
    events/YYYY-MM.parquet   app_open and item_listed events, integer user ids, naive UTC timestamps,
                             platform and country (null where unknown)
    community_posts.csv      posts, string author ids ("u000123"), timestamps with a +09:00 offset
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

SEOUL = dt.timezone(dt.timedelta(hours=9))  # Korea has no DST


@dataclass(frozen=True)
class SampleSpec:
    users: int = 30_000
    start: dt.date = dt.date(2025, 1, 1)
    days: int = 90  # January to March 2025: `make demo` (dbt included) stays near five minutes on two cores
    seed: int = 20250101


PLATFORMS = ("ios", "android", "web")
PLATFORM_SHARES = (0.47, 0.43, 0.10)
COUNTRIES = ("KR", "JP", "US", "TW", "VN", "SG", "TH", "DE")
COUNTRY_SHARES = (0.62, 0.13, 0.09, 0.06, 0.04, 0.03, 0.02, 0.01)
# The story the demo's segments tell: for the last three weeks, an Android release keeps some of its
# users away (they come back less often), so active users fall on Android while the others grow.
SLUMP_WEEKS, SLUMP_FACTOR = 3, 0.6


@dataclass(frozen=True)
class Attribute:
    """A user attribute: each user's home value (an index into `values`), the value they change to,
    and the day they change (beyond the sample for those who never do)."""

    values: tuple[str, ...]
    shares: tuple[float, ...]
    home: np.ndarray
    later: np.ndarray
    changes_on: np.ndarray

    @classmethod
    def draw(cls, values: tuple[str, ...], shares: tuple[float, ...], change_share: float, n: int, span: int,
             rng: np.random.Generator) -> Attribute:
        home, later = rng.choice(len(values), p=shares, size=n), rng.choice(len(values), p=shares, size=n)
        changes_on = np.where(rng.random(n) < change_share, rng.integers(1, max(2, span), size=n), span + 1)
        return cls(values, shares, home, later, changes_on)

    def at(self, users: np.ndarray, days: np.ndarray | int) -> np.ndarray:
        """The home value (index) of `users` on `days`."""
        return np.where(days >= self.changes_on[users], self.later[users], self.home[users])

    def on_events(self, users: np.ndarray, days: np.ndarray, elsewhere_share: float,
                  rng: np.random.Generator) -> np.ndarray:
        """Each event's value: the user's home value that day, and on `elsewhere_share` of the events
        another one (drawn by the shares)."""
        index = self.at(users, days)
        elsewhere = rng.random(users.size) < elsewhere_share
        index = np.where(elsewhere, rng.choice(len(self.values), p=self.shares, size=users.size), index)
        return np.asarray(self.values, dtype=object)[index]


def _attributes(spec: SampleSpec) -> tuple[Attribute, Attribute]:
    """(platform, country), from a generator of their own: the activity draws stay those of a
    sample without attributes (the benchmark's events)."""
    rng = np.random.default_rng(spec.seed + 1)
    return (Attribute.draw(PLATFORMS, PLATFORM_SHARES, 0.08, spec.users, spec.days, rng),
            Attribute.draw(COUNTRIES, COUNTRY_SHARES, 0.01, spec.users, spec.days, rng))


def _activity(spec: SampleSpec, rng: np.random.Generator, slump: Attribute | None = None,
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(user, day) pairs of active user-days, and each user's propensities. With `slump` (the
    platform), users on Android are active less often in the last SLUMP_WEEKS weeks."""
    n, days = spec.users, spec.days
    # Growth: signups accelerate through the year (density grows linearly from 1 to 3).
    u = rng.random(n)
    signup = np.floor(days * (np.sqrt(1 + 8 * u) - 1) / 2).astype(int).clip(0, days - 1)
    propensity = np.clip(rng.lognormal(mean=-1.6, sigma=0.9, size=n), 0.01, 0.95)
    stay = 1 - 1 / rng.uniform(8, 90, size=n)  # engaged spells last ~1 week to 3 months
    away = 1 - 1 / rng.uniform(5, 120, size=n)  # dormant spells: days to months
    engaged = np.ones(n, dtype=bool)
    day_index = np.arange(days)
    dates = pd.date_range(spec.start, periods=days, freq="D")
    weekday = np.where(dates.dayofweek >= 5, 1.25, 1.0)
    season = 1 + 0.15 * np.sin(2 * np.pi * (day_index - 80) / 365) + np.where(dates.month == 12, 0.2, 0)
    everyone = np.arange(n)
    android = PLATFORMS.index("android")
    users, active_days = [], []
    for day in range(days):
        joined = signup <= day
        switch = rng.random(n)
        engaged = np.where(engaged, switch < stay, switch > away)
        engaged |= signup == day
        chance = np.where(engaged, propensity * weekday[day] * season[day], 0.004)
        if slump is not None and day >= days - 7 * SLUMP_WEEKS:
            chance = np.where(slump.at(everyone, day) == android, chance * SLUMP_FACTOR, chance)
        active = joined & ((signup == day) | (rng.random(n) < chance))
        ids = np.flatnonzero(active)
        users.append(ids)
        active_days.append(np.full(ids.size, day))
    return np.concatenate(users), np.concatenate(active_days), propensity


def _times(spec: SampleSpec, days: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Naive UTC timestamps for local (Seoul) days, with an evening peak and a few after midnight."""
    local_hour = np.clip(rng.normal(19.5, 4.5, size=days.size), 0, 24 * 60 * 60 / 3600 - 1e-6)
    seconds = (local_hour * 3600).astype("int64")
    local_midnight = np.datetime64(spec.start.isoformat()) + days.astype("timedelta64[D]")
    return local_midnight.astype("datetime64[s]") + seconds.astype("timedelta64[s]") - np.timedelta64(9, "h")


def generate(out: str | Path, spec: SampleSpec = SampleSpec()) -> dict[str, int]:
    out = Path(out)
    rng = np.random.default_rng(spec.seed)
    platform, country = _attributes(spec)
    users, days, propensity = _activity(spec, rng, slump=platform)

    # Several app opens per active day; a listing on some of them, more for keen users.
    opens = 1 + rng.poisson(1.2, size=users.size)
    open_users, open_days = np.repeat(users, opens), np.repeat(days, opens)
    lists = rng.random(users.size) < np.clip(0.03 + 0.25 * propensity[users], 0, 0.5)
    list_users, list_days = users[lists], days[lists]
    posts = rng.random(users.size) < np.clip(0.01 + 0.1 * propensity[users] ** 2, 0, 0.3)
    post_users, post_days = users[posts], days[posts]

    events = pd.DataFrame({
        "user_id": pd.array(np.concatenate([open_users, list_users]) + 1, dtype="Int64"),
        "event_name": np.repeat(["app_open", "item_listed"], [open_users.size, list_users.size]),
        "occurred_at": np.concatenate([_times(spec, open_days, rng), _times(spec, list_days, rng)]),
    })
    event_users, event_days = np.concatenate([open_users, list_users]), np.concatenate([open_days, list_days])
    events["platform"] = platform.on_events(event_users, event_days, 0.04, rng)
    # The location is unknown on a few events.
    events["country"] = np.where(rng.random(len(events)) < 0.03, None,
                                 country.on_events(event_users, event_days, 0.0, rng))
    # Every event has its id before the noise, so that a re-delivered event is an exact duplicate.
    events.insert(0, "event_id", np.arange(1, len(events) + 1, dtype="int64"))
    # Noise: exact duplicates, null ids and times, test rows outside the year.
    events = pd.concat([events, events.sample(frac=0.005, random_state=spec.seed)], ignore_index=True)
    events.loc[events.sample(frac=0.001, random_state=spec.seed + 1).index, "user_id"] = pd.NA
    events.loc[events.sample(frac=0.0005, random_state=spec.seed + 2).index, "occurred_at"] = pd.NaT
    outside = pd.DataFrame({
        "event_id": np.arange(len(events) + 1, len(events) + 5, dtype="int64"),
        "user_id": pd.array([1, 2, 3, 4], dtype="Int64"),
        "event_name": ["app_open"] * 4,
        "occurred_at": pd.to_datetime(["2024-12-31 10:00", "2024-12-31 14:59", "2025-12-31 15:00",
                                       "2026-01-01 09:00"]),  # the 2nd is still 2024 in Seoul, the 3rd 2026
        "platform": ["web"] * 4,
        "country": ["KR"] * 4,
    })
    events = pd.concat([events, outside], ignore_index=True)
    # Files by arrival month: about 1% of rows arrive late, in the next month's file.
    occurred = events["occurred_at"].fillna(pd.Timestamp(spec.start))
    arrival = occurred + pd.to_timedelta(np.where(rng.random(len(events)) < 0.01, 20, 0), unit="D")
    order = rng.permutation(len(events))  # log order, not time order
    month = arrival.dt.strftime("%Y-%m").to_numpy()[order]
    events = events.iloc[order].reset_index(drop=True)

    (out / "events").mkdir(parents=True, exist_ok=True)
    for old in (out / "events").glob("*.parquet"):
        old.unlink()
    for name, part in events.groupby(month, sort=True):
        part.to_parquet(out / "events" / f"{name}.parquet", index=False)

    posts_frame = pd.DataFrame({
        "post_id": np.arange(1, post_users.size + 1),
        "author_id": [f"u{u + 1:06d}" for u in post_users],
        "created_at": [t.astimezone(SEOUL).isoformat() for t in
                       pd.to_datetime(_times(spec, post_days, rng)).tz_localize("UTC")],
        "board": rng.choice(["neighborhood", "qna", "deals"], size=post_users.size),
    })
    duplicates = max(1, round(0.003 * len(posts_frame)))  # at least one, however small the sample
    posts_frame = pd.concat([posts_frame, posts_frame.sample(n=duplicates, random_state=spec.seed)])
    posts_frame = posts_frame.sort_values("created_at", kind="stable")
    posts_frame.to_csv(out / "community_posts.csv", index=False)
    return {"events": len(events), "posts": len(posts_frame), "users": spec.users}


def write_benchmark_events(path: str | Path, spec: SampleSpec, attributes: bool = False) -> int:
    """The same activity model at benchmark scale, lean: only `user_id` and `occurred_at` (naive UTC),
    written with Arrow (no Python objects per row); with `attributes`, also `platform` (3 values) and
    `country` (8 values), as the sample has them (the same events either way). Returns the number of
    events."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(spec.seed)
    users, days, _ = _activity(spec, rng)
    opens = 1 + rng.poisson(0.4, size=users.size)
    users, days = np.repeat(users, opens), np.repeat(days, opens)
    times = _times(spec, days, rng)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    columns = {"user_id": pa.array(users + 1, pa.int64()), "occurred_at": pa.array(times, pa.timestamp("us"))}
    if attributes:
        other = np.random.default_rng(spec.seed + 2)
        for name, attribute in zip(("platform", "country"), _attributes(spec)):
            index = attribute.at(users, days)
            index = np.where(other.random(users.size) < 0.04, other.integers(0, len(attribute.values), users.size), index)
            columns[name] = pa.DictionaryArray.from_arrays(pa.array(index, pa.int32()), pa.array(attribute.values))
    table = pa.table(columns)
    pq.write_table(table, path, row_group_size=1_000_000)
    return table.num_rows
