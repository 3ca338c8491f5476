"""NEB: endpoints built right, the same barrier as ASE driven by hand, the exact barrier/s relation
for the scalar correction, and non-convergence reported as such."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
from ase.geometry import find_mic
from ase.io import read, write
from ase.mep import NEB
from ase.optimize import FIRE

from driver.cli import main
from driver.errors import InputError
from driver.tasks.neb_endpoints import (
    InterstitialHop,
    VacancyHop,
    file_endpoints,
    interstitial_hop_endpoints,
    vacancy_hop_endpoints,
)
from tests.conftest import LI2O_A, LI2O_HOP, ROOT, write_recipe

LI2O = ROOT / "recipes" / "structures" / "Li2O_antifluorite.cif"
SCALE = 0.627
NEB_TASK = {"kind": "neb", "vacancy_hop": LI2O_HOP, "n_images": 3, "fmax_eV_A": 0.02, "max_steps": 400}


@pytest.fixture(scope="module")
def li2o_neb(tmp_path_factory, li2o_cell):
    folder = tmp_path_factory.mktemp("neb")
    recipe = write_recipe(folder, structure={"file": str(li2o_cell)}, correction={"scale": SCALE}, compare=True,
                          task=NEB_TASK)
    assert main(["run", str(recipe)]) == 0
    return folder / "out"


def _neb(path):
    with h5py.File(path, "r") as handle:
        group = handle["results/neb"]
        return {key: group[key][()] for key in group} | dict(group.attrs)


def test_vacancy_hop_endpoints(li2o_cell):
    host = read(li2o_cell)
    initial, final, info = vacancy_hop_endpoints(host, VacancyHop(**LI2O_HOP))
    assert len(initial) == len(final) == len(host) - 1
    assert info["hop_length_A"] == pytest.approx(LI2O_A / 2, abs=1e-6)  # nearest Li-Li along <100>
    # Six neighbours at the same distance: the lowest index wins, whatever the round-off.
    assert info["hop_to_site"] == min(i for i in range(len(host)) if host[i].symbol == "Li" and i != 1
                                      and host.get_distance(1, i, mic=True) < LI2O_A / 2 + 1e-3)
    moved = np.linalg.norm(final.positions - initial.positions, axis=1)
    assert np.count_nonzero(moved > 1e-9) == 1 and moved.max() == pytest.approx(info["hop_length_A"])
    assert np.argmax(moved) == info["hop_atom"]  # its index once the vacancy is made
    with pytest.raises(InputError, match="task.vacancy_hop.from: atom 0 is O, not Li"):
        vacancy_hop_endpoints(host, VacancyHop(species="Li", **{"from": 0}))
    with pytest.raises(InputError, match="site 99 does not exist"):
        vacancy_hop_endpoints(host, VacancyHop(species="Li", **{"from": 99}))


def test_interstitial_hop_endpoints_take_the_short_way_round():
    """An extra Li between two octahedral sites; the hop crosses the cell boundary, and the final
    endpoint is placed by the minimum image so the band does not cross the whole cell."""
    host = read(LI2O)  # conventional cubic cell, a = 4.61 Å
    hop = InterstitialHop(species="Li", **{"from": [0.5, 0.5, 0.95], "to": [0.5, 0.5, 0.05]})
    initial, final, info = interstitial_hop_endpoints(host, hop)
    assert len(initial) == len(final) == len(host) + 1 and initial.get_chemical_symbols()[-1] == "Li"
    assert info["hop_length_A"] == pytest.approx(0.1 * 4.61, abs=1e-3)
    np.testing.assert_allclose(initial.positions[:-1], final.positions[:-1])
    assert np.linalg.norm(final.positions[-1] - initial.positions[-1]) == pytest.approx(info["hop_length_A"])


def test_a_concerted_hop_from_files_names_its_lowest_index_atom(li2o_cell, tmp_path):
    """Two atoms moving the same distance up to round-off: the hopping atom is the lower index,
    not whichever round-off made longer."""
    initial = read(li2o_cell)
    final = initial.copy()
    final.positions[3] += [0.5, 0, 0]
    final.positions[7] += [0.5 + 1e-9, 0, 0]
    write(tmp_path / "final.traj", final)  # binary: the 1e-9 survives
    _, _, info = file_endpoints(initial, str(tmp_path / "final.traj"))
    assert info["hop_atom"] == 3 and info["hop_length_A"] == pytest.approx(0.5)


def test_barrier_equals_ase_driven_by_hand(li2o_neb, chgnet_model):
    """Same relaxed endpoints, same calculator, ASE's own NEB/IDPP/FIRE: barrier within 1 meV."""
    ours = _neb(li2o_neb / "raw.h5")
    band = read(li2o_neb / "raw.neb.extxyz", ":")
    images = [band[0].copy() for _ in range(4)] + [band[-1].copy()]
    for image in images:
        image.calc = chgnet_model.calculator
    neb = NEB(images, climb=True, method="improvedtangent", allow_shared_calculator=True)
    neb.interpolate(method="idpp", mic=True)
    assert FIRE(neb, logfile=None).run(fmax=0.02, steps=400)
    energies = [image.get_potential_energy() for image in images]
    assert ours["barrier_eV"] == pytest.approx(max(energies) - energies[0], abs=1e-3)
    assert ours["converged"]


