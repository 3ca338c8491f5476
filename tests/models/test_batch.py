"""ModelPotential.evaluate batched gives, per structure, what the family's own ASE calculator
gives one by one; the correction wrapper maps batches exactly as it maps one structure."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase.build import bulk

from driver.correction import SofteningCorrection
from driver.models import chgnet
from driver.potential import PROPERTIES, CalculatorPotential

FAMILIES = ["chgnet_model", "m3gnet64_model", "mace64_model"]
# (relative energy, absolute forces eV/Å, absolute stress eV/Å³): CHGNet is float32, the rest float64.
TOLERANCES = {"chgnet": (1e-5, 5e-5, 1e-6), "m3gnet": (1e-9, 1e-9, 1e-10), "mace-mp-0": (1e-9, 1e-9, 1e-10)}


def mixed_structures():
    """Five cells of different sizes and compositions, all within every test model's elements."""
    si8 = bulk("Si", "diamond", a=5.43, cubic=True)
    si8.rattle(0.08, seed=3)
    si16 = bulk("Si", "diamond", a=5.43, cubic=True).repeat((2, 1, 1))
    si16.rattle(0.05, seed=4)
    si2 = bulk("Si", "diamond", a=5.40)
    si2.rattle(0.03, seed=5)
    sip = bulk("Si", "diamond", a=5.50, cubic=True)
    sip.symbols[3] = "P"
    sip.cell[0, 1] += 0.2  # sheared, so every stress component is exercised
    sip.rattle(0.05, seed=6)
    fe16 = bulk("Fe", "bcc", a=2.87, cubic=True).repeat((2, 2, 2))
    fe16.rattle(0.05, seed=7)
    return [si8, si16, si2, sip, fe16]


def reference(calculator, structures):
    out = []
    for atoms in structures:
        atoms = atoms.copy()
        atoms.calc = calculator
        out.append((atoms.get_potential_energy(), atoms.get_forces(), atoms.get_stress()))
    return out


@pytest.fixture(scope="module")
def structures():
    return mixed_structures()


@pytest.fixture(scope="module")
def references(structures):
    cache = {}

    def get(model):
        if model.family not in cache:
            cache[model.family] = reference(model.calculator, structures)
        return cache[model.family]

    return get


def assert_matches(model, results, refs, stress=True):
    e_rel, f_abs, s_abs = TOLERANCES[model.family]
    assert len(results) == len(refs)
    for result, (energy, forces, sigma) in zip(results, refs, strict=True):
        assert isinstance(result.energy, float)
        assert result.energy == pytest.approx(energy, rel=e_rel)
        assert result.forces.dtype == np.float64 and result.forces.shape == forces.shape
        np.testing.assert_allclose(result.forces, forces, rtol=0, atol=f_abs)
        if stress:
            assert result.stress.shape == (6,)
            np.testing.assert_allclose(result.stress, sigma, rtol=0, atol=s_abs)
        else:
            assert result.stress is None


@pytest.mark.parametrize("fixture", FAMILIES)
@pytest.mark.parametrize("batch_size", [None, 2])
def test_batch_equals_calculator_one_by_one(request, structures, references, fixture, batch_size):
    model = request.getfixturevalue(fixture)
    positions = [a.positions.copy() for a in structures]
    assert model.can_batch  # the library's own batching runs, not the loop
    results = model.evaluate(structures, PROPERTIES, batched=True, batch_size=batch_size)
    assert_matches(model, results, references(model))
    # The inputs are left as they were, and matgl's dtype scope does not leak.
    assert all(np.array_equal(a.positions, p) and a.calc is None for a, p in zip(structures, positions, strict=True))
    assert torch.get_default_dtype() == torch.float32


@pytest.mark.parametrize("fixture", FAMILIES)
def test_batch_without_stress_and_single_structure(request, structures, references, fixture):
    model = request.getfixturevalue(fixture)
    assert_matches(model, model.evaluate(structures[2:3], batched=True), references(model)[2:3], stress=False)
    assert model.evaluate([], batched=True) == []


@pytest.mark.parametrize("fixture", FAMILIES)
def test_one_by_one_is_the_stock_calculator(request, structures, references, fixture):
    model = request.getfixturevalue(fixture)
    assert_matches(model, model.evaluate(structures, PROPERTIES, batched=False), references(model))


