"""The project's own exception types; the CLI turns each into one line and an exit code."""

from __future__ import annotations


class DriverError(Exception):
    """Base class for errors a user should see as one line, never as a traceback."""

    exit_code = 1


class InputError(DriverError):
    """Bad input: recipe, structure, model spec, label file or argument (exit code 2)."""

    exit_code = 2


class SimulationError(DriverError):
    """A simulation that started but failed; the message carries its diagnosis (exit code 1)."""

    exit_code = 1


class OutputError(DriverError):
    """Results cannot be written: disk full, quota, file-size limit, folder removed (exit code 1)."""

    exit_code = 1


def first_line(exc: BaseException) -> str:
    """A library exception as one line for a user message (its first line, or its type)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