def test_corrected_barrier_is_raw_over_s_on_the_same_path(li2o_neb):
    raw, corrected = _neb(li2o_neb / "raw.h5"), _neb(li2o_neb / "corrected.h5")
    assert raw["barrier_eV"] > 0.05  # a real barrier, not a flat path
    # Independent optimisations to fmax 0.02 eV/Å: equal up to that tolerance.
    assert corrected["barrier_eV"] * SCALE == pytest.approx(raw["barrier_eV"], abs=3e-3)
    saddle = raw["saddle_image"]
    assert corrected["saddle_image"] == saddle
    # The same path: every image's atoms within the optimisation tolerance, modulo lattice
    # translations (an atom wrapped across a face is the same atom at the same place).
    cell = read(li2o_neb / "raw.neb.extxyz").cell
    for image in range(len(raw["image_positions_A"])):
        _, apart = find_mic(corrected["image_positions_A"][image] - raw["image_positions_A"][image], cell, pbc=True)
        assert apart.max() < (0.01 if image == 0 else 0.03), (image, apart.max())
    # Each variant relaxed its endpoints on its own surface: the same minimum within the
    # tolerance, and E' = E0 at the corrected job's own initial endpoint.
    assert corrected["image_energies_eV"][0] == pytest.approx(raw["image_energies_eV"][0], abs=2e-3)
    with h5py.File(li2o_neb / "corrected.h5") as f:
        assert corrected["image_energies_eV"][0] == pytest.approx(f["parameters"].attrs["reference_energy_eV"], abs=1e-9)


def test_the_wrapper_divides_the_barrier_by_s_on_one_path(li2o_neb, chgnet_model):
    """The exact identity, of the correction wrapper: on the same images, E' - E'_0 = (E - E_0)/s."""
    from driver.correction import SofteningCorrection

    band = read(li2o_neb / "raw.neb.extxyz", ":")
    raw = np.array([r.energy for r in chgnet_model.evaluate(band, ("energy",))])
    e0 = raw[0]
    corrected = np.array([r.energy for r in SofteningCorrection(chgnet_model, SCALE, e0).evaluate(band, ("energy",))])
    np.testing.assert_allclose(corrected - e0, (raw - e0) / SCALE, rtol=1e-12, atol=1e-12)
    assert (corrected.max() - corrected[0]) == pytest.approx((raw.max() - raw[0]) / SCALE, rel=1e-12)


