"""Every model family loads the way its library does and gives ASE-convention results."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from driver.errors import InputError
from driver.models import load_model
from driver.models.device import resolve_device
from driver.specs import ModelSpec
from tests.conftest import energy_forces_stress


@pytest.mark.parametrize("fixture", ["chgnet_model", "m3gnet64_model", "mace64_model"])
def test_family_gives_energy_forces_stress(request, rattled_si, fixture):
    model = request.getfixturevalue(fixture)
    energy, forces, stress = energy_forces_stress(model.calculator, rattled_si)
    assert np.isfinite(energy)
    assert forces.shape == (len(rattled_si), 3) and np.isfinite(forces).all()
    assert stress.shape == (6,) and np.isfinite(stress).all()
    # Newton's third law for a periodic crystal: forces sum to zero.
    assert np.abs(forces.sum(axis=0)).max() < 1e-3
    assert model.device == "cpu"
    assert len(model.weights_sha256) == 64


def test_chgnet_matches_library_directly(chgnet_model, rattled_si):
    from chgnet.model import CHGNet
    from chgnet.model.dynamics import CHGNetCalculator

    direct = CHGNetCalculator(model=CHGNet.load(verbose=False), use_device="cpu")
    ours = energy_forces_stress(chgnet_model.calculator, rattled_si)
    theirs = energy_forces_stress(direct, rattled_si)
    for a, b in zip(ours, theirs, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5)
    assert chgnet_model.source == "chgnet-0.3.0"


def test_m3gnet_energy_matches_shared_reference(m3gnet64_model):
    """../shared/models/README.md: Si diamond 64 atoms -> -5.418 eV/atom with matgl on CPU."""
    from ase.build import bulk

    atoms = bulk("Si", "diamond", a=5.43, cubic=True).repeat(2)
    atoms.calc = m3gnet64_model.calculator
    assert atoms.get_potential_energy() / len(atoms) == pytest.approx(-5.418, abs=2e-3)


@pytest.mark.parametrize("fixture", ["m3gnet64_model", "mace64_model"])
def test_stress_is_eV_per_A3_and_equals_strain_derivative(request, rattled_si, fixture):
    """ASE convention: sigma_ij = (1/V) dE/d(eps_ij). matgl defaults to GPa; we must not."""
    calculator = request.getfixturevalue(fixture).calculator
    _, _, stress = energy_forces_stress(calculator, rattled_si)
    h = 1e-5
    for voigt, (i, j) in enumerate([(0, 0), (1, 1), (2, 2)]):
        energies = []
        for sign in (+1, -1):
            strained = rattled_si.copy()
            strain = np.eye(3)
            strain[i, j] += sign * h
            strained.set_cell(rattled_si.cell[:] @ strain, scale_atoms=True)
            energies.append(energy_forces_stress(calculator, strained)[0])
        numeric = (energies[0] - energies[1]) / (2 * h) / rattled_si.get_volume()
        assert stress[voigt] == pytest.approx(numeric, abs=2e-5)


def test_chgnet_float64_is_refused():
    with pytest.raises(InputError, match="model.dtype: chgnet runs in float32 only"):
        load_model(ModelSpec(name="chgnet", dtype="float64"))


def test_mace_dtype_follows_recipe(small_mace_path):
    model32 = load_model(ModelSpec(name="mace-mp-0", checkpoint=str(small_mace_path), dtype="float32"))
    assert next(model32.calculator.models[0].parameters()).dtype == torch.float32


def test_models_dir_from_environment(monkeypatch, shared_models_dir):
    monkeypatch.setenv("DRIVER_MODELS_DIR", str(shared_models_dir))
    model = load_model(ModelSpec(name="m3gnet"))
    assert model.source.endswith("M3GNet-MP-2021.2.8-PES")


def test_m3gnet_missing_weights_say_where_they_looked(tmp_path):
    with pytest.raises(InputError) as info:
        load_model(ModelSpec(name="m3gnet", models_dir=str(tmp_path)))
    message = str(info.value)
    assert str(tmp_path / "M3GNet-MP-2021.2.8-PES") in message
    assert "\n" not in message


def test_m3gnet_checkpoint_must_be_a_matgl_folder(tmp_path):
    with pytest.raises(InputError, match="not a matgl model folder"):
        load_model(ModelSpec(name="m3gnet", checkpoint=str(tmp_path)))


def test_mace_named_model_missing_says_where_it_looked(tmp_path):
    with pytest.raises(InputError) as info:
        load_model(ModelSpec(name="mace-mp-0", variant="small", models_dir=str(tmp_path)))
    assert str(tmp_path / "mace-mp-0-small.model") in str(info.value)


def test_mace_named_model_found_in_models_dir(tmp_path, small_mace_path, rattled_si):
    (tmp_path / "mace-mp-0-small.model").write_bytes(small_mace_path.read_bytes())
    model = load_model(ModelSpec(name="mace-mp-0", variant="small", models_dir=str(tmp_path), dtype="float64"))
    assert model.source == str(tmp_path / "mace-mp-0-small.model")
    assert np.isfinite(energy_forces_stress(model.calculator, rattled_si)[0])


def test_bad_mace_file_is_input_error(tmp_path):
    bogus = tmp_path / "bogus.model"
    bogus.write_bytes(b"not a model")
    with pytest.raises(InputError, match="not a loadable MACE model"):
        load_model(ModelSpec(name="mace-mp-0", checkpoint=str(bogus)))


def test_auto_device_is_cpu_without_gpu_and_cuda_request_fails():
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU; the GPU test below covers it")
    assert resolve_device("auto") == "cpu"
    with pytest.raises(InputError, match="torch sees no GPU"):
        resolve_device("cuda")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU on this machine")
@pytest.mark.parametrize("name", ["chgnet", "mace-mp-0"])
def test_gpu_matches_cpu(name, small_mace_path, rattled_si):
    extra = {"checkpoint": str(small_mace_path)} if name == "mace-mp-0" else {}
    gpu = load_model(ModelSpec(name=name, device="auto", **extra))
    cpu = load_model(ModelSpec(name=name, device="cpu", **extra))
    assert gpu.device.startswith("cuda")
    np.testing.assert_allclose(energy_forces_stress(gpu.calculator, rattled_si)[1], energy_forces_stress(cpu.calculator, rattled_si)[1],
                               atol=1e-3)


def test_an_incomplete_matgl_folder_is_named_not_looked_up(tmp_path, monkeypatch):
    """matgl takes a folder it cannot read for a hub id and tries to download it."""
    import os

    folder = tmp_path / "M3GNet-broken"
    folder.mkdir()
    (folder / "model.json").write_text("{}")
    with pytest.raises(InputError, match=r"incomplete matgl model folder \(missing model.pt, state.pt\)"):
        load_model(ModelSpec(name="m3gnet", checkpoint=str(folder)))
    assert os.environ.get("HF_HUB_OFFLINE") == "1"  # DRIVER_OFFLINE=1 (conftest) reaches matgl's hub


def test_a_corrupt_matgl_model_keeps_the_library_message(tmp_path, shared_models_dir):
    import shutil

    folder = tmp_path / "M3GNet-corrupt"
    shutil.copytree(shared_models_dir / "M3GNet-MP-2021.2.8-PES", folder)
    (folder / "model.pt").write_bytes(b"not a torch file")
    with pytest.raises(InputError, match=r"M3GNet-corrupt: not a loadable matgl model \("):
        load_model(ModelSpec(name="m3gnet", checkpoint=str(folder)))


def test_out_of_memory_while_loading_is_a_resource_error(monkeypatch):
    from driver.errors import ResourceError
    from driver.registry import family

    def exhausted(spec, device, dirs):
        raise RuntimeError("CUDA out of memory. Tried to allocate 1.00 GiB")

    import dataclasses

    from driver import registry

    monkeypatch.setitem(registry._FAMILIES, "chgnet", dataclasses.replace(family("chgnet"), load=exhausted))
    with pytest.raises(ResourceError, match="loading chgnet on cpu ran out of memory"):
        load_model(ModelSpec(name="chgnet", device="cpu"))
