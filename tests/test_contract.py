"""The output contract (issue 26): every task kind run on the EMT family, raw and corrected, then
`driver compare`, snapshotting what users and their scripts read: the keys (and JSON types) of
summary.json, every /results/<kind> dataset's name, shape, dtype and unit with the group's
attributes (names and types), the files a run leaves, and the lines `driver run`, `driver compare` and
report.md show, with numbers and paths masked. It must pass before and after a refactor of how
tasks return results: that refactor may change no file format and no user-visible output.

The snapshots live in tests/contract/<kind>.json. After a deliberate change of the contract,
regenerate them and review the diff:

    DRIVER_UPDATE_CONTRACT=1 python -m pytest tests/test_contract.py

Without that variable a missing snapshot fails, so the test never passes vacuously.
"""

from __future__ import annotations

import difflib
import json
import os
import re
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.calculators.singlepoint import SinglePointCalculator
from ase.io import write

from driver.cli import main
from driver.tasks import task_kinds
from tests.conftest import emt_recipe

CONTRACT_DIR = Path(__file__).parent / "contract"
UPDATE_VARIABLE = "DRIVER_UPDATE_CONTRACT"
NUMBER = re.compile(r"(?<![\w.^])[-+]?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?")

# Small, fast tasks on 32-atom Cu; `batched: false` where a task has it, so no timing can choose a path.
TASKS: dict[str, dict[str, Any]] = {
    # 100 frames of a solid: compare's estimator reads "not diffusive" (no D, no Arrhenius fit).
    "md": {"kind": "md", "ensemble": "nvt_langevin", "timestep_fs": 1.0, "steps": 100,
           "temperature_K": [300, 600], "seed": 1},
    # The perfect cell (see _structure): a 1-atom primitive cell, one displaced supercell.
    "phonons": {"kind": "phonons", "supercell": [1, 1, 1], "band_points": 5, "mesh": [4, 4, 4],
                "t_step_K": 100.0, "batched": False},
    "neb": {"kind": "neb", "vacancy_hop": {"species": "Cu", "from": 0}, "n_images": 3, "fmax_eV_A": 0.1,
            "endpoint_fmax_eV_A": 0.05, "batched": False},
    "relax": {"kind": "relax", "fmax_eV_A": 0.05},
    "eos": {"kind": "eos", "n_points": 5, "strain": 0.02, "relax_positions": False},
    "elastic": {"kind": "elastic", "normal_strains": [-0.005, 0.005], "shear_strains": [-0.005, 0.005],
                "fmax_eV_A": 0.01, "relax": {"fmax_eV_A": 0.01, "relax_cell": False}},
    "single_point": {"kind": "single_point", "chunk_size": 2, "stress": True, "batched": False},
    # Two short segments per temperature of a solid: "not diffusive", target not reached.
    "diffusion": {"kind": "diffusion", "species": ["Cu"], "temperatures_K": [300, 600], "timestep_fs": 1.0,
                  "min_ps": 0.5, "segment_ps": 0.25, "max_ps": 0.75, "seed": 1},
}


def mask(text: str, tmp: Path) -> list[str]:
    """The lines of `text` with the test's folder and every number replaced: the contract is the
    wording and layout of the output, not digits that round-off, the CPU or a clock decide (the
    sign goes too: Γ's acoustic modes print 0.00 or -0.00 by round-off). Exponents after ^ (Å^3) are
    units, kept."""
    text = text.replace(str(tmp), "<tmp>")
    return [NUMBER.sub("<n>", line).rstrip() for line in text.splitlines()]


def json_types(mapping: dict[str, Any]) -> dict[str, str]:
    """Each key with its JSON type: a typed result must keep both."""
    return {key: "null" if value is None else type(value).__name__ for key, value in mapping.items()}


def results_layout(path: Path, kind: str) -> dict[str, Any]:
    """What a job file holds for scripts: /results/<kind> (datasets with shape, dtype and unit;
    attributes with their type: None is stored as the string 'none'), the groups under /results,
    and the root and /parameters attribute names."""
    datasets: dict[str, dict[str, Any]] = {}
    with h5py.File(path, "r") as handle:
        group = handle[f"results/{kind}"]

        def visit(name: str, item: Any) -> None:
            if isinstance(item, h5py.Dataset):
                unit = item.attrs.get("unit")
                shape: list[int | str] = list(item.shape)
                if name.startswith("iteration_"):  # one row per optimizer iteration: round-off can add one
                    shape[0] = "<iterations>"
                datasets[name] = {"shape": shape, "dtype": f"{item.dtype.kind}{item.dtype.itemsize}",
                                  "unit": unit.decode() if isinstance(unit, bytes) else unit}

        group.visititems(visit)
        attributes = {name: "str" if isinstance(value, str) else np.asarray(value).dtype.kind
                      for name, value in group.attrs.items()}
        return {"results_groups": sorted(handle["results"]), "attributes": attributes,
                "datasets": datasets, "root_attributes": sorted(handle.attrs),
                "parameters": sorted(handle["parameters"].attrs)}


