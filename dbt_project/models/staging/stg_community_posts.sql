-- One row per community post; the author is the user.
select
    post_id,
    author_id as user_id,
    created_at as occurred_at,
    board
from {{ source('raw', 'community_posts') }}
