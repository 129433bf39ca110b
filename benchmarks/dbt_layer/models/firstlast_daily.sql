-- FirstLast(d) = FirstLast(d - 1) updated with the users active on d (new users added). The batch's
-- day comes from dbt; the previous day's rows are this model's own.
{% set day = model.batch.event_time_start.strftime('%Y-%m-%d') if model.batch else var('start_date') %}
with active as (
    select user_id from {{ ref('fact_active_days') }}
),
prior_state as (
    {% if is_incremental() %}
    select * from {{ this }} where period_start = date '{{ day }}' - interval 1 day
    {% else %}
    select
        cast(null as date) as period_start, cast(null as bigint) as user_id,
        cast(null as date) as first_active_period, cast(null as date) as last_active_period,
        cast(null as date) as streak_start_period, cast(null as date) as prior_active_period,
        cast(null as integer) as active_periods
    where false
    {% endif %}
)
select
    date '{{ day }}' as period_start,
    coalesce(prior_state.user_id, active.user_id) as user_id,
    coalesce(prior_state.first_active_period, date '{{ day }}') as first_active_period,
    case when active.user_id is null then prior_state.last_active_period else date '{{ day }}' end
        as last_active_period,
    case
        when active.user_id is null then prior_state.streak_start_period
        when prior_state.last_active_period = date '{{ day }}' - interval 1 day then prior_state.streak_start_period
        else date '{{ day }}'
    end as streak_start_period,
    case
        when active.user_id is null or prior_state.last_active_period = date '{{ day }}' - interval 1 day
            then prior_state.prior_active_period
        else prior_state.last_active_period
    end as prior_active_period,
    cast(coalesce(prior_state.active_periods, 0) + case when active.user_id is null then 0 else 1 end as integer)
        as active_periods
from prior_state full outer join active on prior_state.user_id = active.user_id