def test_batch_size_must_be_positive(chgnet_model, structures):
    with pytest.raises(ValueError, match="batch_size"):
        chgnet_model.evaluate(structures, batched=True, batch_size=0)


@pytest.mark.parametrize("batch_pays", [True, False])
def test_batching_auto_decides_on_a_probe_of_the_work_and_keeps_the_faster(batch_pays, caplog, monkeypatch):
    """A family whose batch call costs `cost(n)` for n structures: auto times k = n/20 structures
    one by one and the next k batched (their results kept, nothing computed twice), runs the rest
    the faster way, and keeps the choice for later calls of the same kind. The calls advance a
    fake clock by their cost, so the logged deciding cost is exact, not a sleep's jitter."""
    import logging
    import types

    from ase.calculators.emt import EMT

    from driver.models import LoadedWeights, ModelPotential, batching
    from driver.potential import Results
    from driver.registry import ModelFamily

    calls, clock = [], [0.0]
    monkeypatch.setattr(batching, "time", types.SimpleNamespace(perf_counter=lambda: clock[0]))

    def batch(calculator, structures, properties, batch_size):
        calls.append(len(structures))
        clock[0] += 0.03 if batch_pays else 0.01 * len(structures) ** 1.5  # batched 1.41x slower
        return [Results.of(float(len(atoms)), np.zeros((len(atoms), 3))) for atoms in structures]

    family = ModelFamily(name="timed", package="ase", dtypes=("float64",), description="test", load=None,
                         batch=batch, can_batch=lambda calculator: True)
    model = ModelPotential(family, LoadedWeights(EMT(), "test", None), "cpu", "float64")
    structures = [bulk("Cu", cubic=True)] * 40
    with caplog.at_level(logging.INFO, logger="driver.models"):
        first = model.evaluate(structures)
    # the first call warms up (untimed), then 2 one by one, 2 batched untimed (set-up), 2 batched, the rest
    assert calls == [1, 1, 1, 2, 2] + ([33] if batch_pays else [1] * 33)
    assert [r.energy for r in first] == [4.0] * 40
    assert f"using {'batched' if batch_pays else 'one by one'}" in caplog.text
    cost = float(caplog.text.split("deciding cost ")[1].split(" s,")[0])
    share = float(caplog.text.split(" s, ")[1].split("%")[0])
    # batched wins: probing one by one lost (0.03 - 0.015) s on each of 2 structures out of 40 x 0.015 s;
    # one by one wins: 2 x 2 batched structures lost (0.0141 - 0.01) s each, out of 40 x 0.01 s
    assert (cost, share) == ((0.03, 5.0) if batch_pays else (0.02, 4.1))
    assert share <= 10  # deciding costs at most a tenth of the work decided on
    calls.clear()
    model.evaluate(structures)
    assert calls == ([40] if batch_pays else [1] * 40)  # the choice is kept for this kind
    calls.clear()
    model.evaluate([bulk("Cu", cubic=True).repeat((2, 1, 1))] * 40)  # another size class: timed again
    assert calls == [1, 1, 2, 2] + ([34] if batch_pays else [1] * 34)


def test_a_plain_calculator_potential_loops(mace64_model, structures):
    plain = CalculatorPotential(mace64_model.calculator)
    assert_matches(mace64_model, plain.evaluate(structures, PROPERTIES, batched=True), reference(mace64_model.calculator, structures))


@pytest.mark.parametrize("fixture", FAMILIES)
def test_corrected_batch_equals_corrected_one_by_one(request, structures, fixture):
    """The wrapper's map is the same for a batch as for the ASE adapter of one structure."""
    model = request.getfixturevalue(fixture)
    s, e0 = 1.25, -40.0
    corrected = SofteningCorrection(model, s, e0)
    batch = corrected.evaluate(structures, PROPERTIES, batched=True, batch_size=2)
    assert_matches(model, batch, reference(corrected.as_calculator(), structures))


