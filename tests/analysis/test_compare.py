"""`driver compare`: the diffusivity estimator on synthetic data with known answers, then the
command on a short real CHGNet run (MD at two temperatures, and phonons), and its one-line input
errors. (Free particles under the driver's own Langevin dynamics: tests/test_diffusion.py.)"""

from __future__ import annotations

import json
import math

import h5py
import numpy as np
import pytest
from ase import Atoms

from driver.analysis.arrhenius import BOLTZMANN_EV_K, fit_arrhenius, interval, nernst_einstein_S_cm
from driver.analysis.diffusion import A2_PER_FS_TO_CM2_PER_S, msd_time_averaged, unwrap
from driver.analysis.diffusivity import estimate_diffusion
from driver.cli import main
from driver.output import H5MDWriter
from driver.tasks.md import MDResult
from tests.conftest import write_recipe

PNG = b"\x89PNG\r\n\x1a\n"
SCALE = 0.627
EA, D0 = 0.30, 0.1  # eV, cm²/s: the synthetic Arrhenius law (slowest walkers still cross sites)
BOX = 15.0


def _walk(d_cm2_s: float, n_walkers: int, frames: int, dt_fs: float, seed: int) -> np.ndarray:
    """Brownian walkers: each step Gaussian with variance 2 D dt per Cartesian direction."""
    rng = np.random.default_rng(seed)
    d_a2_fs = d_cm2_s / A2_PER_FS_TO_CM2_PER_S
    steps = rng.normal(0.0, math.sqrt(2 * d_a2_fs * dt_fs), size=(frames - 1, n_walkers, 3))
    start = rng.uniform(0, BOX, size=(1, n_walkers, 3))
    return np.concatenate([start, start + np.cumsum(steps, axis=0)])


def _write_walk_h5(path, d_cm2_s: float, temperature: float, variant: str, *, n_walkers=500, n_host=100,
                   frames=400, dt_fs=25.0, seed=0, wrap=False) -> None:
    """Li walkers in a still N host (Li3N-like charges), written as the driver writes MD."""
    walkers = _walk(d_cm2_s, n_walkers, frames, dt_fs, seed)
    host = np.random.default_rng(seed + 1000).uniform(0, BOX, size=(n_host, 3))
    atoms = Atoms(["Li"] * n_walkers + ["N"] * n_host, positions=np.vstack([walkers[0], host]),
                  cell=[BOX] * 3, pbc=True)
    provenance = {"variant": variant, "temperature_K": temperature,
                  "softening_scale": SCALE if variant == "corrected" else None}
    writer = H5MDWriter(path, atoms, provenance=provenance, flush_every=100, velocities=False, forces=False)
    energies = np.random.default_rng(seed + 2000).normal(-1.0, 0.01, frames)  # stationary: nothing to discard
    for frame in range(frames):
        positions = np.vstack([walkers[frame], host])
        atoms.positions = positions % BOX if wrap else positions
        writer.append(frame * 5, frame * dt_fs, atoms, {"temperature": temperature,
                                                       "potential_energy": float(energies[frame])})
    writer.write_result(MDResult(steps=5 * (frames - 1), frames=frames, mean_temperature_K=temperature,
                                 final_potential_energy_eV=-1.0 * (frames - 1),
                                 conserved_energy_drift_eV_per_atom_per_ps=None, rms_displacement_A=1.0,
                                 ensemble="nvt_langevin"))
    writer.close("completed")


def _arrhenius_d(temperature: float, ea: float = EA, d0: float = D0) -> float:
    return d0 * math.exp(-ea / (BOLTZMANN_EV_K * temperature))


def test_fft_msd_equals_direct_time_origin_average():
    positions = np.random.default_rng(3).normal(size=(30, 4, 3)).cumsum(axis=0)
    direct = [np.mean([np.sum((positions[t + k] - positions[t]) ** 2, axis=1).mean() for t in range(30 - k)])
              for k in range(30)]
    np.testing.assert_allclose(msd_time_averaged(positions), direct, rtol=1e-10, atol=1e-10)


