"""Model registry: a recipe's `model:` block becomes an ASE calculator and its provenance.

Each family lives in its own module, imported only when used: importing mace changes torch's
loading defaults for the whole process, and each library takes seconds to import.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from ase.calculators.calculator import Calculator

from driver.models.device import resolve_device
from driver.recipe import MODEL_FAMILIES, ModelSpec

MODELS_DIR_ENV = "DRIVER_MODELS_DIR"
OFFLINE_ENV = "DRIVER_OFFLINE"


def downloads_allowed() -> bool:
    """False under DRIVER_OFFLINE=1: compute nodes without internet fail at once, not after retries."""
    return os.environ.get(OFFLINE_ENV, "").strip().lower() in ("", "0", "false", "no")

_FAMILY_MODULES = {
    "chgnet": "driver.models.chgnet",
    "m3gnet": "driver.models.m3gnet",
    "mace-mp-0": "driver.models.mace",
}
assert set(_FAMILY_MODULES) == set(MODEL_FAMILIES)


@dataclass(frozen=True)
class LoadedModel:
    """A ready calculator plus what a result must record about where it came from."""

    calculator: Calculator
    family: str
    source: str
    weights_sha256: str | None
    device: str
    dtype: str

    def provenance(self) -> dict[str, str]:
        return {
            "model_family": self.family,
            "model_source": self.source,
            "model_weights_sha256": self.weights_sha256 or "unknown",
            "model_device": self.device,
            "model_dtype": self.dtype,
        }


def models_dirs(spec: ModelSpec) -> list[Path]:
    """Folders searched for weights, in order: the recipe's, then $DRIVER_MODELS_DIR."""
    dirs = []
    if spec.models_dir:
        dirs.append(Path(spec.models_dir))
    for entry in os.environ.get(MODELS_DIR_ENV, "").split(os.pathsep):
        if entry:
            dirs.append(Path(entry).expanduser())
    return dirs


def family_module(name: str):
    return importlib.import_module(_FAMILY_MODULES[name])


def load_model(spec: ModelSpec, local_rank: int = 0) -> LoadedModel:
    """Load the model a recipe names on the device it asks for (auto: GPU when present)."""
    device = resolve_device(spec.device, local_rank)
    # The libraries print banners on stdout; keep stdout for results.
    with contextlib.redirect_stdout(sys.stderr):
        return family_module(spec.name).load(spec, device, models_dirs(spec))
