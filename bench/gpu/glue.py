"""Every call the GPU check makes into the driver, in one place (driver/ is being refactored:
adapt this file, not the benchmark, when its entry points move).

Public entry points only: driver.models.load_model with a driver.recipe.ModelSpec, recipes
through driver.recipe.load_recipe and driver.runner.run_recipe, and the batched evaluation that
NEB, phonons and replica MD use (ModelPotential.evaluate batched or one by one, and
ModelPotential.batching_pays, the rule behind `batched: auto`).
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import driver  # noqa: E402
import driver.runner  # noqa: E402
from driver.correction import SofteningCorrection  # noqa: E402
from driver.models import load_model  # noqa: E402
from driver.potential import ENERGY_FORCES, PROPERTIES  # noqa: E402
from driver.recipe import load_recipe  # noqa: E402
from driver.runner import run_recipe  # noqa: E402
from driver.specs import ModelSpec  # noqa: E402

DRIVER_VERSION = driver.__version__
SI_CIF = ROOT / "recipes" / "structures" / "Si_diamond.cif"
LI2O_CIF = ROOT / "recipes" / "structures" / "Li2O_antifluorite.cif"

__all__ = ["DRIVER_VERSION", "LI2O_CIF", "ROOT", "SI_CIF", "SofteningCorrection", "batched",
           "load", "one_by_one", "reusing_model", "run_md_recipe"]


def load(fields: dict, dtype: str, device: str):
    """A ModelPotential (.evaluate, .calculator, .family, .device, .dtype) for a family's spec fields."""
    with contextlib.redirect_stdout(sys.stderr):  # the libraries' banners
        return load_model(ModelSpec(**{**fields, "dtype": dtype, "device": device}))


def batched(model, structures: Sequence, stress: bool = False) -> list:
    """All structures in one model call (the library's own graph batching)."""
    return model.evaluate(structures, PROPERTIES if stress else ENERGY_FORCES, batched=True)


def one_by_one(model, structures: Sequence, stress: bool = False) -> list:
    return model.evaluate(structures, PROPERTIES if stress else ENERGY_FORCES, batched=False)


@contextlib.contextmanager
def reusing_model(model) -> Iterator[None]:
    """run_recipe loads its model; inside this block it gets `model` instead, so loading is not
    timed and the GPU holds one copy (as bench/replica_md.py does)."""
    original = driver.runner.load_model
    driver.runner.load_model = lambda spec, local_rank=0, local_size=1: model
    try:
        yield
    finally:
        driver.runner.load_model = original


def run_md_recipe(folder: Path, *, model_fields: dict, dtype: str, device: str, supercell: Sequence[int],
                  temperatures_K: Sequence[float], steps: int, batch_replicas: bool, timestep_fs: float = 1.0,
                  ensemble: str = "nvt_langevin", write_every: int | None = None) -> list[dict]:
    """Write an MD recipe to folder/recipe.yaml, run it with driver.runner.run_recipe (the
    `driver run` path), return the jobs' summary entries (status, wall_time_s, ...)."""
    folder.mkdir(parents=True, exist_ok=True)
    recipe = {
        "name": "gpu-check",
        "structure": {"file": str(SI_CIF), "supercell": list(supercell)},
        "model": {**model_fields, "dtype": dtype, "device": device},
        "task": {"kind": "md", "ensemble": ensemble, "timestep_fs": timestep_fs, "steps": steps,
                 "temperature_K": list(temperatures_K) if len(temperatures_K) > 1 else temperatures_K[0],
                 "seed": 1},
        "output": {"directory": str(folder / "out"), **({"write_every": write_every} if write_every else {})},
        "run": {"batch_replicas": batch_replicas},
    }
    path = folder / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    parsed, text = load_recipe(path)
    with contextlib.redirect_stdout(sys.stderr):
        report = run_recipe(parsed, text, overwrite=True)
    failed = [job for job in report.jobs if job["status"] != "completed"]
    if failed:
        raise RuntimeError(f"{len(failed)} driver job(s) did not complete: {failed[0].get('job')} "
                           f"{failed[0]['status']} {failed[0].get('error', '')}")
    return report.jobs