def test_random_walk_diffusivity_recovered_and_unwrapping(tmp_path):
    """D of 400 Brownian walkers among 100 still host atoms: the 95% interval holds the true D,
    which it pins within 10%; wrapped positions, unwrapped by minimum image, give the same D."""
    true_d = 2e-5
    walkers = _walk(true_d, 400, 1000, 10.0, seed=11)
    host = np.random.default_rng(12).uniform(0, BOX, size=(100, 3))
    positions = np.concatenate([walkers, np.repeat(host[None], len(walkers), axis=0)], axis=1)
    times = np.arange(1000) * 10.0
    cells = np.repeat(np.eye(3)[None] * BOX, len(times), axis=0)
    mobile = np.arange(500) < 400
    estimate = estimate_diffusion(times, positions, cells, mobile)
    low, high = estimate.interval_cm2_s
    assert estimate.usable and low <= true_d <= high and estimate.relative_half_width < 0.1
    wrapped = estimate_diffusion(times, positions % BOX, cells, mobile)
    assert wrapped.diffusivity_cm2_s == pytest.approx(estimate.diffusivity_cm2_s, rel=1e-9)
    np.testing.assert_allclose(unwrap(walkers % BOX, cells) - (walkers % BOX)[0], walkers - walkers[0], atol=1e-9)
    print(f"random walk: D = {estimate.diffusivity_cm2_s:.4g} [{low:.4g}, {high:.4g}] cm²/s (true {true_d:g})")


def test_two_point_arrhenius_is_exact():
    samples = [np.full(100, _arrhenius_d(600)) * (1 + 1e-9 * np.arange(100)),
               np.full(100, _arrhenius_d(900)) * (1 + 1e-9 * np.arange(100))]
    fit = fit_arrhenius([600.0, 900.0], samples)
    assert np.median(fit.activation_energy_samples_eV) == pytest.approx(EA, rel=1e-6)
    assert fit.p_value is None and not fit.curved
    assert fit_arrhenius([600.0], samples[:1]) is None


def test_nernst_einstein_units():
    """One Li+ per 10 Å³ (1e23 cm⁻³), D = 1e-5 cm²/s, 300 K: n e² D / kT = 6.2 S/cm."""
    sigma = nernst_einstein_S_cm(1e-5, 1, 10.0, 1.0, 300.0)
    assert sigma == pytest.approx(1e23 * 1.602176634e-19**2 * 1e-5 / (1.380649e-23 * 300), rel=1e-12)


@pytest.fixture(scope="module")
def synthetic_md_run(tmp_path_factory):
    """Raw at 600/800/1000 K following D0 exp(-Ea/kT); corrected following the scalar-correction
    prediction D'(T) = D_raw(sT)/sqrt(s). Host wrapped nowhere; corrected walkers stored wrapped."""
    out = tmp_path_factory.mktemp("synthetic")
    jobs = []
    for number, temperature in enumerate((600.0, 800.0, 1000.0)):
        for variant in ("raw", "corrected"):
            d = _arrhenius_d(temperature) if variant == "raw" else _arrhenius_d(SCALE * temperature) / math.sqrt(SCALE)
            name = f"{variant}-T{temperature:g}K"
            _write_walk_h5(out / f"{name}.h5", d, temperature, variant, seed=10 * number + (variant == "raw"),
                           wrap=variant == "corrected")
            jobs.append({"job": name, "file": f"{name}.h5", "variant": variant, "temperature_K": temperature,
                         "softening_scale": SCALE if variant == "corrected" else None, "status": "completed"})
    (out / "summary.json").write_text(json.dumps({"recipe": "synthetic", "jobs": jobs}))
    return out


def test_compare_recovers_synthetic_arrhenius(synthetic_md_run, capsys):
    from driver.compare import compare_run

    comparison = compare_run(synthetic_md_run)
    md = comparison.sections["md"]
    raw, corrected = md.arrhenius[("raw", "Li")], md.arrhenius[("corrected", "Li")]
    ea_raw, ea_corrected = interval(raw.activation_energy_samples_eV, 0.95), interval(
        corrected.activation_energy_samples_eV, 0.95)
    assert ea_raw[0] <= EA <= ea_raw[2] and ea_raw[2] - ea_raw[0] < 0.1
    assert ea_corrected[0] <= EA / SCALE <= ea_corrected[2]
    for run in md.runs:
        li = run.species["Li"].estimate
        truth = _arrhenius_d(run.temperature_K) if run.variant == "raw" else \
            _arrhenius_d(SCALE * run.temperature_K) / math.sqrt(SCALE)
        assert li.interval_cm2_s[0] <= truth <= li.interval_cm2_s[1]
        assert abs(li.diffusivity_cm2_s / truth - 1) < 0.1
        assert run.species["Li"].charge_e == 1 and run.species["N"].charge_e == -3
        still = run.species["N"].estimate  # the host never moves: no D, a bound far below Li's
        assert still.verdict == "not diffusive" and still.hops == 0 and still.diffusivity_cm2_s is None
        assert still.upper_bound_cm2_s < 1e-2 * truth
        assert run.species["Li"].conductivity_S_cm[1] == pytest.approx(
            nernst_einstein_S_cm(li.diffusivity_cm2_s, 500, BOX**3, 1, run.temperature_K), rel=1e-9)
    predicted = [line for line in comparison.relations if "predicted D_raw(s·T" in line and line.startswith("MD Li")]
    assert len(predicted) == 3
    ratios = [float(line.rsplit("ratio ", 1)[1].rstrip(")")) for line in predicted]
    assert all(abs(r - 1) < 0.15 for r in ratios), ratios
    assert any("predicted raw Ea/s" in line for line in comparison.relations)
    assert not any(line.startswith("MD N at") and "vs predicted" in line for line in comparison.relations)
    print(f"synthetic Arrhenius: raw Ea = {ea_raw[1]:.4f} [{ea_raw[0]:.4f}, {ea_raw[2]:.4f}] eV (true {EA}); "
          f"predicted/measured D ratios {ratios}")


