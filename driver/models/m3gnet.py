"""M3GNet through matgl: a serialized model folder (model.json, model.pt, state.pt)."""

from __future__ import annotations

from pathlib import Path

from driver.errors import InputError
from driver.provenance import sha256_of_path
from driver.recipe import ModelSpec

DEFAULT_NAME = "M3GNet-MP-2021.2.8-PES"


def is_matgl_folder(path: Path) -> bool:
    return (path / "model.json").is_file()


def find_local(name: str, models_dirs: list[Path]) -> Path | None:
    for folder in models_dirs:
        if is_matgl_folder(folder / name):
            return folder / name
    return None


def load(spec: ModelSpec, device: str, models_dirs: list[Path]):
    import matgl
    import torch
    from matgl.ext.ase import PESCalculator

    from driver.models import LoadedModel

    if spec.dtype == "float64":
        # matgl builds its graphs in its global default dtype; the model must match it.
        matgl.set_default_dtype("float", 64)
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
    try:
        potential = matgl.load_model(target)
    except Exception as exc:
        looked = ", ".join(str(d / name) for d in models_dirs) or "no models directory given"
        raise InputError(
            f"model: M3GNet weights {name!r} not found (looked in: {looked}; then matgl's "
            f"cache/download failed: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}); "
            "set model.models_dir, DRIVER_MODELS_DIR or model.checkpoint"
        ) from None
    dtype = torch.float64 if spec.dtype == "float64" else torch.float32
    potential = potential.to(device=device, dtype=dtype)
    calculator = PESCalculator(potential, stress_unit="eV/A3")
    weights = sha256_of_path(target) if Path(target).exists() else None
    return LoadedModel(calculator, "m3gnet", target, weights, device, spec.dtype)