def test_outputs_record_convergence_history_and_mep(li2o_neb):
    raw = _neb(li2o_neb / "raw.h5")
    assert raw["iteration_energies_eV"].shape == (raw["iterations"], 5)
    assert raw["iteration_max_force_eV_A"].shape == (raw["iterations"], 3)
    assert raw["iteration_max_force_eV_A"][-1].max() <= 0.02 + 1e-9
    # One model call per optimizer step (plus the endpoints), although ASE asks for the band's
    # forces several times per step; every row of the history is a different band.
    assert raw["model_calls"] == raw["iterations"] + 1
    # (energies and max forces together: float32 energies alone can repeat over a tiny step)
    history = np.hstack([raw["iteration_energies_eV"], raw["iteration_max_force_eV_A"]])
    assert np.all(np.abs(np.diff(history, axis=0)).max(axis=1) > 0)
    assert raw["reaction_coordinate_A"][0] == 0 and np.all(np.diff(raw["reaction_coordinate_A"]) > 0)
    assert raw["spline_energies_eV"].max() == pytest.approx(raw["barrier_spline_eV"], abs=1e-6)
    # A symmetric hop between equivalent sites: forward and backward barriers agree.
    assert raw["backward_barrier_eV"] == pytest.approx(raw["barrier_eV"], abs=5e-3)
    summary = json.loads((li2o_neb / "summary.json").read_text())
    assert {job["job"]: job["status"] for job in summary["jobs"]} == {"raw": "completed", "corrected": "completed"}
    assert all(job["suspect"] is False and job["suspect_reasons"] == [] for job in summary["jobs"])
    # Relaxed and stayed on its site: the vacancy's neighbour leans ~0.2 Å into it in this 23-atom
    # cell (one vacancy per 8 Li), far from the 0.3 x 2.305 Å that would make the job suspect.
    assert all(0.05 < job["initial_endpoint_hop_shift_A"] < 0.3 for job in summary["jobs"])
    with h5py.File(li2o_neb / "raw.h5", "r") as handle:  # DESIGN.md: every dataset states its unit
        units = {key: handle["results/neb"][key].attrs.get("unit") for key in handle["results/neb"]}
    assert all(units.values()), f"datasets without a unit: {[k for k, u in units.items() if not u]}"
    assert units["image_energies_eV"] == "eV" and units["reaction_coordinate_A"] == "Angstrom"
    assert units["iteration_max_force_eV_A"] == "eV Angstrom-1"
    assert all(job["barrier_eV"] > 0 for job in summary["jobs"])


def test_batched_and_one_by_one_give_the_same_path(tmp_path, li2o_cell, small_mace_path):
    barriers = {}
    for batched in (True, False):
        folder = tmp_path / str(batched)
        folder.mkdir()
        recipe = write_recipe(folder, structure={"file": str(li2o_cell)},
                              model={"name": "mace-mp-0", "checkpoint": str(small_mace_path), "dtype": "float64"},
                              # climb off: on a random-weight MACE the two mirror images can tie for
                              # the highest, and round-off would pick the climbing one
                              task={**NEB_TASK, "batched": batched, "max_steps": 30, "fmax_eV_A": 0.05,
                                    "climb": False})
        main(["run", str(recipe)])
        barriers[batched] = _neb(folder / "out" / "raw.h5")
    np.testing.assert_allclose(barriers[True]["iteration_energies_eV"], barriers[False]["iteration_energies_eV"],
                               atol=1e-8)


@pytest.mark.parametrize("optimizer", ["fire", "ode"])  # ASE's ODE optimiser returns normally when out of steps
def test_not_converged_is_exit_1_with_the_last_path_kept(tmp_path, li2o_cell, capsys, optimizer):
    recipe = write_recipe(tmp_path, structure={"file": str(li2o_cell)},
                          task={**NEB_TASK, "max_steps": 2, "fmax_eV_A": 0.001, "optimizer": optimizer})
    assert main(["run", str(recipe)]) == 1
    assert "NOT converged" in capsys.readouterr().out
    job = json.loads((tmp_path / "out" / "summary.json").read_text())["jobs"][0]
    assert job["status"] == "not converged" and job["converged"] is False
    assert len(read(tmp_path / "out" / "raw.neb.extxyz", ":")) == 5