def _md_run(variant: str, temperature: float, d_cm2_s: dict[str, float | None]):
    """An MDAnalysis with only what the relations read: each species' estimate, diffusive with a
    narrow posterior around D, or not diffusive where D is None."""
    from driver.analysis.diffusivity import DiffusionEstimate, Verdict
    from driver.analysis.md import MDAnalysis, SpeciesDiffusion

    def estimate(d):
        if d is None:
            return DiffusionEstimate(Verdict.NOT_DIFFUSIVE, "0 site-to-site hops", 0.95, None, None, 1e-9, 0, 0.0,
                                     2.0, 1.0, 0.0, None)
        samples = d * np.exp(np.random.default_rng(0).normal(0, 0.01, 500))
        return DiffusionEstimate(Verdict.DIFFUSIVE, "", 0.95, d, (0.98 * d, 1.02 * d), None, 50, 2.0, 2.0, 1.0,
                                 0.0, (100.0, 1000.0), samples_cm2_s=samples)

    species = {symbol: SpeciesDiffusion(symbol, 1, estimate(d), 0.0, None) for symbol, d in d_cm2_s.items()}
    return MDAnalysis(f"{variant}-T{temperature:g}K", variant, temperature, SCALE if variant == "corrected" else None,
                      temperature, 1000.0, np.zeros(1), species, None)


def test_md_relation_counts_only_diffusive_raw_temperatures():
    """Raw Li is diffusive at 600 K only: one usable temperature, no Arrhenius fit, and the message
    says 1, not 3; raw N is diffusive at all three, so N has its prediction."""
    from driver.tasks.md_compare import MDCompareSection, _tables, md_relations

    runs = [_md_run("raw", 600.0, {"Li": 1e-6, "N": 1e-7}), _md_run("raw", 800.0, {"Li": None, "N": 2e-7}),
            _md_run("raw", 1000.0, {"Li": None, "N": 4e-7}), _md_run("corrected", 600.0, {"Li": 1e-6, "N": 1e-7})]
    section = MDCompareSection(runs=runs)
    _tables(section)
    assert ("raw", "Li") not in section.arrhenius and ("raw", "N") in section.arrhenius
    lines = md_relations(section)
    li = next(line for line in lines if line.startswith("MD Li at 600 K"))
    assert "cannot be predicted: raw MD is diffusive at 1 temperature(s), an Arrhenius fit needs ≥ 2" in li
    n = next(line for line in lines if line.startswith("MD N at 600 K"))
    assert "from the raw Arrhenius fit" in n
    assert any("not diffusive (< 1e-09)" in table for table in section.tables)


def _neb_result(factor: float):
    """A band whose MEP is factor x 0.4 sin² (a symmetric 0.4 eV barrier for factor 1)."""
    from driver.tasks.neb import NEBResult

    coordinate = np.linspace(0, 2.5, 7)
    energies = factor * 0.4 * np.sin(np.pi * coordinate / 2.5) ** 2
    return NEBResult(converged=True, iterations=10, model_calls=11, max_force_eV_A=0.01, barrier_eV=energies.max(),
                     backward_barrier_eV=energies.max(), reaction_energy_eV=0.0, barrier_spline_eV=energies.max(),
                     saddle_image=3, n_images=7, suspect=False, suspect_reasons=[], band_file="band.extxyz",
                     iteration_energies_eV=np.zeros((10, 7)), iteration_max_force_eV_A=np.zeros((10, 5)),
                     image_energies_eV=energies, image_positions_A=np.zeros((7, 1, 3)),
                     reaction_coordinate_A=coordinate, mep_energies_eV=energies, spline_coordinate_A=coordinate,
                     spline_energies_eV=energies)


