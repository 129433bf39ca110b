"""`activation`, the command line (`activation --help`)."""

from activation_assets.cli.main import main

__all__ = ["main"]
