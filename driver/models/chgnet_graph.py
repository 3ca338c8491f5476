"""CHGNet's CrystalGraph straight from ASE atoms, in vectorised numpy.

`CrystalGraphConverter.forward` builds one Python Node/Edge object per directed edge (144k at
216 Si atoms) and walks them again for the line graph; that is most of a CHGNet call's graph
time. This builds the same fields (same neighbour list, edge indices, index maps, dtypes) with
array operations. Where it does not apply (isolated atoms, a neighbour list whose edges do not
pair up, a singular cell) chgnet's own converter runs instead, so its warnings/errors stay its own.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import torch
from ase import Atoms

NUMERICAL_TOL = 1e-8  # what CrystalGraphConverter passes to Structure.get_neighbor_list


def crystal_graph(atoms: Atoms, converter):
    """The CrystalGraph that `converter(AseAtomsAdaptor.get_structure(atoms))` returns."""
    graph = _build(atoms, converter.atom_graph_cutoff, converter.bond_graph_cutoff)
    if graph is None:
        from pymatgen.io.ase import AseAtomsAdaptor

        return converter(AseAtomsAdaptor.get_structure(atoms))
    return graph


def neighbor_list(atoms: Atoms, cutoff: float) -> tuple[np.ndarray, ...] | None:
    """(center, neighbor, image, distance, frac_coords) as `Structure.get_neighbor_list(cutoff,
    structure.sites, numerical_tol=1e-8)` gives them for the adaptor's Structure; None for a
    singular cell, which pymatgen cannot invert either."""
    from pymatgen.optimization.neighbors import find_points_in_spheres

    cell = np.array(atoms.cell.array, dtype=np.float64)
    if abs(np.linalg.det(cell)) < 1e-12:
        return None
    # The adaptor builds sites from Cartesian positions (frac = cart @ inv) and Structure's
    # cart_coords are recomputed from those fractions (frac @ matrix), as here.
    frac = np.dot(atoms.positions, np.linalg.inv(cell))
    cart = np.ascontiguousarray(np.dot(frac, cell))
    pbc = np.ascontiguousarray(atoms.pbc, dtype=np.int64)
    center, neighbor, image, distance = find_points_in_spheres(
        cart, cart, r=cutoff, pbc=pbc, lattice=np.ascontiguousarray(cell), tol=NUMERICAL_TOL)
    keep = ~((center == neighbor) & (distance <= NUMERICAL_TOL))
    return center[keep], neighbor[keep], image[keep], distance[keep], frac


def pair_edges(n_atoms: int, center: np.ndarray, neighbor: np.ndarray, image: np.ndarray) -> np.ndarray | None:
    """For each directed edge i -> j (image n), the index of its reverse j -> i (image -n), the
    pairing chgnet's `create_graph` makes; None if an edge has no reverse or appears twice."""
    img = np.asarray(image, dtype=np.int64)
    low = int(min(img.min(), -img.max()))
    span = int(max(img.max(), -img.min())) - low + 1
    if float(n_atoms) ** 2 * float(span) ** 3 >= 2.0 ** 62:  # the integer key would overflow
        return None

    def key(a, b, m):
        m = m - low
        return (((a * n_atoms + b) * span + m[:, 0]) * span + m[:, 1]) * span + m[:, 2]

    keys = key(center.astype(np.int64), neighbor.astype(np.int64), img)
    order = np.argsort(keys, kind="stable")
    sorted_keys = keys[order]
    if np.any(sorted_keys[1:] == sorted_keys[:-1]):
        return None
    wanted = key(neighbor.astype(np.int64), center.astype(np.int64), -img)
    pos = np.minimum(np.searchsorted(sorted_keys, wanted), len(keys) - 1)
    if not np.array_equal(sorted_keys[pos], wanted):
        return None
    reverse = order[pos]
    if np.any(reverse == np.arange(len(keys))):
        return None
    return reverse


def line_graph(center: np.ndarray, distance: np.ndarray, d2u: np.ndarray, u_distance: np.ndarray,
               cutoff: float) -> np.ndarray:
    """Rows (atom, undirected a, directed a, undirected b, directed b) for every pair of
    distinct directed edges a, b leaving the same atom, as `Graph.line_graph_adjacency_list`
    draws them: a's bond no longer than the cutoff, b's own length strictly shorter."""
    n_atoms = int(center.max()) + 1 if len(center) else 0
    short = np.flatnonzero(distance < cutoff)
    short = short[np.argsort(center[short], kind="stable")]
    counts = np.bincount(center[short], minlength=n_atoms)
    starts = np.cumsum(counts) - counts
    first = np.flatnonzero(u_distance[d2u] <= cutoff)
    first = first[np.lexsort((first, d2u[first]))]  # chgnet's order: by bond, then its two directions
    reps = counts[center[first]]
    a = np.repeat(first, reps)
    within = np.arange(len(a)) - np.repeat(np.cumsum(reps) - reps, reps)
    b = short[np.repeat(starts[center[first]], reps) + within]
    a, b = a[a != b], b[a != b]
    return np.stack([center[a], d2u[a], a, d2u[b], b], axis=1)


def _build(atoms: Atoms, atom_cutoff: float, bond_cutoff: float):
    """The CrystalGraph, or None where chgnet's converter should decide."""
    from chgnet.graph.crystalgraph import CrystalGraph
    from pymatgen.core import Composition

    n_atoms = len(atoms)
    found = neighbor_list(atoms, atom_cutoff)
    if found is None:
        return None
    center, neighbor, image, distance, frac = found
    if len(center) == 0 or len(np.unique(center)) < n_atoms:
        return None  # isolated atoms: chgnet's on_isolated_atoms warns or raises
    reverse = pair_edges(n_atoms, center, neighbor, image)
    if reverse is None:
        return None  # chgnet's line graph raises on unpaired edges; let it say so
    index = np.arange(len(center))
    firsts = np.flatnonzero(index < reverse)  # an undirected edge is numbered where it first appears
    d2u = np.empty(len(center), dtype=np.int64)
    d2u[firsts] = np.arange(len(firsts))
    d2u[reverse[firsts]] = np.arange(len(firsts))
    bonds = line_graph(center, distance, d2u, distance[firsts], bond_cutoff)
    return CrystalGraph(
        atomic_number=torch.tensor(atoms.numbers, dtype=torch.int32),
        atom_frac_coord=torch.tensor(frac, dtype=torch.float32, requires_grad=True),
        atom_graph=torch.tensor(np.stack([center, neighbor], axis=1), dtype=torch.int32),
        neighbor_image=torch.tensor(image, dtype=torch.float32),
        directed2undirected=torch.tensor(d2u, dtype=torch.int32),
        undirected2directed=torch.tensor(firsts, dtype=torch.int32),
        bond_graph=torch.tensor(bonds if len(bonds) else [], dtype=torch.int32),
        lattice=torch.tensor(np.array(atoms.cell.array, dtype=np.float64), dtype=torch.float32, requires_grad=True),
        graph_id=None,
        mp_id=None,
        composition=Composition(Counter(atoms.get_chemical_symbols())).formula,
        atom_graph_cutoff=atom_cutoff,
        bond_graph_cutoff=bond_cutoff,
    )