def _structure(folder: Path) -> dict[str, str]:
    """The perfect 32-atom cell: phonons on emt_recipe's rattled one would be P1 with 96 bands."""
    path = folder / "perfect-Cu.extxyz"
    write(path, bulk("Cu", "fcc", a=3.6, cubic=True).repeat(2))
    return {"file": str(path)}


def _labelled_frames(folder: Path) -> str:
    """Three rattled frames labelled by EMT itself: the single points' errors-vs-labels path."""
    frames = []
    for seed in range(3):
        atoms = bulk("Cu", "fcc", a=3.6, cubic=True).repeat(2)
        atoms.rattle(0.05, seed=seed)
        atoms.calc = EMT()
        atoms.calc = SinglePointCalculator(atoms, energy=atoms.get_potential_energy(), forces=atoms.get_forces())
        frames.append(atoms)
    path = folder / "labelled.extxyz"
    write(path, frames)
    return str(path)


def recipe_for(kind: str, folder: Path) -> Path:
    """The kind's recipe on emt_recipe's Cu (raw and corrected, s = 0.8, compare: true)."""
    task = dict(TASKS[kind])
    sections: dict[str, Any] = {"output": {"write_every": 1, "flush_every": 50}}
    if kind == "phonons":
        sections["structure"] = _structure(folder)
    if kind == "single_point":
        task["frames"] = _labelled_frames(folder)
    return emt_recipe(folder, task, **sections)


# A solid below melting never reaches a diffusion target: the run exits 1 ("target not reached").
EXIT_CODE = {"diffusion": 1}


def contract_of(kind: str, tmp: Path, capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    """Run the kind's recipe and `driver compare`; what they leave and print, as the snapshot."""
    out = tmp / "out"
    assert main(["run", str(recipe_for(kind, tmp)), "--out", str(out)]) == EXIT_CODE.get(kind, 0)
    run_stdout = capsys.readouterr().out
    assert main(["compare", str(out)]) == 0
    compare_stdout = capsys.readouterr().out
    summary = json.loads((out / "summary.json").read_text())
    jobs = summary["jobs"]
    return {
        "summary": {"top": json_types(summary), "jobs": {job["job"]: json_types(job) for job in jobs}},
        "files": {job["file"]: results_layout(out / job["file"], kind) for job in jobs},
        "output_folder": sorted(path.name for path in out.iterdir()),
        "run_stdout": mask(run_stdout, tmp),
        "compare_stdout": mask(compare_stdout, tmp),
        "report_md": mask((out / "report.md").read_text(), tmp),
    }


def test_every_task_kind_has_a_contract_recipe() -> None:
    """A new task kind must join the contract (and get its snapshot) before it ships."""
    assert sorted(TASKS) == sorted(task_kinds())


@pytest.mark.usefixtures("emt_family")
@pytest.mark.parametrize("kind", task_kinds())
def test_contract(kind: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Summary keys, /results layout and output lines of `kind` equal its stored snapshot."""
    text = json.dumps(contract_of(kind, tmp_path, capsys), indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    path = CONTRACT_DIR / f"{kind}.json"
    if os.environ.get(UPDATE_VARIABLE) == "1":
        CONTRACT_DIR.mkdir(exist_ok=True)
        path.write_text(text, encoding="utf-8")
        return
    if not path.is_file():
        pytest.fail(f"{path}: no contract snapshot; generate it with {UPDATE_VARIABLE}=1 and commit it")
    stored = path.read_text(encoding="utf-8")
    if text != stored:
        diff = difflib.unified_diff(stored.splitlines(), text.splitlines(), str(path), "this run", lineterm="")
        pytest.fail(f"the {kind} output contract changed; if on purpose, regenerate with {UPDATE_VARIABLE}=1 "
                    "and review the diff:\n" + "\n".join(diff), pytrace=False)