@pytest.mark.parametrize("task, expected", [
    ({"kind": "neb"}, "task: give exactly one of 'final', 'vacancy_hop' or 'interstitial_hop'"),
    ({"kind": "neb", "final": "nope.cif"}, "task.final: final endpoint file not found"),
    ({"kind": "neb", "vacancy_hop": {"species": "Li"}}, "task.vacancy_hop.from: is required"),
    ({"kind": "neb", "vacancy_hop": {"species": "Li", "from": 1}, "optimizer": "lbfgs"}, "task.optimizer: must be one of"),
    ({"kind": "neb", "vacancy_hop": LI2O_HOP, "endpoint_max_shift_fraction": 0},
     "task.endpoint_max_shift_fraction:"),
    ({"kind": "neb", "vacancy_hop": LI2O_HOP, "checkpoint_every": 0}, "task.checkpoint_every:"),
])
def test_bad_neb_recipes(tmp_path, li2o_cell, capsys, task, expected):
    recipe = write_recipe(tmp_path, structure={"file": str(li2o_cell)}, task=task)
    assert main(["validate", str(recipe)]) == 2
    assert expected in capsys.readouterr().err


def test_unreadable_final_endpoint_is_one_line(tmp_path, capsys, li2o_cell):
    final = tmp_path / "final.cif"
    final.write_text("data_broken\nthis is not a crystal\n")
    recipe = write_recipe(tmp_path, structure={"file": str(li2o_cell)}, task={"kind": "neb", "final": str(final)})
    assert main(["run", str(recipe)]) == 2
    # stderr also carries the model's load banner; the error itself is one line.
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and f"{final}: task.final: cannot read structure (" in errors[0]


def test_compare_on_the_real_neb_run(li2o_neb, capsys):
    """driver compare on the raw/corrected NEB run: the MEP plot, the report, and the barrier/s
    relation measured against its prediction."""
    assert main(["compare", str(li2o_neb)]) == 0
    printed = capsys.readouterr().out
    raw = _neb(li2o_neb / "raw.h5")
    line = next(line for line in printed.splitlines() if "NEB barrier" in line)
    assert f"predicted raw/s = {raw['barrier_eV'] / SCALE:.4f} eV" in line
    assert (li2o_neb / "compare_neb.png").stat().st_size > 1000
    assert "compare_neb.png" in (li2o_neb / "report.md").read_text()


def _validate_error(capsys, recipe) -> str:
    assert main(["validate", str(recipe)]) == 2
    errors = capsys.readouterr().err.strip().splitlines()
    assert len(errors) == 1
    return errors[0]


def test_half_cell_vacancy_hop_is_refused_with_the_supercell_that_fixes_it(tmp_path, capsys):
    """The nearest Li-Li hop of the 12-atom conventional Li2O cell is exactly half the cell: it can
    go either way round, so validate (and run, before the model loads) refuse it."""
    recipe = write_recipe(tmp_path, structure={"file": str(LI2O)},
                          task={**NEB_TASK, "vacancy_hop": {"species": "Li", "from": 4}})
    error = _validate_error(capsys, recipe)
    assert f"{LI2O}: task.vacancy_hop: the 2.305 Å hop is ill-posed" in error
    assert "4.610 x 4.610 x 4.610 Å" in error and "minimum image is ambiguous" in error
    assert error.endswith("use structure.supercell: [2, 2, 2] (or larger)")
    assert main(["run", str(recipe)]) == 2 and not (tmp_path / "out" / "raw.h5").exists()
    assert "the 2.305 Å hop is ill-posed" in capsys.readouterr().err
    # The suggestion counts the supercell already given, and makes the hop well-posed.
    recipe = write_recipe(tmp_path, structure={"file": str(LI2O), "supercell": [2, 1, 1]},
                          task={**NEB_TASK, "vacancy_hop": {"species": "Li", "from": 4}})
    assert _validate_error(capsys, recipe).endswith("use structure.supercell: [2, 2, 2] (or larger)")
    recipe = write_recipe(tmp_path, structure={"file": str(LI2O), "supercell": [2, 2, 2]},
                          task={**NEB_TASK, "vacancy_hop": {"species": "Li", "from": 4}})
    assert main(["validate", str(recipe)]) == 0


