-- retained + churned of the day = the users active the day before.
select 1
from (select count(*) filter (where prev_state in ('new', 'retained', 'reactivated')) as n
      from {{ ref('activation_daily') }} where period_start = '{{ var("test_day") }}') as today,
     (select count(*) filter (where state in ('new', 'retained', 'reactivated')) as n
      from {{ ref('activation_daily') }} where period_start = cast('{{ var("test_day") }}' as date) - 1) as yesterday
where today.n <> yesterday.n
