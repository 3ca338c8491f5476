"""M3GNet through matgl: a serialized model folder (model.json, model.pt, state.pt)."""

from __future__ import annotations

import contextlib
from pathlib import Path

from driver.errors import InputError, first_line
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


def _looked(name: str, models_dirs: list[Path]) -> str:
    return ", ".join(str(d / name) for d in models_dirs) or "no models directory given"


def load(spec: ModelSpec, device: str, models_dirs: list[Path]):
    import matgl
    import torch

    from driver.models import OFFLINE_ENV, LoadedModel, downloads_allowed

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
    try:
        with matgl_float_dtype(spec.dtype):
            potential = matgl.load_model(target)
    except InputError:
        raise
    except Exception as exc:
        raise InputError(
            f"model: M3GNet weights {name!r} not found (looked in: {_looked(name, models_dirs)}; then matgl's "
            f"cache/download failed: {first_line(exc)}); "
            "set model.models_dir, DRIVER_MODELS_DIR or model.checkpoint"
        ) from None
    dtype = torch.float64 if spec.dtype == "float64" else torch.float32
    potential = potential.to(device=device, dtype=dtype)
    calculator = _dtype_scoped_calculator_class()(potential, dtype=spec.dtype, stress_unit="eV/A3")
    weights = sha256_of_path(target) if Path(target).exists() else None
    return LoadedModel(calculator, "m3gnet", target, weights, device, spec.dtype)