def test_ill_posed_interstitial_and_file_hops_are_refused(tmp_path, capsys, caplog):
    half = {"species": "Li", "from": [0.25, 0.5, 0.5], "to": [0.75, 0.5, 0.5]}
    error = _validate_error(capsys, write_recipe(tmp_path, structure={"file": str(LI2O)},
                                                 task={"kind": "neb", "interstitial_hop": half}))
    assert "task.interstitial_hop: the 2.305 Å hop is ill-posed" in error and "ambiguous" in error
    assert "divided by the added repeats" in error  # interstitial fractions are of the repeated cell
    # Not ambiguous (the other image is 11.3 Å away) but longer than half the 4.61 Å widths: a warning.
    long = {"species": "Li", "from": [0.4, 0.5, 0.5], "to": [0.4 + 2.5 / (3 * LI2O_A), 0.5, 0.5]}
    with caplog.at_level("WARNING"):
        assert main(["validate", str(write_recipe(tmp_path, structure={"file": str(LI2O), "supercell": [3, 1, 1]},
                                                  task={"kind": "neb", "interstitial_hop": long}))]) == 0
    assert "the 2.500 Å hop is longer than half the narrowest perpendicular width of the cell (13.830 x 4.610 x " \
           "4.610 Å)" in caplog.text and "use structure.supercell: [3, 2, 2] (or larger)" in caplog.text
    # Endpoint files whose hopping atom moves half a cell into the vacancy.
    initial, final, _ = vacancy_hop_endpoints(read(LI2O), VacancyHop(species="Li", **{"from": 4}))
    initial_file, final_file = tmp_path / "initial.extxyz", tmp_path / "final.extxyz"
    write(initial_file, initial)
    write(final_file, final)
    error = _validate_error(capsys, write_recipe(tmp_path, structure={"file": str(initial_file)},
                                                 task={"kind": "neb", "final": str(final_file)}))
    assert f"{initial_file}: task.final: the 2.305 Å hop is ill-posed" in error
    assert error.endswith("with the final endpoint file built in the same supercell")
    # A final endpoint with a NaN position: one line, not a traceback.
    final.positions[0, 0] = np.nan
    write(final_file, final)
    error = _validate_error(capsys, write_recipe(tmp_path, structure={"file": str(initial_file)},
                                                 task={"kind": "neb", "final": str(final_file)}))
    assert f"{final_file}: task.final: atom 0 (O) has a non-finite position" in error


def test_a_hop_longer_than_6_A_is_warned_about(tmp_path, capsys, caplog):
    """A 2-atom Li cell of 100 Å whose `nearest` Li is 8 Å away: well-posed, but no neighbour hop."""
    from ase import Atoms

    structure = tmp_path / "Li2.extxyz"
    write(structure, Atoms("Li3", positions=[[0, 0, 0], [8, 0, 0], [50, 50, 50]], cell=[100] * 3, pbc=True))
    recipe = write_recipe(tmp_path, structure={"file": str(structure)},
                          task={"kind": "neb", "vacancy_hop": {"species": "Li", "from": 0}})
    with caplog.at_level("WARNING"):
        assert main(["validate", str(recipe)]) == 0
    assert "task.vacancy_hop: warning: the hop is 8.00 Å long, more than 6 Å" in caplog.text
