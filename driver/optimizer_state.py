"""The state an ASE optimizer carries from one step to the next, as named float arrays, so that a
checkpointed NEB band (driver.tasks.neb_restart) or relaxation (driver.tasks.relax) continues
exactly: FIRE's velocities and step size, BFGS's Hessian and last step. A fresh optimizer given
this state takes the same steps as the one that was killed."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from driver.checkpoint import CheckpointError

# ASE optimizer class -> the attributes that change as it runs (None before its first step).
# BFGS's Hessian lives in `optimizer.state.hessian`, read and written through `_hessian`.
OPTIMIZER_STATE: dict[str, tuple[str, ...]] = {
    "FIRE": ("vel", "dt", "a", "Nsteps"),
    "BFGS": ("hessian", "pos0", "forces0"),
    "LBFGS": ("r0", "f0", "p", "iteration", "s", "y", "rho"),
    "NEBOptimizer": (),
}
INTEGER_FIELDS = ("Nsteps", "iteration")
IN_METHOD_STATE = ("iteration", "s", "y", "rho")  # LBFGS keeps these in `optimizer.state`
LIST_FIELDS = ("s", "y", "rho")  # lists that start empty: restored as lists


def fields(optimizer) -> tuple[str, ...]:
    name = type(optimizer).__name__
    if name not in OPTIMIZER_STATE:
        raise CheckpointError(f"no checkpoint layout for ASE optimizer {name}; add it to OPTIMIZER_STATE")
    return OPTIMIZER_STATE[name]


def _read(optimizer, field: str):
    if field == "hessian":
        return None if optimizer.state is None else optimizer.state.hessian
    if field in IN_METHOD_STATE:
        return getattr(optimizer.state, field)
    return getattr(optimizer, field)


def _write(optimizer, field: str, value) -> None:
    if field == "hessian":
        if value is not None:
            optimizer.update(None, None, None, None)  # with no state yet, BFGS only creates it
            optimizer.state.hessian = value
        return
    setattr(optimizer.state if field in IN_METHOD_STATE else optimizer, field, value)


def capture_optimizer(optimizer) -> dict[str, np.ndarray]:
    """Each field as a float array; a field still None is stored empty."""
    stored = {}
    for field in fields(optimizer):
        value = _read(optimizer, field)
        stored[field] = np.zeros(0) if value is None else np.array(value, dtype=np.float64)
    return stored


def restore_optimizer_state(stored: Mapping[str, np.ndarray], optimizer, nsteps: int) -> None:
    """Put a fresh optimizer (built as for a new run, on the restored structure) back into `stored`."""
    expected = fields(optimizer)
    if set(stored) != set(expected):
        raise CheckpointError(f"checkpoint holds optimizer fields {sorted(stored)}, "
                              f"{type(optimizer).__name__} needs {sorted(expected)}")
    for field, value in stored.items():
        value = np.asarray(value)
        if field in LIST_FIELDS:
            value = [np.array(item) if item.ndim else float(item) for item in value]
        elif value.size == 0:
            value = None
        elif value.ndim == 0:
            value = int(value) if field in INTEGER_FIELDS else float(value)
        _write(optimizer, field, value)
    optimizer.nsteps = nsteps
