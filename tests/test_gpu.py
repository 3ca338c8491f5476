"""Correctness on CUDA (marker `gpu`; bench/gpu/check.sh runs `pytest -m gpu` on the lent GPU):
energies and forces on the GPU equal the CPU's to float tolerance, the corrected model is raw/s
there too, and batched evaluation equals one-by-one.

Without a GPU these skip, unless UMLIP_GPU_TESTS_ON_CPU=1 (the CPU rehearsal of the device
check): then "the GPU" is the CPU, which proves the test code runs, not the GPU.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from driver.correction import SofteningCorrection
from driver.models import load_model
from driver.potential import PROPERTIES
from driver.specs import ModelSpec
from tests.conftest import M3GNET_NAME, SHARED_MODELS, energy_forces_stress

pytestmark = pytest.mark.gpu
ON_CPU = os.environ.get("UMLIP_GPU_TESTS_ON_CPU", "") == "1"
# read at import: the autouse fixture of conftest.py clears DRIVER_MODELS_DIR for each test
_MODELS_DIRS = [Path(p) for p in os.environ.get("DRIVER_MODELS_DIR", "").split(os.pathsep) if p] + [SHARED_MODELS]
# float32 on a GPU sums in another order than on the CPU: eV and eV/Å differences of ~1e-4
TOLERANCE = {"float32": {"energy": 2e-3, "forces": 2e-3}, "float64": {"energy": 1e-7, "forces": 1e-7}}
CASES = [("chgnet", "float32"), ("m3gnet", "float32"), ("m3gnet", "float64"),
         ("mace-mp-0", "float32"), ("mace-mp-0", "float64")]


@pytest.fixture(scope="module")
def gpu() -> str:
    if torch.cuda.is_available():
        return "cuda"
    if ON_CPU:
        return "cpu"
    pytest.skip("no CUDA GPU on this machine")


def _fields(family: str, small_mace_path: Path) -> dict:
    if family == "m3gnet":
        folder = next((d for d in _MODELS_DIRS if (d / M3GNET_NAME / "model.json").is_file()), None)
        if folder is None:
            pytest.skip(f"M3GNet weights absent (looked in {', '.join(map(str, _MODELS_DIRS))})")
        return {"name": "m3gnet", "models_dir": str(folder)}
    if family == "mace-mp-0":
        return {"name": "mace-mp-0", "checkpoint": str(small_mace_path)}
    return {"name": family}


_loaded: dict[tuple, object] = {}


def _model(family: str, dtype: str, device: str, small_mace_path: Path):
    key = (family, dtype, device)
    if key not in _loaded:
        _loaded[key] = load_model(ModelSpec(**_fields(family, small_mace_path), dtype=dtype, device=device))
    return _loaded[key]


def _structures(n: int = 3):
    from ase.build import bulk

    base = bulk("Si", "diamond", a=5.43, cubic=True)
    out = []
    for k in range(n):
        atoms = base.repeat((1, 1, 2)) if k % 2 else base.copy()
        atoms.rattle(0.06, seed=10 + k)
        out.append(atoms)
    return out


@pytest.mark.parametrize(("family", "dtype"), CASES)
def test_gpu_energy_forces_equal_cpu(family, dtype, gpu, small_mace_path):
    on_gpu = _model(family, dtype, gpu, small_mace_path)
    on_cpu = _model(family, dtype, "cpu", small_mace_path)
    assert on_gpu.device.startswith("cuda") or ON_CPU
    tol = TOLERANCE[dtype]
    for atoms in _structures():
        e_gpu, f_gpu, s_gpu = energy_forces_stress(on_gpu.as_calculator(), atoms)  # the driver's path
        e_cpu, f_cpu, s_cpu = energy_forces_stress(on_cpu.as_calculator(), atoms)
        assert np.isfinite(e_gpu) and np.isfinite(f_gpu).all()
        assert abs(e_gpu - e_cpu) <= tol["energy"] * len(atoms)
        np.testing.assert_allclose(f_gpu, f_cpu, atol=tol["forces"], rtol=tol["forces"])
        np.testing.assert_allclose(s_gpu, s_cpu, atol=tol["forces"], rtol=tol["forces"])


@pytest.mark.parametrize(("family", "dtype"), [("chgnet", "float32"), ("mace-mp-0", "float64")])
def test_gpu_corrected_is_raw_over_s(family, dtype, gpu, small_mace_path):
    model = _model(family, dtype, gpu, small_mace_path)
    s, e0 = 0.627, -40.0
    for atoms in _structures(2):
        e_raw, f_raw, s_raw = energy_forces_stress(model.as_calculator(), atoms)  # what the correction wraps
        e_cor, f_cor, s_cor = energy_forces_stress(SofteningCorrection(model, s, e0).as_calculator(), atoms)
        # the division happens in the model's dtype (float32 arrays stay float32): its round-off
        rtol = 1e-6 if dtype == "float32" else 1e-12
        assert e_cor == pytest.approx(e0 + (e_raw - e0) / s, rel=rtol, abs=1e-9)
        np.testing.assert_allclose(f_cor, f_raw / s, rtol=rtol, atol=1e-9)
        np.testing.assert_allclose(s_cor, s_raw / s, rtol=rtol, atol=1e-9)


@pytest.mark.parametrize(("family", "dtype"), CASES)
def test_gpu_batched_equals_one_by_one(family, dtype, gpu, small_mace_path):
    model = _model(family, dtype, gpu, small_mace_path)
    structures = _structures(4)
    batched = model.evaluate(structures, PROPERTIES, batched=True)
    single = model.evaluate(structures, PROPERTIES, batched=False)
    tol = TOLERANCE[dtype]
    for b, o, atoms in zip(batched, single, structures, strict=True):
        assert abs(b.energy - o.energy) <= tol["energy"] * len(atoms)
        np.testing.assert_allclose(b.forces, o.forces, atol=tol["forces"], rtol=tol["forces"])
        np.testing.assert_allclose(b.stress, o.stress, atol=tol["forces"], rtol=tol["forces"])
