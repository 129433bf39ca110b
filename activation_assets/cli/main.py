"""`activation`: the command line for scripts and for the README's first command (`activation --help`)."""

from __future__ import annotations

import sys

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
