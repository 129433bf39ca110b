"""`activation`, the command line (`activation --help`)."""

from activation_assets.cli.commands import main

__all__ = ["main"]
