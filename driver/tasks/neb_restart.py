"""NEB restart: the band, its iteration history and the optimizer's state in the job's own file,
so that `driver run --resume` continues a killed NEB job from its newest checkpoint.

Stored in driver.checkpoint's two sealed slots as its MDState record, read as:
  step       optimizer iterations done
  frames     the job's stored frames (1: its start, kept when it resumes)
  positions  every image's positions, (n_images, n_atoms, 3), endpoints included
  momenta    empty (a band has none)
  cell       the band's cell
  integrator named float arrays: "optimizer/<field>" (OPTIMIZER_STATE), "history/energies"
             and "history/max_forces" (one row per iteration so far), "model_calls"
FIRE and BFGS continue exactly: the resumed band equals an uninterrupted one to round-off. ASE's
ODE optimiser keeps its state in local variables, so a resumed ODE band restarts that optimiser
from the stored positions (same minimum-energy path, not the same iterations).
"""

from __future__ import annotations

import numpy as np

from driver.checkpoint import CheckpointError, MDState

# ASE optimizer class -> the attributes that change as it runs (None before its first step).
# BFGS's Hessian lives in `optimizer.state.hessian`, read and written through `_hessian`.
OPTIMIZER_STATE: dict[str, tuple[str, ...]] = {
    "FIRE": ("vel", "dt", "a", "Nsteps"),
    "BFGS": ("hessian", "pos0", "forces0"),
    "NEBOptimizer": (),
}
INTEGER_FIELDS = ("Nsteps",)


def _fields(optimizer) -> tuple[str, ...]:
    name = type(optimizer).__name__
    if name not in OPTIMIZER_STATE:
        raise CheckpointError(f"no NEB checkpoint layout for ASE optimizer {name}; add it to OPTIMIZER_STATE")
    return OPTIMIZER_STATE[name]


def _read(optimizer, field: str):
    if field == "hessian":
        return None if optimizer.state is None else optimizer.state.hessian
    return getattr(optimizer, field)


def _write(optimizer, field: str, value) -> None:
    if field == "hessian":
        if value is not None:
            optimizer.update(None, None, None, None)  # with no state yet, BFGS only creates it
            optimizer.state.hessian = value
        return
    setattr(optimizer, field, value)


def capture(images, optimizer, energies: list[np.ndarray], max_forces: list[np.ndarray],
            model_calls: int, frames: int) -> MDState:
    """The band after `optimizer.nsteps` iterations. Fields still None are stored empty."""
    stored = {}
    for field in _fields(optimizer):
        value = _read(optimizer, field)
        stored[f"optimizer/{field}"] = np.zeros(0) if value is None else np.array(value, dtype=np.float64)
    stored["history/energies"] = np.array(energies, dtype=np.float64)
    stored["history/max_forces"] = np.array(max_forces, dtype=np.float64)
    stored["model_calls"] = np.array(model_calls, dtype=np.float64)
    return MDState(step=int(optimizer.nsteps), frames=frames,
                   positions=np.array([image.positions for image in images]), momenta=np.zeros((0, 3)),
                   cell=images[0].cell[:].copy(), integrator=stored)


def restore_band(state: MDState, images) -> None:
    if state.positions.shape != (len(images), len(images[0]), 3):
        raise CheckpointError(f"checkpoint holds a band of shape {state.positions.shape}, the recipe's has "
                              f"{(len(images), len(images[0]), 3)}")
    for image, positions in zip(images, state.positions, strict=True):
        image.set_positions(positions)


def restore_optimizer(state: MDState, optimizer) -> None:
    """Put a fresh optimizer (built as for a new run, on the restored band) back into `state`."""
    fields = _fields(optimizer)
    stored = {key.removeprefix("optimizer/"): value for key, value in state.integrator.items()
              if key.startswith("optimizer/")}
    if set(stored) != set(fields):
        raise CheckpointError(f"checkpoint holds optimizer fields {sorted(stored)}, "
                              f"{type(optimizer).__name__} needs {sorted(fields)}")
    for field, value in stored.items():
        if value.size == 0:
            value = None
        elif value.ndim == 0:
            value = int(value) if field in INTEGER_FIELDS else float(value)
        _write(optimizer, field, value)
    optimizer.nsteps = state.step


def history(state: MDState) -> tuple[list[np.ndarray], list[np.ndarray], int]:
    """Per-iteration band energies and image max forces so far, and the model calls made."""
    return (list(state.integrator["history/energies"]), list(state.integrator["history/max_forces"]),
            int(state.integrator["model_calls"]))
