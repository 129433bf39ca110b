-- Wrote a community post (one row per post).
-- A refined fact: exact re-deliveries and rows without a user or a time are removed here.
select distinct
    post_id,
    user_id,
    occurred_at,
    board
from {{ ref('stg_community_posts') }}
where user_id is not null
  and occurred_at is not null
