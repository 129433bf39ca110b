"""The `activation` process's garbage collector: paused while the command starts, frozen at its exit.

Starting a command that runs Dagster allocates about a million objects that live as long as the
process (Dagster's modules, the definitions, the instance), and each collection they trigger walks
them again: a third of the start-up's time (0.5 s of a one-day `materialize` here). The collector is
paused from the process's start until the command's first Dagster run begins (or, for the other
commands, until they are parsed: `cli.main.STARTS_RUNS`); the objects made by then are frozen, left out of every
later collection, and collection resumes for the command's own work. At the exit, the interpreter's
last collection would walk them all once more (0.5-0.6 s): they are frozen instead, and freed with
the process. Only the command's own process does this; `main()` called in a test process does not.
"""

from __future__ import annotations

import gc
import sys
from typing import NoReturn


def pause_collection() -> None:
    gc.disable()


def resume_collection() -> None:
    """Where the start-up ends: what it made is frozen and collection resumes (a no-op unless paused)."""
    if not gc.isenabled():
        gc.freeze()
        gc.enable()


def leave(code: int) -> NoReturn:
    """Exit with `code` without the last collection. Atexit handlers still run and modules are still
    torn down; what every step opened it also closed (warehouse connections, files), so no cycle
    holds anything to flush."""
    gc.freeze()
    sys.exit(code)
