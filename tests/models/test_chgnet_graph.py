"""The numpy CrystalGraph (driver.models.chgnet_graph) is chgnet's converter's graph, edge for
edge, and CHGNet's energies, forces and stresses through it are the stock calculator's."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk
from pymatgen.io.ase import AseAtomsAdaptor

from driver.models import chgnet
from driver.models.chgnet_graph import crystal_graph, pair_edges
from driver.potential import PROPERTIES
from tests.models.test_batch import TOLERANCES


def graph_structures() -> dict[str, Atoms]:
    si8 = bulk("Si", "diamond", a=5.43, cubic=True)
    si8.rattle(0.08, seed=1)
    si64 = bulk("Si", "diamond", a=5.43, cubic=True).repeat(2)
    si64.rattle(0.05, seed=2)
    sheared = bulk("Si", "diamond", a=5.43, cubic=True)
    sheared.set_cell(sheared.cell.array + [[0, 0.6, 0.3], [0, 0, 0.4], [0.2, 0, 0]], scale_atoms=True)
    sheared.rattle(0.03, seed=3)
    mixed = bulk("Si", "diamond", a=5.50, cubic=True)
    mixed.symbols[[1, 4]] = "P"
    mixed.rattle(0.05, seed=4)
    fe = bulk("Fe", "bcc", a=2.87, cubic=True).repeat(2)
    fe.rattle(0.04, seed=5)
    # a 2.35 Å period: every atom bonds to its own images, several times over
    chain = Atoms("Si2", positions=[[0, 0, 0], [1.2, 1.9, 0.1]], cell=[2.35, 4.0, 4.2], pbc=True)
    vacuum = bulk("Si", "diamond", a=5.43, cubic=True)
    vacuum.center(vacuum=8.0)  # a cluster in a 21 Å box: no bond crosses the cell
    vacuum.rattle(0.02, seed=6)
    slab = bulk("Si", "diamond", a=5.43, cubic=True).repeat((1, 1, 2))
    slab.center(vacuum=5.0, axis=2)
    slab.pbc = (True, True, False)
    slab.rattle(0.02, seed=7)
    return {"si8": si8, "si64": si64, "sheared": sheared, "si2": bulk("Si", "diamond", a=5.40),
            "si_p": mixed, "fe16": fe, "chain": chain, "vacuum": vacuum, "slab": slab}


STRUCTURES = graph_structures()


def edge_sets(graph):
    """The graph with every index replaced by what it names: directed edges by (i, j, image),
    undirected edges by their pair of directed edges, angles by (atom, edge, edge)."""
    centers, neighbors = graph.atom_graph.numpy().T
    images = graph.neighbor_image.numpy().astype(int)
    directed = [(int(i), int(j), tuple(n)) for i, j, n in zip(centers, neighbors, images, strict=True)]
    assert len(set(directed)) == len(directed)
    d2u = graph.directed2undirected.numpy()
    u2d = graph.undirected2directed.numpy()
    pairs = {}
    for edge, u in zip(directed, d2u, strict=True):
        pairs.setdefault(int(u), set()).add(edge)
    assert all(len(pair) == 2 for pair in pairs.values())
    assert all(directed[d] in pairs[u] for u, d in enumerate(u2d))  # one of the bond's own two
    angles = set()
    for atom, u1, d1, u2, d2 in graph.bond_graph.numpy().reshape(-1, 5):
        assert d2u[d1] == u1 and d2u[d2] == u2 and centers[d1] == centers[d2] == atom
        angles.add((int(atom), directed[d1], directed[d2]))
    assert len(angles) == len(graph.bond_graph)
    return set(directed), {frozenset(p) for p in pairs.values()}, angles


@pytest.mark.parametrize("name", list(STRUCTURES))
def test_graph_is_chgnets_own(chgnet_model, name):
    atoms = STRUCTURES[name]
    converter = chgnet_model.calculator.model.graph_converter
    stock = converter(AseAtomsAdaptor.get_structure(atoms))
    ours = crystal_graph(atoms, converter)
    directed, bonds, angles = edge_sets(ours)
    assert (directed, bonds, angles) == edge_sets(stock)
    assert len(angles) > 0
    for field in ("atomic_number", "atom_frac_coord", "lattice", "atom_graph", "neighbor_image",
                  "directed2undirected", "undirected2directed", "bond_graph"):
        a, b = getattr(ours, field), getattr(stock, field)
        assert a.dtype == b.dtype and a.shape == b.shape and a.requires_grad == b.requires_grad, field
    torch.testing.assert_close(ours.atom_frac_coord, stock.atom_frac_coord, rtol=0, atol=1e-7)
    assert torch.equal(ours.lattice, stock.lattice) and torch.equal(ours.atomic_number, stock.atomic_number)
    assert (ours.composition, ours.atom_graph_cutoff, ours.bond_graph_cutoff) == (
        stock.composition, stock.atom_graph_cutoff, stock.bond_graph_cutoff)


def test_short_period_bonds_to_own_images(chgnet_model):
    """The chain's atom 0 is its own neighbour (i -> i across cells), paired with the reverse image."""
    graph = crystal_graph(STRUCTURES["chain"], chgnet_model.calculator.model.graph_converter)
    directed, bonds, _ = edge_sets(graph)
    own = {e for e in directed if e[0] == e[1] == 0}
    assert own and all((0, 0, tuple(-np.array(e[2]))) in own for e in own)
    assert frozenset({(0, 0, (1, 0, 0)), (0, 0, (-1, 0, 0))}) in bonds