@pytest.mark.parametrize("fixture", FAMILIES)
@pytest.mark.parametrize("properties", [("energy",), ("energy", "forces"), ("energy", "forces", "stress")])
def test_one_by_one_computes_only_what_is_asked_and_equals_the_stock_calculator(
        request, structures, references, fixture, properties, monkeypatch):
    """The single-structure path (MD, relaxations) goes through the library's model call for the
    properties asked for, never the stock calculator (which computes everything), with its numbers."""
    model = request.getfixturevalue(fixture)
    refs = references(model)

    def stock_not_called(*args, **kwargs):
        raise AssertionError("the stock calculator ran")

    monkeypatch.setattr(model.calculator, "calculate", stock_not_called)
    results = model.evaluate(structures, properties, batched=False)
    e_rel, f_abs, s_abs = TOLERANCES[model.family]
    for result, (energy, forces, sigma) in zip(results, refs, strict=True):
        assert result.energy == pytest.approx(energy, rel=e_rel)
        np.testing.assert_allclose(result.forces, forces, rtol=0, atol=f_abs)  # forces come with the energy
        if "stress" in properties:
            np.testing.assert_allclose(result.stress, sigma, rtol=0, atol=s_abs)
        else:
            assert result.stress is None


def test_m3gnet_computes_no_strain_gradient_without_stress(m3gnet64_model, structures, monkeypatch):
    seen = []
    potential = m3gnet64_model.calculator.potential
    original = type(potential).forward

    def spy(self, *args, **kwargs):
        seen.append(self.calc_stresses)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(type(potential), "forward", spy)
    m3gnet64_model.evaluate(structures[:1], ("energy", "forces"), batched=False)
    m3gnet64_model.evaluate(structures[:1], ("energy", "forces", "stress"), batched=False)
    assert seen == [False, True] and potential.calc_stresses is True  # matgl's switch restored


def test_chgnet_asks_its_model_for_energy_and_forces_only(chgnet_model, structures, monkeypatch):
    """The stock CHGNetCalculator asks for "efsm" at every step; the driver asks chgnet's model for
    the energy (and magnetic moments only when wanted) and takes the derivatives asked for."""
    asked = []
    model = chgnet_model.calculator.model
    original = model._compute

    def spy(graph, **flags):
        asked.append((flags["compute_force"], flags["compute_stress"], flags["compute_magmom"]))
        return original(graph, **flags)

    monkeypatch.setattr(model, "_compute", spy)
    forces_only = chgnet_model.evaluate(structures[:1], ("energy", "forces"), batched=False)[0]
    with_stress = chgnet_model.evaluate(structures[:1], ("energy", "forces", "stress"), batched=False)[0]
    assert asked == [(False, False, False)] * 2  # derivatives taken by the driver, once
    assert forces_only.stress is None and forces_only.magmoms is None and with_stress.stress is not None
    np.testing.assert_allclose(forces_only.forces, with_stress.forces, rtol=0, atol=1e-6)  # CUDA: atomic adds


def test_chgnet_keeps_no_training_graph_and_equals_predict_graph(chgnet_model, structures):
    """chgnet's own `predict_graph` takes forces and stress with create_graph=True (for training):
    the driver's call equals it (float32 noise) and saves less than half the tensors for backward."""
    from driver.models.chgnet_graph import crystal_graph

    model = chgnet_model.calculator.model
    graphs = [crystal_graph(atoms, model.graph_converter) for atoms in structures]

    def saved_bytes(call):
        seen = {}

        def pack(tensor):
            seen[tensor.data_ptr()] = tensor.numel() * tensor.element_size()
            return tensor

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
            result = call()
        return sum(seen.values()), result

    stock_bytes, stock = saved_bytes(lambda: model.predict_graph(graphs, task="efsm", batch_size=len(graphs)))
    driver_bytes, ours = saved_bytes(lambda: chgnet.predict(model, graphs, "efsm"))
    assert driver_bytes < 0.5 * stock_bytes
    e_rel, f_abs, _ = TOLERANCES["chgnet"]
    for theirs, mine in zip(stock, ours, strict=True):
        np.testing.assert_allclose(mine["e"], theirs["e"], rtol=1e-6)  # equal on the CPU; CUDA adds atomically
        np.testing.assert_allclose(mine["m"], theirs["m"], rtol=0, atol=1e-6)
        np.testing.assert_allclose(mine["f"], theirs["f"], rtol=0, atol=f_abs)
        np.testing.assert_allclose(mine["s"], theirs["s"], rtol=0, atol=1e-4)  # GPa: 6e-7 eV/Å³


