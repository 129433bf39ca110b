-- new + retained + reactivated on the day = the distinct users of the fact that day.
select 1
from (select count(*) as n from {{ ref('activation_daily') }}
      where period_start = '{{ var("test_day") }}' and state <> 'inactive') as layer,
     (select count(distinct user_id) as n from {{ ref('fact_active_days') }}
      where period_start = '{{ var("test_day") }}') as fact
where layer.n <> fact.n
