"""Shared fixtures: real models (CHGNet bundled, M3GNet from ../shared/models, a small MACE built
here with mace-torch's own modules), loaded once per session because loading costs seconds."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml
from ase.build import bulk

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
SHARED_MODELS = SHARED / "models"
M3GNET_NAME = "M3GNet-MP-2021.2.8-PES"
SI_CIF = ROOT / "recipes" / "structures" / "Si_diamond.cif"


LI2O_A = 4.61  # Å, the lattice constant of recipes/structures/Li2O_antifluorite.cif
LI2O_HOP = {"species": "Li", "from": 1, "to": "nearest"}  # a <100> Li-Li hop of a/2 in li2o_cell


@pytest.fixture(scope="session")
def li2o_cell(tmp_path_factory) -> Path:
    """Li2O (antifluorite) as 2x2x2 primitive fcc cells: 24 atoms, every perpendicular width
    a·2/√3 = 5.32 Å, so the 2.305 Å nearest Li-Li hop is well-posed. In the 12-atom conventional
    cell it is exactly half a width and may go either way round (driver.tasks.hop_geometry)."""
    from ase.io import write

    path = tmp_path_factory.mktemp("li2o") / "Li2O_24.extxyz"
    write(path, bulk("OLi2", "fluorite", a=LI2O_A).repeat(2))
    return path


@pytest.fixture(autouse=True)
def _no_downloads(monkeypatch):
    """Tests never reach for the internet: named lookups fail at once instead of retrying."""
    monkeypatch.setenv("DRIVER_OFFLINE", "1")
    monkeypatch.delenv("DRIVER_MODELS_DIR", raising=False)


@pytest.fixture
def emt_family():
    """The EMT family (tests/models/emt_family.py) registered for one test: recipes can name it."""
    from driver.registry import register, unregister
    from tests.models.emt_family import FAMILY

    register(FAMILY)
    yield FAMILY
    unregister(FAMILY.name)


def emt_recipe(folder: Path, task: dict, **sections) -> Path:
    """A recipe on the EMT family: 32-atom fcc Cu, raw and corrected (s = 0.8)."""
    from ase.build import bulk
    from ase.io import write

    structure = folder / "Cu.extxyz"
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True).repeat(2)
    atoms.rattle(0.02, seed=1)
    write(structure, atoms)
    fields = {"structure": {"file": str(structure)}, "model": {"name": "emt", "dtype": "float64"},
              "correction": {"scale": 0.8}, "compare": True, "task": task}
    return write_recipe(folder, **{**fields, **sections})


@pytest.fixture(scope="session")
def shared_models_dir() -> Path:
    if not (SHARED_MODELS / M3GNET_NAME / "model.json").is_file():
        pytest.skip(f"M3GNet test weights absent: expected {SHARED_MODELS / M3GNET_NAME} (see ../shared/models/README.md)")
    return SHARED_MODELS


def build_small_mace(path: Path, seed: int = 0) -> Path:
    """A real ScaleShiftMACE (hidden 8x0e+8x1o, two interactions, r_max 4 Å), random weights."""
    # mace first: it relaxes torch.load for e3nn's pickled constants (../shared/models/README.md).
    from mace import modules  # isort: skip
    import torch
    from e3nn import o3

    torch.manual_seed(seed)
    atomic_numbers = [3, 7, 8, 14, 15, 26]
    block = modules.interaction_classes["RealAgnosticResidualInteractionBlock"]
    model = modules.ScaleShiftMACE(
        r_max=4.0, num_bessel=6, num_polynomial_cutoff=5, max_ell=2,
        interaction_cls=block, interaction_cls_first=block, num_interactions=2,
        num_elements=len(atomic_numbers), hidden_irreps=o3.Irreps("8x0e+8x1o"),
        MLP_irreps=o3.Irreps("8x0e"), atomic_energies=np.array([-1.9, -3.1, -4.9, -5.4, -5.4, -8.3]),
        avg_num_neighbors=8.0, atomic_numbers=atomic_numbers, correlation=3,
        gate=torch.nn.functional.silu, atomic_inter_scale=2.0, atomic_inter_shift=0.0,
    )
    torch.save(model, path)
    return path


@pytest.fixture(scope="session")
def small_mace_path(tmp_path_factory) -> Path:
    return build_small_mace(tmp_path_factory.mktemp("mace") / "small-test.model")


def _load(spec_fields: dict):
    from driver.models import load_model
    from driver.specs import ModelSpec

    return load_model(ModelSpec(**spec_fields))


@pytest.fixture(scope="session")
def chgnet_model():
    return _load({"name": "chgnet"})


@pytest.fixture(scope="session")
def m3gnet64_model(shared_models_dir):
    return _load({"name": "m3gnet", "models_dir": str(shared_models_dir), "dtype": "float64"})


@pytest.fixture(scope="session")
def mace64_model(small_mace_path):
    return _load({"name": "mace-mp-0", "checkpoint": str(small_mace_path), "dtype": "float64"})


@pytest.fixture
def rattled_si():
    atoms = bulk("Si", "diamond", a=5.43, cubic=True)
    atoms.rattle(0.08, seed=3)
    return atoms


def energy_forces_stress(calculator, atoms):
    """Energy, forces and stress of a copy of `atoms` through `calculator` (ASE conventions)."""
    atoms = atoms.copy()
    atoms.calc = calculator
    return atoms.get_potential_energy(), atoms.get_forces(), atoms.get_stress()


def write_recipe(folder: Path, filename: str = "recipe.yaml", **sections) -> Path:
    """A small valid MD recipe (CHGNet, 8-atom Si) with sections replaced or extended."""
    recipe = {
        "name": "test",
        "structure": {"file": str(SI_CIF)},
        "model": {"name": "chgnet"},
        "task": {"kind": "md", "ensemble": "nvt_langevin", "timestep_fs": 2.0, "steps": 10,
                 "temperature_K": 500, "seed": 1},
        "output": {"directory": str(folder / "out"), "write_every": 2, "flush_every": 2},
    }
    for key, value in sections.items():
        if key == "task" and isinstance(value, dict) and value.get("kind", "md") != "md":
            recipe[key] = value  # another task kind: none of the MD defaults apply
        elif isinstance(value, dict) and isinstance(recipe.get(key), dict):
            recipe[key] = {**recipe[key], **value}
        else:
            recipe[key] = value
    # None removes a key, at the top level or inside a section.
    recipe = {k: ({kk: vv for kk, vv in v.items() if vv is not None} if isinstance(v, dict) else v)
              for k, v in recipe.items() if v is not None}
    path = folder / filename
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return path


MEDIUM_MACE_DESCRIPTION = ("random-weight ScaleShiftMACE with MACE-MP-0 medium's architecture (128x0e+128x1o, "
                           "max_ell 3, r_max 6 Å, 2 interactions, correlation 3, 89 elements)")


def build_medium_mace(path: Path, seed: int = 0) -> Path:
    """MACE-MP-0 *medium*'s architecture with random weights: the same cost per step as the real
    model (whose weights cannot be had here). As mace's foundation-model recipe: hidden
    128x0e+128x1o, max_ell 3, 8 Bessel functions, r_max 6 Å, polynomial cutoff 5, radial MLP
    [64, 64, 64], MLP 16x0e, correlation 3, two interactions (the first non-residual), elements
    Z = 1..89."""
    from mace import modules  # isort: skip
    import torch
    from e3nn import o3

    torch.manual_seed(seed)
    atomic_numbers = list(range(1, 90))
    rng = np.random.default_rng(seed)
    model = modules.ScaleShiftMACE(
        r_max=6.0, num_bessel=8, num_polynomial_cutoff=5, max_ell=3,
        interaction_cls=modules.interaction_classes["RealAgnosticResidualInteractionBlock"],
        interaction_cls_first=modules.interaction_classes["RealAgnosticInteractionBlock"],
        num_interactions=2, num_elements=len(atomic_numbers), hidden_irreps=o3.Irreps("128x0e+128x1o"),
        MLP_irreps=o3.Irreps("16x0e"), atomic_energies=-rng.uniform(1.0, 9.0, len(atomic_numbers)),
        avg_num_neighbors=61.96, atomic_numbers=atomic_numbers, correlation=3,
        gate=torch.nn.functional.silu, radial_MLP=[64, 64, 64], atomic_inter_scale=0.8,
        atomic_inter_shift=0.0,
    )
    torch.save(model, path)
    return path