def test_compare_neb_barrier_relation(tmp_path):
    jobs = []
    for variant, factor in (("raw", 1.0), ("corrected", 1 / SCALE)):
        result = _neb_result(factor)
        with h5py.File(tmp_path / f"{variant}.h5", "w") as handle:
            result.to_h5(handle.create_group("results/neb"))
        jobs.append({"job": variant, "file": f"{variant}.h5", "variant": variant, "status": "completed",
                     "softening_scale": SCALE if variant == "corrected" else None, **result.scalars()})
    (tmp_path / "summary.json").write_text(json.dumps({"jobs": jobs}))
    from driver.compare import compare_run

    comparison = compare_run(tmp_path)
    line = next(line for line in comparison.relations if line.startswith("NEB barrier"))
    assert f"corrected {0.4 / SCALE:.4f} eV vs predicted raw/s = {0.4 / SCALE:.4f} eV" in line
    assert (tmp_path / "compare_neb.png").read_bytes().startswith(PNG)


def _check_outputs(out, stdout: str, names: list[str]) -> None:
    report = (out / "report.md").read_text()
    for name in names:
        png = (out / name).read_bytes()
        assert png.startswith(PNG) and len(png) > 1000, name
        assert f"]({name})" in report
    assert "| job |" in stdout and "| job |" in report
    assert "Predicted (scalar correction) vs measured" in stdout


def test_compare_real_md_run(tmp_path, capsys):
    """CHGNet Si, raw and corrected at 2 temperatures, a few steps: the plots, the report, the
    table; a vibrating crystal reads "not diffusive" with a bound, gets no Arrhenius fit and no
    predicted D (it has no D to predict)."""
    recipe = write_recipe(tmp_path, correction={"scale": SCALE}, compare=True,
                          task={"temperature_K": [600, 1200], "steps": 8})
    assert main(["run", str(recipe)]) == 0
    capsys.readouterr()
    out = tmp_path / "out"
    assert main(["compare", str(out)]) == 0
    stdout = capsys.readouterr().out
    _check_outputs(out, stdout, ["compare_msd.png", "compare_traces.png", "compare_rdf.png"])
    assert "corrected-T1200K" in stdout and "Si (8)" in stdout
    rows = [line for line in stdout.splitlines() if line.startswith("| raw-T") or line.startswith("| corrected-T")]
    assert len(rows) == 4 and all("| not diffusive" in row and "| 0 (0/ion) |" in row for row in rows), rows
    assert not (out / "compare_arrhenius.png").exists()
    assert "MD Si at 600 K: corrected not diffusive; no D to compare" in stdout
    assert "Arrhenius fits" not in stdout


def test_compare_real_phonon_run(tmp_path, capsys):
    recipe = write_recipe(tmp_path, correction={"scale": SCALE}, compare=True,
                          task={"kind": "phonons", "supercell": [2, 2, 2], "mesh": [4, 4, 4], "band_points": 5})
    assert main(["run", str(recipe)]) == 0
    capsys.readouterr()
    out = tmp_path / "out"
    assert main(["compare", str(out)]) == 0
    stdout = capsys.readouterr().out
    _check_outputs(out, stdout, ["compare_phonons.png"])
    line = next(line for line in stdout.splitlines() if "phonons: corrected mean frequency" in line)
    measured, predicted = (float(part.split(" THz")[0].split()[-1]) for part in line.split(" vs predicted raw/sqrt(s) = "))
    assert measured == pytest.approx(predicted, rel=1e-3)


@pytest.mark.parametrize("make", ["missing", "no_summary"])
def test_bad_input_exits_2_with_one_line(tmp_path, capsys, make):
    target = tmp_path / "nowhere" if make == "missing" else tmp_path
    assert main(["compare", str(target)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(target) in err


def test_compare_reads_every_task_kind_with_its_own_relation(tmp_path, emt_family):
    """Relax/EOS/elastic/single-point runs: their report lines and the task's raw vs corrected
    line, not an MD analysis of their few frames."""
    from driver.cli import main
    from driver.compare import compare_run
    from tests.conftest import emt_recipe

    recipe = emt_recipe(tmp_path, {"kind": "eos", "n_points": 5, "relax_positions": False})
    assert main(["run", str(recipe), "--out", str(tmp_path / "out")]) == 0
    comparison = compare_run(tmp_path / "out", plots=False)
    assert list(comparison.sections) == ["eos"]  # not an MD analysis of its few frames
    text = comparison.format()
    assert "eos: corrected/raw B0 = 1.2500" in text and "1/s = 1.2500" in text
    assert (tmp_path / "out" / "report.md").read_text().count("B0") >= 2
