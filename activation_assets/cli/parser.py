"""`activation`'s arguments."""

from __future__ import annotations

import argparse

from activation_assets.config import SAMPLE_DATA_DIR, Grain
from activation_assets.cli.commands import (
    cmd_check, cmd_dbt_sources, cmd_materialize, cmd_report, cmd_sample_data, cmd_status, cmd_ui, cmd_validate,
)


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="activation", description="The user activation layer, as Dagster assets.")
    commands = top.add_subparsers(dest="command", required=True)

    def with_config(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument("--config", help="activation config (default: $ACTIVATION_CONFIG or ./activation.yaml)")
        return p

    m = with_config(commands.add_parser("materialize", help="materialize the graph (what is missing, in order)"))
    m.add_argument("--behavior", action="append", help="only this behavior (repeatable)")
    m.add_argument("--grain", action="append", choices=[g.value for g in Grain], help="only this grain (repeatable)")
    m.add_argument("--from", dest="date_from", help="first day (YYYY-MM-DD) of a window to recompute")
    m.add_argument("--to", dest="date_to", help="last day (YYYY-MM-DD) of a window to recompute")
    m.add_argument("--no-dbt", action="store_true",
                   help="do not run `dbt build` first for behaviors whose source is a dbt model")
    m.set_defaults(handler=cmd_materialize)

    st = with_config(commands.add_parser(
        "status", help="what is outdated or missing, and why (exit 0 when everything is current)"))
    st.add_argument("--behavior", action="append", help="only this behavior (repeatable)")
    st.add_argument("--grain", action="append", choices=[g.value for g in Grain], help="only this grain (repeatable)")
    st.set_defaults(handler=cmd_status)

    c = with_config(commands.add_parser(
        "check", help="re-run every invariant over the materialized partitions (exit 1 on any violation)"))
    c.add_argument("--behavior", action="append", help="only this behavior (repeatable)")
    c.add_argument("--grain", action="append", choices=[g.value for g in Grain], help="only this grain (repeatable)")
    c.add_argument("--from", dest="date_from", help="first partition (YYYY-MM-DD) to check")
    c.add_argument("--to", dest="date_to", help="last partition (YYYY-MM-DD) to check")
    c.set_defaults(handler=cmd_check)

    v = with_config(commands.add_parser("validate", help="check the config and its sources"))
    v.set_defaults(handler=cmd_validate)

    s = commands.add_parser("sample-data", help="generate the bundled sample marketplace data")
    s.add_argument("--out", default=str(SAMPLE_DATA_DIR), help=f"default {SAMPLE_DATA_DIR} (where the bundled config reads)")
    s.add_argument("--users", type=int, help="default 30,000")  # defaults: sample_data.SampleSpec
    s.add_argument("--days", type=int, help="default 90 (2025-01-01..03-31, the bundled config's window)")
    s.add_argument("--seed", type=int)
    s.add_argument("--force", action="store_true", help="regenerate even if present")
    s.set_defaults(handler=cmd_sample_data)

    r = with_config(commands.add_parser("report", help="write the HTML growth-accounting report"))
    r.add_argument("--behavior", action="append", help="only this behavior (repeatable)")
    r.add_argument("--grain", action="append", choices=[g.value for g in Grain], help="only this grain (repeatable)")
    r.add_argument("--out", help="output folder (default: reports/ next to the config)")
    r.add_argument("--png", help="also save each chart as a PNG in this folder")
    r.set_defaults(handler=cmd_report)

    d = with_config(commands.add_parser(
        "dbt-sources", help="print (or --out write) the layer's relations as dbt sources, for models downstream"))
    d.add_argument("--out", help="write the sources file here instead of printing it")
    d.set_defaults(handler=cmd_dbt_sources)

    u = with_config(commands.add_parser("ui", help="open the Dagster UI (dagster dev) on the project instance"))
    u.add_argument("--port", type=int, default=3000)
    u.set_defaults(handler=cmd_ui)

    sv = commands.add_parser(
        "serve", help="keep Dagster imported: every other `activation` command of this Python starts here, in"
                      " a fraction of a second (docs/cli.md)")
    sv.add_argument("--socket", help="where to listen (default: $ACTIVATION_SERVE_SOCKET, else one path per"
                                     " Python environment and user in $XDG_RUNTIME_DIR or the temp folder)")
    sv.set_defaults(handler=None)  # cli.main serves itself
    return top
