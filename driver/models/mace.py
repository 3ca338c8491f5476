"""MACE-MP-0 through mace-torch: mace's size names (small, medium, ...) or a local `.model` file.

A `.model` file is a whole pickled torch module: loading it runs code, so every load is logged
with the file's sha256 and DRIVER_SAFE_LOAD=1 refuses it (driver.models.pickles); the sha256 is
recorded with every result too.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from driver.errors import InputError, first_line, is_out_of_memory
from driver.models.checkpoint_kind import torch_pickle_names
from driver.provenance import sha256_of_path
from driver.registry import ModelFamily

if TYPE_CHECKING:
    from driver.specs import ModelSpec

DEFAULT_SIZE = "medium"


def local_candidates(size: str, models_dirs: list[Path]) -> list[Path]:
    names = (size, f"{size}.model", f"mace-mp-0-{size}.model")
    return [folder / name for folder in models_dirs for name in names]


def resolve_weights(spec: ModelSpec, models_dirs: list[Path]) -> Path:
    """A local file: the checkpoint, one in the models folders, or mace's own download cache."""
    if spec.checkpoint:
        return Path(spec.checkpoint)
    size = spec.variant or DEFAULT_SIZE
    for candidate in local_candidates(size, models_dirs):
        if candidate.is_file():
            return candidate
    from mace.calculators.foundations_models import download_mace_mp_checkpoint

    from driver.models import OFFLINE_ENV, downloads_allowed

    looked = ", ".join(str(c) for c in local_candidates(size, models_dirs)) or "no models directory given"
    if not downloads_allowed():
        raise InputError(f"model: MACE-MP-0 {size!r} not found (looked in: {looked}; {OFFLINE_ENV} is set, "
                         "so mace's download was not tried)")
    try:
        return Path(download_mace_mp_checkpoint(size))
    except Exception as exc:
        raise InputError(
            f"model: MACE-MP-0 {size!r} not found (looked in: {looked}; then mace's cache/download "
            f"failed: {type(exc).__name__}); set model.checkpoint to a .model file, or "
            "model.models_dir / DRIVER_MODELS_DIR"
        ) from None


def is_checkpoint(path: Path) -> bool:
    """A whole MACE model saved with `torch.save`, what `MACECalculator` loads and mace's `run_train`
    writes, whatever its name: the pickle's first class is the model's own, from the mace package
    (driver.models.checkpoint_kind). mace's per-epoch training checkpoints (a dict of state_dicts)
    are not: they hold no model to load."""
    names = torch_pickle_names(path)
    return names is not None and names.first_class_from("mace")


def load(spec: ModelSpec, device: str, models_dirs: list[Path]):
    from mace.calculators import mace_mp

    from driver.models import LoadedWeights
    from driver.models.pickles import allow_code_load

    weights = resolve_weights(spec, models_dirs)
    allow_code_load(weights, "MACE", "a .model file is a whole pickled torch module")
    try:
        calculator = mace_mp(model=str(weights), device=device, default_dtype=spec.dtype)
    except Exception as exc:
        if is_out_of_memory(exc):
            raise
        raise InputError(f"model: {weights}: not a loadable MACE model ({first_line(exc)})") from None
    return LoadedWeights(calculator, str(weights), sha256_of_path(weights))


def can_batch(calculator) -> bool:
    """The configurations `batch` reproduces: a plain energy model, not compiled or padded."""
    from mace.calculators.mace import MACECalculator

    return (
        isinstance(calculator, MACECalculator)
        and calculator.model_type == "MACE"
        and not getattr(calculator, "use_compile", False)
        and not getattr(calculator, "pad_num_atoms", 0)
        and not getattr(calculator, "pad_num_edges", 0)
        and not getattr(calculator, "compute_atomic_stresses", False)
    )


def batch(calculator, structures: Sequence, properties: tuple, batch_size: int) -> list:
    """One `AtomicData` per structure (as `MACECalculator` builds it), collated by mace's
    torch_geometric DataLoader, one model call per batch, results split with `batch.ptr`; a
    committee is averaged as the calculator averages it."""
    import torch
    from mace import data as mace_data
    from mace.tools import torch_geometric, torch_tools

    from driver.potential import Results

    stress = "stress" in properties
    if "magmoms" in properties:
        from ase.calculators.calculator import PropertyNotImplementedError

        raise PropertyNotImplementedError("magmoms: this model predicts no magnetic moments")
    arrays_keys = {**calculator.arrays_keys, calculator.charges_key: "charges"}
    keyspec = mace_data.KeySpecification(info_keys=calculator.info_keys, arrays_keys=arrays_keys)
    with torch_tools.default_dtype(calculator.default_dtype):
        dataset = [
            mace_data.AtomicData.from_config(
                mace_data.config_from_atoms(atoms, key_specification=keyspec, head_name=calculator.head),
                z_table=calculator.z_table, cutoff=calculator.r_max, heads=calculator.available_heads,
            )
            for atoms in structures
        ]
    loader = torch_geometric.dataloader.DataLoader(dataset=dataset, batch_size=batch_size, shuffle=False,
                                                   drop_last=False)
    e_conv = calculator.energy_units_to_eV
    f_conv = e_conv / calculator.length_units_to_A
    s_conv = e_conv / calculator.length_units_to_A**3
    results = []
    for batch_base in loader:
        batch_base = batch_base.to(calculator.device)
        energies, forces, stresses = [], [], []
        for model in calculator.models:
            one = batch_base.clone()
            model_dtype = next(model.parameters()).dtype
            for key in one.keys:
                value = one[key]
                if torch.is_tensor(value) and torch.is_floating_point(value):
                    one[key] = value.to(dtype=model_dtype)
            out = model(one.to_dict(), compute_force=True, compute_stress=stress, training=False)
            energies.append(out["energy"].detach())
            forces.append(out["forces"].detach())
            if stress:
                stresses.append(out["stress"].detach())
        energy = torch.stack(energies).mean(0).cpu().numpy() * e_conv
        force = torch.stack(forces).mean(0).cpu().numpy() * f_conv
        sigma = torch.stack(stresses).mean(0).cpu().numpy() * s_conv if stress else None
        ptr = batch_base.ptr.cpu().numpy()
        for i in range(len(ptr) - 1):
            results.append(Results.of(energy[i], force[ptr[i]:ptr[i + 1]], sigma[i] if stress else None))
    return results


FAMILY = ModelFamily(
    memory_per_atom_mb=3.6,  # MACE-MP-0 medium's architecture, 512 Si atoms; small models need less
    name="mace-mp-0",
    package="mace",
    dtypes=("float32", "float64"),
    description="variant: MACE-MP-0 size (small, medium, large, ...; default medium), looked up in "
                "model.models_dir, $DRIVER_MODELS_DIR, then mace's cache/download; checkpoint: a whole MACE model saved with torch.save (recognised by content, any name)",
    load=load,
    batch=batch,
    can_batch=can_batch,
    elements=lambda calculator: calculator.z_table.zs,
    is_checkpoint=is_checkpoint,
    finetune_module="driver.finetune.mace",
    distributions=("mace-torch", "e3nn"),
)
