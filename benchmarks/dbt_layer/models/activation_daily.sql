{{ config(materialized='view') }}
-- The states of every (user, day), read off the user's FirstLast row of the day.
select
    period_start,
    user_id,
    case
        when first_active_period = period_start then 'new'
        when last_active_period < period_start then 'inactive'
        when streak_start_period < period_start then 'retained'
        else 'reactivated'
    end as state,
    case
        when first_active_period = period_start then null
        when first_active_period = period_start - 1 then 'new'
        when last_active_period < period_start - 1 or streak_start_period = period_start then 'inactive'
        when streak_start_period < period_start - 1 then 'retained'
        else 'reactivated'
    end as prev_state,
    first_active_period,
    last_active_period,
    cast(case when last_active_period = period_start
        then date_diff('day', streak_start_period, period_start) + 1 else 0 end as integer) as streak,
    cast(case when last_active_period = period_start
        then 0 else date_diff('day', last_active_period, period_start) end as integer) as inactive_streak,
    cast(case when first_active_period < period_start and streak_start_period = period_start
        then date_diff('day', prior_active_period, period_start) - 1 end as integer) as return_gap,
    active_periods
from {{ ref('firstlast_daily') }}