def test_m3gnet_gets_the_tensor_line_graph_equal_to_matgls_own(m3gnet64_model, structures, monkeypatch):
    """The driver hands M3GNet the line graph from matgl's tensor code; it holds the same triplets
    as the one M3GNet builds itself (Python loop), for single cells and for a batch."""
    from matgl.graph._compute import compute_pair_vector_and_distance, create_line_graph
    from matgl.models import M3GNet

    seen = []
    original = M3GNet.forward

    def spy(self, g, state_attr=None, l_g=None, **kwargs):
        assert l_g is not None
        bond_vec, bond_dist = compute_pair_vector_and_distance(g.pos, g.edge_index, g.pbc_offshift)
        own = create_line_graph(g.edge_index, bond_dist, bond_vec, g.pbc_offshift, g.pos.size(0),
                                self.threebody_cutoff)
        seen.append(own["line_edge_index"].numel())
        assert torch.equal(l_g["line_edge_index"].long(), own["line_edge_index"].long())
        assert torch.equal(l_g["n_triple_ij"].long(), own["n_triple_ij"].long())
        assert torch.equal(l_g["kept_edge_ids"].long(), own["kept_edge_ids"].long())
        return original(self, g, state_attr=state_attr, l_g=l_g, **kwargs)

    monkeypatch.setattr(M3GNet, "forward", spy)
    m3gnet64_model.evaluate(structures, ("energy", "forces"), batched=False)
    m3gnet64_model.evaluate(structures, ("energy", "forces"), batched=True)
    assert len(seen) == len(structures) + 1 and min(seen) > 0


def test_m3gnet_lets_matgl_build_its_line_graph_when_the_given_one_is_refused(
        m3gnet64_model, structures, references, monkeypatch):
    """Should matgl's re-check refuse the driver's line graph, the step still gets matgl's numbers."""
    import driver.models.m3gnet as m3gnet

    built = m3gnet._three_body_line_graph

    def stale(potential, g, lattice):
        line_graph = built(potential, g, lattice)
        line_graph["kept_edge_ids"] = line_graph["kept_edge_ids"][1:]  # as if a bond had crossed the cutoff
        return line_graph

    refs = references(m3gnet64_model)
    potential = m3gnet64_model.calculator.potential
    calls = []
    original = type(potential).forward

    def counted(self, *args, **kwargs):
        calls.append(kwargs.get("l_g") is not None)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(m3gnet, "_three_body_line_graph", stale)
    monkeypatch.setattr(type(potential), "forward", counted)
    results = m3gnet64_model.evaluate(structures, PROPERTIES, batched=False)
    assert_matches(m3gnet64_model, results, refs)
    assert calls == [True, False] * len(structures)  # refused, then matgl's own


def test_m3gnet_runs_without_the_training_graph_and_equals_the_potential_as_matgl_loads_it(
        m3gnet64_model, structures, monkeypatch):
    """matgl.load_model leaves the potential in training mode, where every call also records the
    graph of the forces' own gradient (create_graph=True), for a force loss no simulation takes.
    The driver's potential runs in eval mode: its forces come out detached, with the numbers of
    the potential as matgl loads it (the stock calculator users build by hand)."""
    import matgl

    import driver.models.m3gnet as m3gnet

    with m3gnet.matgl_float_dtype("float64"):
        as_loaded = matgl.load_model(m3gnet64_model.source).to(dtype=torch.float64)
    stock = m3gnet._dtype_scoped_calculator_class()(as_loaded, dtype="float64", stress_unit="eV/A3")
    assert as_loaded.training and not m3gnet64_model.calculator.potential.training
    graphs_kept = []
    original = type(as_loaded).forward

    def spy(self, *args, **kwargs):
        energy, forces, *rest = original(self, *args, **kwargs)
        graphs_kept.append((self is as_loaded, forces.requires_grad))
        return (energy, forces, *rest)

    monkeypatch.setattr(type(as_loaded), "forward", spy)
    refs = reference(stock, structures)
    results = m3gnet64_model.evaluate(structures, PROPERTIES, batched=False)
    assert_matches(m3gnet64_model, results, refs)
    assert graphs_kept == [(True, True)] * len(structures) + [(False, False)] * len(structures)
