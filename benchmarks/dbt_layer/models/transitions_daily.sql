-- Users per (from_state, to_state) of each day.
select period_start, prev_state as from_state, state as to_state, count(*) as users
from {{ ref('activation_daily') }}
group by all
