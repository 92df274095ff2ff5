"""Exceptions the CLI turns into one clear line (never a traceback)."""

from __future__ import annotations


class UserError(Exception):
    """A mistake the user can fix (bad input, missing tool). The CLI prints it and exits 2."""


class FleetRuntimeError(Exception):
    """Something the fleet could not do (a process died, a health check timed out). Exit 1.

    The message names the process and its log file so the user knows where to look.
    """


def one_line(exc: BaseException, limit: int = 300) -> str:
    """An exception's message on one line, cut to `limit` characters: for error lines users read."""
    return " ".join(str(exc).split())[:limit]
