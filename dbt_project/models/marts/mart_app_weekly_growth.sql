-- The weekly dashboard of the app: active users of each week with how they got there and the week's
-- DAU/MAU on its last day. Downstream of the activation layer: it reads the layer's relations
-- through the `activation` source (_activation_sources.yml, from `activation dbt-sources`), so Dagster
-- draws the lineage from the layer's assets into this model, and `activation materialize` builds it
-- after the layer.
select
    growth.period_start as week,
    growth.active,
    growth.new,
    growth.retained,
    growth.reactivated,
    growth.churned,
    growth.active_change,
    growth.retention_rate,
    growth.quick_ratio,
    engagement.dau_mau as dau_mau_on_last_day
from {{ source('activation', 'visited_app_growth_weekly') }} as growth
left join {{ source('activation', 'visited_app_engagement_daily') }} as engagement
    on engagement.period_start = growth.period_start + interval 6 day
