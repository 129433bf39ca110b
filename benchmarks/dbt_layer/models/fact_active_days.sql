-- One row per (day, user) with at least one valid event that day (UTC days).
select distinct
    cast(occurred_at as date) as period_start,
    user_id
from {{ source('raw', 'events') }}
where user_id is not null
  and occurred_at is not null
