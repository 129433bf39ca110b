"""activation-assets: a user activation layer (new / retained / reactivated / inactive) as Dagster assets."""

import warnings

import dagster as dg

# Single-run backfill policies and nonexistent-upstream partition mappings are what this project is
# built on; Dagster flags them as beta, which would print one warning per asset at every load.
warnings.filterwarnings("ignore", category=dg.BetaWarning)
warnings.filterwarnings("ignore", category=dg.PreviewWarning)
