"""`activation`: the command line for scripts and for the README's first command (`activation --help`).

Only the standard library is imported before `run` knows where the command runs: handed to a running
`activation serve` (`client.py`), or here, where `main` imports the commands.
"""

from __future__ import annotations

import sys
from typing import NoReturn

from activation_assets.cli.client import run_through_server
from activation_assets.cli.process import leave, pause_collection, resume_collection

# Commands whose start-up lasts until their first Dagster run begins (the runner resumes collection
# there); every other command's ends once it is parsed.
STARTS_RUNS = ("materialize",)


def main(argv: list[str] | None = None) -> int:
    from activation_assets.cli.output import CommandError
    from activation_assets.cli.parser import parser
    from activation_assets.config import ConfigError
    from activation_assets.engines import ActivationError

    args = parser().parse_args(argv)
    if args.command not in STARTS_RUNS:
        resume_collection()
    try:
        if args.command == "serve":
            from activation_assets.cli import server

            return server.serve(args.socket, run_command=main)
        return args.handler(args)
    except (ConfigError, CommandError, ActivationError) as exc:  # a message, not a trace
        print(f"error: {exc}", file=sys.stderr)
        return 1


def run() -> NoReturn:
    """The `activation` command's process (the console script, `python -m activation_assets.cli`):
    the command handed to `activation serve` when one runs; otherwise its start-up here with the
    garbage collector paused, its exit without the last collection (see `process`)."""
    served = run_through_server(sys.argv[1:])
    if served is not None:
        sys.exit(served)
    pause_collection()
    leave(main())