def test_energies_forces_stress_equal_the_stock_calculator(chgnet_model):
    structures = list(STRUCTURES.values())
    results = chgnet.batch(chgnet_model.calculator, structures, PROPERTIES, batch_size=4)
    e_rel, f_abs, s_abs = TOLERANCES["chgnet"]
    for atoms, result in zip(structures, results, strict=True):
        atoms = atoms.copy()
        atoms.calc = chgnet_model.calculator
        assert result.energy == pytest.approx(atoms.get_potential_energy(), rel=e_rel)
        np.testing.assert_allclose(result.forces, atoms.get_forces(), rtol=0, atol=f_abs)
        np.testing.assert_allclose(result.stress, atoms.get_stress(), rtol=0, atol=s_abs)


class SpyConverter:
    """chgnet's converter, counting the structures handed to it."""

    def __init__(self, converter):
        self.converter, self.calls = converter, 0
        self.atom_graph_cutoff, self.bond_graph_cutoff = converter.atom_graph_cutoff, converter.bond_graph_cutoff

    def __call__(self, structure):
        self.calls += 1
        return self.converter(structure)


def test_isolated_atoms_go_to_chgnets_converter(chgnet_model, capsys):
    """An atom with no neighbour within 6 Å: chgnet's own converter decides (the calculator sets
    it to warn), and the result is still the stock calculator's."""
    converter = chgnet_model.calculator.model.graph_converter
    spy = SpyConverter(converter)
    crystal_graph(STRUCTURES["si64"], spy)
    assert spy.calls == 0  # the numpy graph for an ordinary cell
    lonely = bulk("Si", "diamond", a=5.43, cubic=True)
    lonely.center(vacuum=10.0)
    lonely += Atoms("Si", positions=[[0.5, 0.5, 0.5]])  # ≥ 7 Å from the cluster and its images
    graph = crystal_graph(lonely, spy)
    assert spy.calls == 1 and "isolated atom" in capsys.readouterr().err
    assert edge_sets(graph) == edge_sets(converter(AseAtomsAdaptor.get_structure(lonely)))
    result = chgnet.batch(chgnet_model.calculator, [lonely], ("energy", "forces"), 1)[0]
    atoms = lonely.copy()
    atoms.calc = chgnet_model.calculator
    assert result.energy == pytest.approx(atoms.get_potential_energy(), rel=TOLERANCES["chgnet"][0])


def test_unpaired_edges_are_refused():
    """A neighbour list with an edge whose reverse is missing gives no pairing (then chgnet's
    converter runs and reports it); a complete one pairs each edge with its reverse."""
    center, neighbor = np.array([0, 1, 0]), np.array([1, 0, 1])
    image = np.array([[0, 0, 0], [0, 0, 0], [1, 0, 0]])
    assert pair_edges(2, center, neighbor, image) is None
    center, neighbor = np.append(center, 1), np.append(neighbor, 0)
    image = np.vstack([image, [-1, 0, 0]])
    assert pair_edges(2, center, neighbor, image).tolist() == [1, 0, 3, 2]


def test_batch_asks_for_the_properties_needed_in_chunks_of_batch_size(chgnet_model, monkeypatch):
    tasks, original = [], chgnet.predict

    def spy(model, graphs, task):
        tasks.append((task, len(graphs)))
        return original(model, graphs, task)

    monkeypatch.setattr(chgnet, "predict", spy)
    structures = [STRUCTURES["si8"], STRUCTURES["si2"], STRUCTURES["si8"]]
    chgnet.batch(chgnet_model.calculator, structures, ("energy", "forces"), 2)
    chgnet.batch(chgnet_model.calculator, structures[:1], PROPERTIES, 1)
    assert tasks == [("ef", 2), ("ef", 1), ("efs", 1)]
