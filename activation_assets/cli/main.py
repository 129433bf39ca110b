"""`activation`: the command line for scripts and for the README's first command (`activation --help`)."""

from __future__ import annotations

import gc
import sys
from typing import NoReturn

from activation_assets.cli.output import CommandError
from activation_assets.cli.parser import parser
from activation_assets.config import ConfigError
from activation_assets.engines import ActivationError


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return args.handler(args)
    except (ConfigError, CommandError, ActivationError) as exc:  # a message, not a trace
        print(f"error: {exc}", file=sys.stderr)
        return 1


def run() -> NoReturn:
    """The `activation` command's process (the console script, `python -m activation_assets.cli`)."""
    leave(main())


def leave(code: int) -> NoReturn:
    """Exit with `code`, sparing the interpreter's last collection of garbage cycles: it walks every
    object Dagster's import made, 0.5-0.6 s of each command here (a tenth of a one-day run). The
    objects are frozen instead: atexit handlers still run and modules are still torn down; what every
    step opened it also closed (warehouse connections, files), so no cycle holds anything to flush."""
    gc.freeze()
    sys.exit(code)
