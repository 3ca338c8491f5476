"""Evaluate many structures per model call (NEB images, phonon displacements, MD replicas).

Each family is batched the way its own library batches graphs, and gives the same numbers as
calling `model.calculator` on each structure in turn (to float round-off):

- CHGNet: `CHGNet.predict_structure(structures, task="ef[s]", batch_size=...)`; energies come
  back per atom and stresses in GPa, converted as `CHGNetCalculator` converts them.
- MACE: one `AtomicData` per structure (as `MACECalculator` builds it), collated by mace's
  `torch_geometric` DataLoader, one model call per batch, results split with `batch.ptr`.
- M3GNet (matgl 4.x): matgl's `Atoms2Graph` per structure, collated with
  `torch_geometric.data.Batch.from_data_list` and stacked lattices (as matgl's `collate_fn_pes`
  does), one `Potential` call per batch (its forward takes a `Batch` and a (B, 3, 3) lattice);
  run inside `matgl_float_dtype(model.dtype)` like the calculator.

Anything else (another calculator, a wrapped one such as `SofteningCorrection`, or a library
configuration this module does not reproduce: compiled/padded MACE, non-energy MACE model
types, charge/state-dependent or Hessian-computing matgl potentials) falls back to
`evaluate_one_by_one`, a plain loop over the calculator.

Each result is a dict: "energy" (float, eV), "forces" ((n, 3) float64, eV/Å) and, with
`stress=True`, "stress" (Voigt 6-vector xx yy zz yz xz xy, eV/Å³, ASE's sign convention, as
`calculator.get_stress()` / `atoms.get_stress()` give it).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from ase import Atoms
from ase.calculators.calculator import Calculator
from ase.stress import full_3x3_to_voigt_6_stress

from driver.models import LoadedModel


def _voigt(stress) -> np.ndarray:
    stress = np.asarray(stress, dtype=np.float64)
    if stress.shape == (3, 3):
        stress = full_3x3_to_voigt_6_stress(stress)
    return stress.reshape(6)


def _result(energy, forces, stress=None) -> dict:
    out = {"energy": float(energy), "forces": np.array(forces, dtype=np.float64).reshape(-1, 3)}
    if stress is not None:
        out["stress"] = _voigt(stress)
    return out


def evaluate_one_by_one(
    calculator: Calculator, structures: Sequence[Atoms], stress: bool = False
) -> list[dict]:
    """The fallback: each structure through the ASE calculator, in turn (the structures are not
    modified; the calculator keeps a copy of the last one, as ASE calculators do)."""
    results = []
    for atoms in structures:
        energy = calculator.get_potential_energy(atoms)
        forces = calculator.get_forces(atoms)
        results.append(_result(energy, forces, calculator.get_stress(atoms) if stress else None))
    return results


def _chunks(items: Sequence, size: int):
    for start in range(0, len(items), size):
        yield items[start:start + size]


# --- CHGNet ---------------------------------------------------------------------------------

def _chgnet_batch(calculator, structures: Sequence[Atoms], stress: bool, batch_size: int) -> list[dict]:
    from pymatgen.io.ase import AseAtomsAdaptor

    model = calculator.model
    pmg = [AseAtomsAdaptor.get_structure(atoms) for atoms in structures]
    predictions = model.predict_structure(pmg, task="efs" if stress else "ef", batch_size=batch_size)
    if isinstance(predictions, dict):  # chgnet returns a bare dict for a one-structure list
        predictions = [predictions]
    results = []
    for structure, pred in zip(pmg, predictions, strict=True):
        # As CHGNetCalculator.calculate: e is eV/atom for an intensive model, s is GPa.
        factor = len(structure) if model.is_intensive else 1
        energy = np.asarray(pred["e"]).reshape(()) * factor
        sigma = np.asarray(pred["s"]) * calculator.stress_weight if stress else None
        results.append(_result(energy, pred["f"], sigma))
    return results


def _is_chgnet(calculator) -> bool:
    try:
        from chgnet.model.dynamics import CHGNetCalculator
    except ImportError:
        return False
    return isinstance(calculator, CHGNetCalculator)


# --- MACE -----------------------------------------------------------------------------------

def _is_batchable_mace(calculator) -> bool:
    try:
        from mace.calculators.mace import MACECalculator
    except ImportError:
        return False
    return (
        isinstance(calculator, MACECalculator)
        and calculator.model_type == "MACE"
        and not getattr(calculator, "use_compile", False)
        and not getattr(calculator, "pad_num_atoms", 0)
        and not getattr(calculator, "pad_num_edges", 0)
        and not getattr(calculator, "compute_atomic_stresses", False)
    )


def _mace_batch(calculator, structures: Sequence[Atoms], stress: bool, batch_size: int) -> list[dict]:
    import torch
    from mace import data as mace_data
    from mace.tools import torch_geometric, torch_tools

    # As MACECalculator._atoms_to_batch, one AtomicData per structure.
    arrays_keys = {**calculator.arrays_keys, calculator.charges_key: "charges"}
    keyspec = mace_data.KeySpecification(info_keys=calculator.info_keys, arrays_keys=arrays_keys)
    with torch_tools.default_dtype(calculator.default_dtype):
        dataset = [
            mace_data.AtomicData.from_config(
                mace_data.config_from_atoms(atoms, key_specification=keyspec, head_name=calculator.head),
                z_table=calculator.z_table,
                cutoff=calculator.r_max,
                heads=calculator.available_heads,
            )
            for atoms in structures
        ]
    loader = torch_geometric.dataloader.DataLoader(
        dataset=dataset, batch_size=batch_size, shuffle=False, drop_last=False
    )
    e_conv = calculator.energy_units_to_eV
    f_conv = e_conv / calculator.length_units_to_A
    s_conv = e_conv / calculator.length_units_to_A**3

    results: list[dict] = []
    for batch_base in loader:
        batch_base = batch_base.to(calculator.device)
        energies, forces, stresses = [], [], []
        for model in calculator.models:  # a committee is averaged, as the calculator does
            batch = batch_base.clone()
            model_dtype = next(model.parameters()).dtype
            for key in batch.keys:
                value = batch[key]
                if torch.is_tensor(value) and torch.is_floating_point(value):
                    batch[key] = value.to(dtype=model_dtype)
            out = model(batch.to_dict(), compute_force=True, compute_stress=stress, training=False)
            energies.append(out["energy"].detach())
            forces.append(out["forces"].detach())
            if stress:
                stresses.append(out["stress"].detach())
        energy = torch.stack(energies).mean(0).cpu().numpy() * e_conv
        force = torch.stack(forces).mean(0).cpu().numpy() * f_conv
        sigma = torch.stack(stresses).mean(0).cpu().numpy() * s_conv if stress else None
        ptr = batch_base.ptr.cpu().numpy()
        for i in range(len(ptr) - 1):
            results.append(_result(energy[i], force[ptr[i]:ptr[i + 1]], sigma[i] if stress else None))
    return results


# --- M3GNet (matgl) -------------------------------------------------------------------------

def _is_batchable_matgl(calculator) -> bool:
    try:
        from matgl.ext.ase import PESCalculator
    except ImportError:
        return False
    if not isinstance(calculator, PESCalculator):
        return False
    potential = calculator.potential
    return (
        potential.calc_forces
        and not potential.calc_hessian
        and not potential.calc_charge
        and not potential.debug_mode
        and calculator.state_attr is None
    )


def _matgl_batch(calculator, structures: Sequence[Atoms], stress: bool, batch_size: int) -> list[dict]:
    import torch
    from torch_geometric.data import Batch

    if stress and not calculator.compute_stress:
        from ase.calculators.calculator import PropertyNotImplementedError

        raise PropertyNotImplementedError("stress: this matgl potential does not compute stresses")
    results: list[dict] = []
    for chunk in _chunks(structures, batch_size):
        graphs, lattices, states = [], [], []
        for atoms in chunk:  # as PESCalculator.calculate, one graph per structure
            graph, lattice, state_attr = calculator._atoms2graph.get_graph(atoms)
            graphs.append(graph)
            lattices.append(torch.as_tensor(lattice).reshape(-1, 3, 3))
            states.append(torch.as_tensor(np.asarray(state_attr)))
        # as matgl.graph.data.collate_fn_pes: a PyG Batch, (B, 3, 3) lattices, (B, d) states
        g = Batch.from_data_list(graphs)
        lat = torch.cat(lattices, dim=0)
        state = torch.stack(states)
        energy, forces, stresses, *_ = calculator.potential(g, lat, state)
        energy = energy.detach().cpu().numpy().reshape(-1)
        forces = forces.detach().cpu().numpy()
        if stress:
            # (3B, 3) in GPa; the calculator multiplies by its GPa -> eV/Å³ factor
            sigma = stresses.detach().cpu().numpy().reshape(-1, 3, 3) * calculator.conversion_factor
        ptr = g.ptr.cpu().numpy()
        for i in range(len(chunk)):
            results.append(_result(energy[i], forces[ptr[i]:ptr[i + 1]], sigma[i] if stress else None))
    return results


# --- dispatch -------------------------------------------------------------------------------

def evaluate_batch(
    model: LoadedModel,
    structures: Sequence[Atoms],
    *,
    stress: bool = False,
    batch_size: int | None = None,
) -> list[dict]:
    """Energy, forces (and stress) of each structure, several structures per model call.

    `batch_size`: structures per model call; None puts them all in one call. Structures may
    differ in size and composition (within the model's elements). Returns one dict per
    structure, in order; see the module docstring for keys and units.
    """
    structures = list(structures)
    if batch_size is not None and batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size!r}")
    if not structures:
        return []
    size = batch_size or len(structures)
    calculator = model.calculator
    if model.family == "chgnet" and _is_chgnet(calculator):
        return _chgnet_batch(calculator, structures, stress, size)
    if model.family == "mace-mp-0" and _is_batchable_mace(calculator):
        return _mace_batch(calculator, structures, stress, size)
    if model.family == "m3gnet" and _is_batchable_matgl(calculator):
        from driver.models.m3gnet import matgl_float_dtype

        with matgl_float_dtype(model.dtype):
            return _matgl_batch(calculator, structures, stress, size)
    return evaluate_one_by_one(calculator, structures, stress=stress)


def batching_pays(model: LoadedModel) -> bool:
    """Whether one call for many structures beats a loop, as measured on a 2-core CPU:
    bench/batch_eval.py (16 x 64-atom Si): MACE 2.6x, M3GNet 1.1x, CHGNet 0.5x;
    bench/task_batching.py (5 NEB images x 95 atoms): MACE 1.46x, M3GNet 0.60x, CHGNet 0.60x.
    On the CPU only MACE gains; on a GPU, where a batch fills the device, all three are batched."""
    return model.family == "mace-mp-0" or model.device.startswith("cuda")


def evaluate_many(model: LoadedModel, structures: Sequence[Atoms], *, batched: bool | str = "auto",
                  batch_size: int | None = None, stress: bool = False) -> list[dict]:
    """Raw results for many structures, batched when asked (or, with "auto", when it pays)."""
    use_batch = batching_pays(model) if batched == "auto" else bool(batched)
    if use_batch:
        return evaluate_batch(model, structures, stress=stress, batch_size=batch_size)
    return evaluate_one_by_one(model.calculator, structures, stress=stress)
