"""A hop is well-posed in its cell when it is the unique shortest way to the final site and shorter
than half the cell's narrowest width; the suggested supercell is the smallest that makes it so."""

from __future__ import annotations

import numpy as np
import pytest
from ase.build import bulk
from ase.cell import Cell
from ase.geometry import find_mic

from driver.errors import InputError
from driver.tasks.hop_geometry import (
    MARGIN_A,
    check_hop_well_posed,
    image_distances,
    perpendicular_widths,
    repeats_for,
)

CELLS = {
    "cubic": np.eye(3) * 4.61,
    "fcc primitive": bulk("Cu", "fcc", a=3.6).cell[:],
    "hexagonal": bulk("Mg", "hcp", a=3.2, c=5.2).cell[:],
    "triclinic": Cell.fromcellpar([5.0, 6.0, 7.0, 70, 80, 100])[:],
}


@pytest.mark.parametrize("name", CELLS)
def test_widths_are_the_inverse_reciprocal_lengths(name):
    """h_i = V/|a_j x a_k| equals 1/|b_i| with b the reciprocal cell (a_i·b_j = δ_ij)."""
    cell = CELLS[name]
    expected = 1 / np.linalg.norm(Cell(cell).reciprocal(), axis=1)
    np.testing.assert_allclose(perpendicular_widths(cell, [True] * 3), expected, rtol=1e-12)


def test_fcc_primitive_width_and_non_periodic_axes():
    a = 3.6
    assert perpendicular_widths(CELLS["fcc primitive"], [True] * 3) == pytest.approx([a / np.sqrt(3)] * 3)
    cell = np.diag([4.0, 3.0, 4.0])
    widths = perpendicular_widths(cell, [True, False, True])
    assert widths[1] == np.inf and widths[[0, 2]] == pytest.approx([4.0, 4.0])
    # A 1.47 Å hop: longer than half the 3 Å axis when it is periodic (a warning: the competing
    # image is 1.53 Å away, not ambiguous), well-posed with that axis open (no image there).
    hop = np.array([0, 1.47, 0])
    warning = check_hop_well_posed(hop, cell, [True] * 3, "x")
    assert "longer than half the narrowest perpendicular width" in warning
    assert warning.endswith("use structure.supercell: [1, 2, 1] (or larger)")
    assert check_hop_well_posed(hop, cell, [True, False, True], "x") is None


def test_half_a_cell_is_ambiguous():
    distances = image_distances(np.array([2.305, 0, 0]), CELLS["cubic"], [True] * 3)
    assert distances[0] == pytest.approx(2.305) and distances[1] == pytest.approx(2.305)
    with pytest.raises(InputError, match=r"^here: the 2.305 Å hop is ill-posed.*ambiguous.*\[2, 2, 2\] \(or larger\)$"):
        check_hop_well_posed(np.array([2.305, 0, 0]), CELLS["cubic"], [True] * 3, "here")
    # Any image of the final site gives the same verdict: it is a property of the hop, not of a vector.
    with pytest.raises(InputError, match="ambiguous"):
        check_hop_well_posed(np.array([2.305 - 4.61, 4.61, 0]), CELLS["cubic"], [True] * 3, "here")


@pytest.mark.parametrize("name", CELLS)
@pytest.mark.parametrize("length", [1.0, 2.3, 4.0, 7.5])
def test_suggested_repeat_is_the_smallest_that_makes_the_hop_well_posed(name, length):
    """The hop is its minimum image in the given cell (as the endpoint builders place it); repeating
    the cell keeps that vector a hop between the same two sites."""
    cell = CELLS[name]
    direction = np.array([0.3, -0.5, 0.8]) / np.linalg.norm([0.3, -0.5, 0.8])
    vector, hop_length = find_mic(length * direction, cell, pbc=True)
    widths = perpendicular_widths(cell, [True] * 3)
    repeats = np.array(repeats_for(hop_length, widths))
    assert check_hop_well_posed(vector, cell * repeats[:, None], [True] * 3, "x") is None  # well-posed there
    assert np.all(repeats * widths / 2 > hop_length + MARGIN_A)
    for axis in range(3):  # one repeat fewer along any axis fails the width rule
        if repeats[axis] > 1:
            assert (repeats[axis] - 1) * widths[axis] / 2 <= hop_length + MARGIN_A
    if np.all(repeats == 1):
        assert check_hop_well_posed(vector, cell, [True] * 3, "x") is None
        return
    try:  # refused when ambiguous, warned about otherwise: either way the same advice
        message = check_hop_well_posed(vector, cell, [True] * 3, "x")
    except InputError as exc:
        message = str(exc)
    assert message.endswith(f"use structure.supercell: {repeats.tolist()} (or larger)")
