"""activation-assets: a user activation layer (new / retained / reactivated / inactive) as Dagster assets."""
