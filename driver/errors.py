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


class ResourceError(DriverError):
    """The machine ran out of something the run needs: device or host memory (exit code 1)."""

    exit_code = 1


def is_out_of_memory(exc: BaseException) -> bool:
    """torch's CUDA out-of-memory (a RuntimeError subclass, or a plain RuntimeError from older
    torch and from CPU allocators), or Python's MemoryError."""
    if isinstance(exc, MemoryError):
        return True
    name = type(exc).__name__
    text = str(exc).lower()
    # torch's CPU allocator says "DefaultCPUAllocator: can't allocate memory: you tried to allocate ..."
    return name == "OutOfMemoryError" or (isinstance(exc, RuntimeError) and (
        "out of memory" in text or "can't allocate memory" in text))
