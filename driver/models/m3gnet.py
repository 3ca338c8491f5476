"""M3GNet through matgl: a serialized model folder (model.json, model.pt, state.pt)."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from ase.data import atomic_numbers

from driver.errors import InputError, first_line, is_out_of_memory
from driver.provenance import sha256_of_path
from driver.registry import ModelFamily

if TYPE_CHECKING:
    from driver.specs import ModelSpec

DEFAULT_NAME = "M3GNet-MP-2021.2.8-PES"
MATGL_FILES = ("model.json", "model.pt", "state.pt")


def is_matgl_folder(path: Path) -> bool:
    return (path / "model.json").is_file()


def find_local(name: str, models_dirs: list[Path]) -> Path | None:
    for folder in models_dirs:
        if is_matgl_folder(folder / name):
            return folder / name
    return None


@contextlib.contextmanager
def matgl_float_dtype(dtype: str):
    """matgl reads its float dtype from a module global and sets torch's process-wide default
    with it; scope both to one call so other models in the process keep float32."""
    import matgl
    import torch

    saved_torch, saved_matgl = torch.get_default_dtype(), (matgl.float_th, matgl.float_np)
    matgl.set_default_dtype("float", 64 if dtype == "float64" else 32)
    try:
        yield
    finally:
        matgl.float_th, matgl.float_np = saved_matgl
        torch.set_default_dtype(saved_torch)


def _dtype_scoped_calculator_class():
    from matgl.ext.ase import PESCalculator

    class DtypeScopedPESCalculator(PESCalculator):
        """matgl's calculator, evaluated with matgl's dtype set to this model's for each call."""

        def __init__(self, potential, dtype: str, **kwargs):
            super().__init__(potential, **kwargs)
            self.model_dtype = dtype

        def calculate(self, *args, **kwargs):
            with matgl_float_dtype(self.model_dtype):
                super().calculate(*args, **kwargs)

    return DtypeScopedPESCalculator


def known_elements(spec: ModelSpec, models_dirs: list[Path]) -> list[int] | None:
    """The element_types in the local model folder's model.json (matgl's constructor arguments),
    read without loading the model; None where there is no local folder or no such entry."""
    import json

    folder = Path(spec.checkpoint) if spec.checkpoint else find_local(spec.variant or DEFAULT_NAME, models_dirs)
    if folder is None or not is_matgl_folder(folder):
        return None
    try:
        found = _find_key(json.loads((folder / "model.json").read_text()), "element_types")
    except (OSError, ValueError):
        return None
    if not isinstance(found, list) or not all(isinstance(s, str) and s in atomic_numbers for s in found):
        return None
    return [atomic_numbers[symbol] for symbol in found]


def _find_key(tree: object, key: str) -> object:
    if isinstance(tree, dict):
        if key in tree:
            return tree[key]
        tree = list(tree.values())
    if isinstance(tree, list):
        for item in tree:
            found = _find_key(item, key)
            if found is not None:
                return found
    return None


def _looked(name: str, models_dirs: list[Path]) -> str:
    return ", ".join(str(d / name) for d in models_dirs) or "no models directory given"


