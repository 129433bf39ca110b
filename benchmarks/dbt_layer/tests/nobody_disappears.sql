-- Rows of the day = rows of the day before + the day's new users.
select 1
from (select count(*) as n, count(*) filter (where state = 'new') as new from {{ ref('activation_daily') }}
      where period_start = '{{ var("test_day") }}') as today,
     (select count(*) as n from {{ ref('activation_daily') }}
      where period_start = cast('{{ var("test_day") }}' as date) - 1) as yesterday
where today.n <> yesterday.n + today.new
