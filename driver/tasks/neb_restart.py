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
from driver.optimizer_state import capture_optimizer, restore_optimizer_state


def capture(images, optimizer, energies: list[np.ndarray], max_forces: list[np.ndarray],
            model_calls: int, frames: int) -> MDState:
    """The band after `optimizer.nsteps` iterations. Fields still None are stored empty."""
    stored = {f"optimizer/{field}": value for field, value in capture_optimizer(optimizer).items()}
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
    stored = {key.removeprefix("optimizer/"): value for key, value in state.integrator.items()
              if key.startswith("optimizer/")}
    restore_optimizer_state(stored, optimizer, state.step)


def history(state: MDState) -> tuple[list[np.ndarray], list[np.ndarray], int]:
    """Per-iteration band energies and image max forces so far, and the model calls made."""
    return (list(state.integrator["history/energies"]), list(state.integrator["history/max_forces"]),
            int(state.integrator["model_calls"]))
