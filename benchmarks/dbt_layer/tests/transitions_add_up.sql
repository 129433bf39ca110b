-- The transitions of the day add up to its activation rows.
select 1
from (select sum(users) as n from {{ ref('transitions_daily') }} where period_start = '{{ var("test_day") }}') as t,
     (select count(*) as n from {{ ref('activation_daily') }} where period_start = '{{ var("test_day") }}') as a
where t.n <> a.n