def load(spec: ModelSpec, device: str, models_dirs: list[Path]):
    import matgl
    import torch

    from driver.models import OFFLINE_ENV, LoadedWeights, downloads_allowed

    name = spec.variant or DEFAULT_NAME
    if spec.checkpoint:
        folder = Path(spec.checkpoint)
        if not is_matgl_folder(folder):
            raise InputError(f"model.checkpoint: {folder} is not a matgl model folder (no model.json)")
        target = str(folder)
    else:
        local = find_local(name, models_dirs)
        # Without a local copy, matgl's own lookup: its cache, then a download on machines with internet.
        target = str(local) if local else name
        if local is None and not downloads_allowed():
            raise InputError(f"model: M3GNet weights {name!r} not found (looked in: {_looked(name, models_dirs)}; "
                             f"{OFFLINE_ENV} is set, so matgl's download was not tried)")
    if Path(target).exists():
        missing = [f for f in MATGL_FILES if not (Path(target) / f).is_file()]
        if missing:  # matgl would take the folder's name for a hub id and try to download it
            raise InputError(f"model: {target}: incomplete matgl model folder (missing {', '.join(missing)})")
    try:
        with matgl_float_dtype(spec.dtype):
            potential = matgl.load_model(target)
    except Exception as exc:
        if is_out_of_memory(exc):
            raise
        cause = first_line(exc.__cause__) if exc.__cause__ is not None else first_line(exc)
        if Path(target).exists():
            raise InputError(f"model: {target}: not a loadable matgl model ({cause})") from None
        raise InputError(
            f"model: M3GNet weights {name!r} not found (looked in: {_looked(name, models_dirs)}; then matgl's "
            f"cache/download failed: {cause}); set model.models_dir, DRIVER_MODELS_DIR or model.checkpoint"
        ) from None
    dtype = torch.float64 if spec.dtype == "float64" else torch.float32
    potential = potential.to(device=device, dtype=dtype)
    # matgl.load_model hands the potential over in training mode, where Potential.forward records
    # a double-backward graph of the forces (create_graph=True) for a loss no simulation takes:
    # ~20% of every step (bench/README.md). Eval mode changes nothing else but matgl's optional
    # dropout (none in the pretrained models), which no simulation wants sampled into its forces.
    potential.eval()
    calculator = _dtype_scoped_calculator_class()(potential, dtype=spec.dtype, stress_unit="eV/A3")
    weights = sha256_of_path(target) if Path(target).exists() else None
    return LoadedWeights(calculator, target, weights)


def can_batch(calculator) -> bool:
    """The configurations `batch` reproduces: not charge/state-dependent or Hessian-computing."""
    from matgl.ext.ase import PESCalculator

    if not isinstance(calculator, PESCalculator):
        return False
    potential = calculator.potential
    return (potential.calc_forces and not potential.calc_hessian and not potential.calc_charge
            and not potential.debug_mode and calculator.state_attr is None)


def batch(calculator, structures: Sequence, properties: tuple, batch_size: int) -> list:
    """matgl's `Atoms2Graph` per structure, collated with `torch_geometric.data.Batch` and stacked
    lattices (as matgl's `collate_fn_pes`), one `Potential` call per batch, inside the model's
    dtype scope like the calculator; the strain gradient (matgl's `calc_stresses`) only when a
    stress is asked for."""
    from ase.calculators.calculator import PropertyNotImplementedError

    stress = "stress" in properties
    if "magmoms" in properties:
        from ase.calculators.calculator import PropertyNotImplementedError

        raise PropertyNotImplementedError("magmoms: this model predicts no magnetic moments")
    if stress and not calculator.compute_stress:
        raise PropertyNotImplementedError("stress: this matgl potential does not compute stresses")
    potential = calculator.potential
    stresses_switch = potential.calc_stresses
    potential.calc_stresses = stress
    try:
        with matgl_float_dtype(getattr(calculator, "model_dtype", "float32")):
            return [result for start in range(0, len(structures), batch_size)
                    for result in _evaluate_chunk(calculator, structures[start:start + batch_size], stress)]
    finally:
        potential.calc_stresses = stresses_switch


