"""Is a hop well-posed in its periodic cell? An NEB band is a path between two endpoints *in one
cell*, so the hop it follows must be the one shortest way from the initial site to the final one,
and short enough that the migrating ion does not meet its own periodic image on the way.

With h_min the cell's shortest perpendicular width (the distance between opposite faces), every
other lattice image of the final site is at least h_min - L away from the start, so a hop of
length L < h_min/2 is the unique minimum image. A hop of exactly half a cell (the nearest Li-Li
hop along <100> in the 12-atom conventional Li2O cell) can go either way round, and round-off in
each variant's endpoint relaxation decides which: two correct bands that are not the same path.
`check_hop_well_posed` refuses such an ambiguous hop, warns about an unambiguous one longer than
h_min/2, and names the smallest `structure.supercell` that makes either well-posed.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np

from driver.errors import InputError

MARGIN_A = 0.05  # a hop within this of half a width is ill-posed: far above the round-off of a relaxation


def perpendicular_widths(cell: np.ndarray, pbc: Sequence[bool]) -> np.ndarray:
    """Distance between opposite faces of the cell along each axis, V / |a_j x a_k| (Å); infinite
    along a non-periodic axis, where no image exists."""
    cell = np.asarray(cell, dtype=float)
    volume = abs(np.linalg.det(cell))
    with np.errstate(divide="ignore", invalid="ignore"):  # a zero cell of a molecule: no periodic axis
        widths = np.array([volume / np.linalg.norm(np.cross(cell[(i + 1) % 3], cell[(i + 2) % 3])) for i in range(3)])
    return np.where(np.asarray(pbc, dtype=bool), widths, np.inf)


def image_distances(vector: np.ndarray, cell: np.ndarray, pbc: Sequence[bool]) -> np.ndarray:
    """Lengths of `vector` + every lattice translation n·cell with |n_i| <= 2 along periodic axes,
    sorted: the first is the minimum image, the second the nearest competitor."""
    ranges = [range(-2, 3) if periodic else range(1) for periodic in pbc]
    shifts = np.array(list(itertools.product(*ranges)), dtype=float) @ np.asarray(cell, dtype=float)
    return np.sort(np.linalg.norm(np.asarray(vector, dtype=float) + shifts, axis=1))


def repeats_for(hop_length_A: float, widths: np.ndarray, margin_A: float = MARGIN_A) -> tuple[int, int, int]:
    """The smallest diagonal repeat of the cell in which the hop is well-posed: a repeat of n_i
    multiplies width i by n_i, so each axis needs n_i·h_i/2 > L + margin on its own."""
    return tuple(1 if np.isinf(width) else int(np.floor(2 * (hop_length_A + margin_A) / width)) + 1
                 for width in widths)


def check_hop_well_posed(vector: np.ndarray, cell: np.ndarray, pbc: Sequence[bool], where: str,
                         supercell: Sequence[int] | None = None, endpoints_note: str = "",
                         margin_A: float = MARGIN_A) -> str | None:
    """Raise InputError when the hop `vector` (final minus initial position of the migrating ion,
    any image) is ambiguous: another image of the final site within `margin_A` of the hop's own
    length. Return a warning when the hop is unambiguous but longer than half the cell's narrowest
    width (the ion then comes closer to periodic images of its sites than to the sites
    themselves on the way); None when it is well-posed. `where` starts the message (file and
    field); `supercell` is the recipe's structure.supercell that made `cell`, so the suggestion is
    the whole structure.supercell to write; `endpoints_note` says what else must follow the
    repeat (fractions of the repeated cell, a final endpoint file)."""
    widths = perpendicular_widths(cell, pbc)
    distances = image_distances(vector, cell, pbc)
    length = float(distances[0])
    if length + margin_A < widths.min() / 2:
        return None
    given = np.ones(3, dtype=int) if supercell is None else np.asarray(supercell, dtype=int)
    needed = given * np.asarray(repeats_for(length, widths, margin_A))
    shown = " x ".join("inf" if np.isinf(w) else f"{w:.3f}" for w in widths)
    advice = f"use structure.supercell: {needed.tolist()} (or larger){endpoints_note}"
    head = f"{where}: the {length:.3f} Å hop"
    if len(distances) > 1 and distances[1] - length < margin_A:
        raise InputError(f"{head} is ill-posed in a cell whose perpendicular widths are {shown} Å: its minimum image "
                         f"is ambiguous (another image of the final site is {distances[1]:.3f} Å away, so the band "
                         f"may go either way round); {advice}")
    return (f"{head} is longer than half the narrowest perpendicular width of the cell ({shown} Å), so the "
            f"migrating ion passes closer to periodic images of its sites than a band in a larger cell would; "
            f"{advice}")
