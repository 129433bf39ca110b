-- Listed an item for sale (one row per item_listed event).
-- A refined fact: exact re-deliveries and rows without a user or a time are removed here, where
-- the behavior's business logic lives; the activation layer reads this table.
select distinct
    event_id,
    user_id,
    occurred_at,
    platform,
    country
from {{ ref('stg_events') }}
where event_name = 'item_listed'
  and user_id is not null
  and occurred_at is not null