def _evaluate_chunk(calculator, chunk: Sequence, stress: bool) -> list:
    import torch
    from torch_geometric.data import Batch

    from driver.potential import Results

    graphs, lattices, states = [], [], []
    for atoms in chunk:  # as PESCalculator.calculate, one graph per structure
        graph, lattice, state_attr = calculator._atoms2graph.get_graph(atoms)
        graphs.append(graph)
        lattices.append(torch.as_tensor(lattice).reshape(-1, 3, 3))
        states.append(torch.as_tensor(np.asarray(state_attr)))
    if len(chunk) == 1:  # one structure (MD, relaxations): its graph as PESCalculator passes it, no collation
        g, lattice, state = graphs[0], lattices[0], states[0]
        ptr = np.array([0, len(chunk[0])])
    else:
        g, lattice, state = Batch.from_data_list(graphs), torch.cat(lattices, dim=0), torch.stack(states)
        ptr = g.ptr.cpu().numpy()
    line_graph = _three_body_line_graph(calculator.potential, g, lattice)
    try:
        energy, forces, stresses, *_ = calculator.potential(g, lattice, state, l_g=line_graph)
    except ValueError as exc:  # matgl's re-check of the line graph against its own bond distances
        if line_graph is None or "line graph" not in str(exc):
            raise
        energy, forces, stresses, *_ = calculator.potential(g, lattice, state)
    energy = energy.detach().cpu().numpy().reshape(-1)
    forces = forces.detach().cpu().numpy()
    # (3B, 3) in GPa; the calculator multiplies by its GPa -> eV/Å³ factor
    sigma = stresses.detach().cpu().numpy().reshape(-1, 3, 3) * calculator.conversion_factor if stress else None
    return [Results.of(energy[i], forces[ptr[i]:ptr[i + 1]], sigma[i] if stress else None) for i in range(len(chunk))]


def _three_body_line_graph(potential, g, lattice):
    """M3GNet's three-body line graph from matgl's tensor implementation (`create_line_graph_torch`,
    the one its LAMMPS export uses) instead of the Python loop over atoms `M3GNet.forward` runs when
    given none: the same indices, ~1 ms less of a ~55 ms step at 64 Si atoms, ~4 of ~170 at 216,
    growing with the cell (bench/README.md). The bond geometry is computed as `Potential.forward`
    computes it at zero strain, so the cutoff membership matgl re-checks agrees to the bit; should
    it not, the caller lets matgl build its own. None for matgl models without this line graph."""
    import torch
    from matgl.graph._compute import compute_pair_vector_and_distance, create_line_graph_torch
    from matgl.models import M3GNet
    from torch_geometric.data import Batch

    model = potential.model
    if not isinstance(model, M3GNet):
        return None
    with torch.no_grad():
        dtype, device = potential.data_mean.dtype, potential.data_mean.device
        lat = lattice.to(device=device, dtype=dtype) @ potential._eye3
        edge_index = g.edge_index.to(device)
        if isinstance(g, Batch):
            node_batch = g.batch.to(device)
        else:
            node_batch = torch.zeros(g.num_nodes, dtype=torch.long, device=device)
        edge_lattice = lat[node_batch[edge_index[0]]]
        offshift = (g.pbc_offset.to(device=device, dtype=dtype).unsqueeze(dim=-1) * edge_lattice).sum(dim=1)
        pos = (g.frac_coords.to(device=device, dtype=dtype).unsqueeze(-1) * lat[node_batch]).sum(dim=1)
        bond_vec, bond_dist = compute_pair_vector_and_distance(pos, edge_index, offshift)
        return create_line_graph_torch(edge_index, bond_dist, bond_vec, g.num_nodes, model.threebody_cutoff)


FAMILY = ModelFamily(
    memory_per_atom_mb=1.0,  # 0.97-0.99 at 512-8000 Si atoms
    name="m3gnet",
    package="matgl",
    dtypes=("float32", "float64"),
    description="variant: matgl model name (default M3GNet-MP-2021.2.8-PES), looked up in model.models_dir, "
                "$DRIVER_MODELS_DIR, then matgl's cache/download; checkpoint: a matgl folder",
    load=load,
    batch=batch,
    can_batch=can_batch,
    elements=lambda calculator: [atomic_numbers[symbol] for symbol in calculator.potential.model.element_types],
    known_elements=known_elements,
    is_checkpoint=lambda path: path.is_dir() and is_matgl_folder(path),
    finetune_module="driver.finetune.m3gnet",
    distributions=("matgl", "torch-geometric"),
)
