"""Read one MD job's H5MD file into arrays: what the analyses need, nothing of the model."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from ase import Atoms

from driver.errors import InputError
from driver.h5read import reading


@dataclass
class Trajectory:
    path: Path
    times_fs: np.ndarray        # (F,)
    positions_A: np.ndarray     # (F, N, 3), as stored (unwrapped by ASE's integrators, maybe wrapped)
    cells_A: np.ndarray         # (F, 3, 3)
    numbers: np.ndarray         # (N,)
    masses: np.ndarray          # (N,)
    pbc: np.ndarray             # (3,)
    observables: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)  # name -> (time, value)
    parameters: dict[str, object] = field(default_factory=dict)

    def frame(self, index: int) -> Atoms:
        return Atoms(numbers=self.numbers, positions=self.positions_A[index], cell=self.cells_A[index], pbc=self.pbc)


def read_trajectory(path: Path) -> Trajectory:
    """Positions, cells, species, observables and /parameters attributes of one job file."""
    with reading(path) as handle:
        try:
            particles = handle["particles/all"]
            position = particles["position"]
            numbers = particles["species"][()]
            boundary = particles["box"].attrs.get("boundary", np.array(["periodic"] * 3))
            pbc = np.array([(b.decode() if isinstance(b, bytes) else str(b)) == "periodic" for b in boundary])
            masses = particles["mass"][()] if "mass" in particles else Atoms(numbers=numbers).get_masses()
            observables = {name: (group["time"][()], group["value"][()])
                           for name, group in handle.get("observables", {}).items()}
            parameters = dict(handle["parameters"].attrs) if "parameters" in handle else {}
            return Trajectory(Path(path), position["time"][()], position["value"][()],
                              particles["box/edges/value"][()], numbers, masses, pbc, observables, parameters)
        except KeyError as exc:
            raise InputError(f"{path}: not an H5MD trajectory of this driver (missing {exc})") from None
