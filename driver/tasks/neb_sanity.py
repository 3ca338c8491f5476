"""NEB sanity: a band can converge and still not be a barrier. These checks name why a job's
result should not be trusted as it stands; the job then reads `suspect` instead of `completed`.

- The energy profile: the highest image is an endpoint, or there is no interior maximum at all
  ("no saddle found"), as when the endpoints are not minima of the same depth and the band just
  climbs from one to the other.
- Endpoint relaxation moved the hopping atom (driver.tasks.neb_endpoints names it) by more than
  `endpoint_max_shift_fraction` of the hop length: the relaxed endpoint is not the site asked for.
- Both endpoints relaxed into the same minimum: every atom of the relaxed final endpoint lies
  within SAME_MINIMUM_A of the initial one's (minimum image). Positions, not energies, decide:
  symmetry-equivalent endpoints of a symmetric hop have equal energies and are different minima.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from ase import Atoms
from ase.geometry import find_mic

ENERGY_TOLERANCE_EV = 1e-3  # energy differences below this do not make a maximum (flat-ish bands)
SAME_MINIMUM_A = 0.1  # relaxed endpoints closer than this (largest atom displacement) are one minimum


def hop_atom_shift(before: np.ndarray, after: Atoms, hop_atom: int) -> float:
    """How far (Å, minimum image) the hopping atom moved from `before` to its position in `after`."""
    _, length = find_mic(after.positions[hop_atom] - before, after.cell, after.pbc)
    return float(length)


def interior_maxima(energies: Sequence[float], tolerance_eV: float = ENERGY_TOLERANCE_EV) -> list[int]:
    """Indices of the interior images that are local maxima of the profile. Consecutive images
    within `tolerance_eV` count as one plateau; a plateau touching an endpoint is not interior."""
    energies = np.asarray(energies, dtype=float)
    plateaus: list[list[int]] = [[0]]
    for index in range(1, len(energies)):
        if abs(energies[index] - energies[plateaus[-1][0]]) <= tolerance_eV:
            plateaus[-1].append(index)
        else:
            plateaus.append([index])
    levels = [energies[plateau[0]] for plateau in plateaus]
    return [max(plateau, key=lambda i: energies[i]) for k, plateau in enumerate(plateaus[1:-1], start=1)
            if levels[k] > levels[k - 1] and levels[k] > levels[k + 1]]


def profile_reasons(energies: Sequence[float], tolerance_eV: float = ENERGY_TOLERANCE_EV) -> list[str]:
    energies = np.asarray(energies, dtype=float)
    reasons = []
    interior_top = energies[1:-1].max() if len(energies) > 2 else -np.inf
    for name, energy in (("initial", energies[0]), ("final", energies[-1])):
        if energy >= interior_top - tolerance_eV and energy >= energies.max() - tolerance_eV:
            reasons.append(f"highest image is the {name} endpoint")
    if not interior_maxima(energies, tolerance_eV):
        reasons.append("no saddle found (the energy profile has no interior maximum)")
    return reasons


def endpoint_shift_reasons(info: dict, max_fraction: float) -> list[str]:
    """From the shifts `prepare_endpoints` recorded in the job's info."""
    hop_length = float(info.get("hop_length_A", 0.0))
    reasons = []
    for name in ("initial", "final"):
        shift = info.get(f"{name}_endpoint_hop_shift_A")
        if shift is not None and hop_length > 0 and shift > max_fraction * hop_length:
            reasons.append(f"relaxing the {name} endpoint moved the hopping atom {info['hop_atom']} by "
                           f"{shift:.2f} Å, {shift / hop_length:.0%} of the {hop_length:.2f} Å hop "
                           f"(endpoint_max_shift_fraction {max_fraction:g})")
    return reasons


def same_minimum_reasons(initial: Atoms, final: Atoms, tolerance_A: float = SAME_MINIMUM_A) -> list[str]:
    _, lengths = find_mic(final.positions - initial.positions, initial.cell, initial.pbc)
    largest = float(lengths.max()) if len(lengths) else 0.0
    if largest < tolerance_A:
        return [f"both endpoints are the same minimum (no atom differs by more than {largest:.3f} Å "
                f"< {tolerance_A:g} Å)"]
    return []


def suspect_reasons(energies: Sequence[float], initial: Atoms, final: Atoms, info: dict,
                    max_shift_fraction: float) -> list[str]:
    """Every reason to distrust one NEB job's result; empty when there is none."""
    return (profile_reasons(energies) + endpoint_shift_reasons(info, max_shift_fraction)
            + same_minimum_reasons(initial, final))
