"""MACE-MP-0 through mace-torch: mace's size names (small, medium, ...) or a local `.model` file.

Importing mace sets TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD for the whole process, so every
checkpoint is unpickled as code: the weights' sha256 is recorded with every result.
"""

from __future__ import annotations

from pathlib import Path

from driver.errors import InputError
from driver.provenance import sha256_of_path
from driver.recipe import ModelSpec

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


def load(spec: ModelSpec, device: str, models_dirs: list[Path]):
    from mace.calculators import mace_mp

    from driver.models import LoadedModel

    weights = resolve_weights(spec, models_dirs)
    try:
        calculator = mace_mp(model=str(weights), device=device, default_dtype=spec.dtype)
    except Exception as exc:
        raise InputError(f"model: {weights}: not a loadable MACE model ({exc})") from None
    return LoadedModel(calculator, "mace-mp-0", str(weights), sha256_of_path(weights), device, spec.dtype)
