-- One row per logged app event, typed and named as the rest of the project expects.
select
    event_id,
    user_id,
    event_name,
    occurred_at,
    platform,
    country
from {{ source('raw', 'events') }}
