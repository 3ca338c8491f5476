"""The diffusion study and its estimator, against answers known in advance.

- Free particles under Langevin dynamics have D = kT/(mγ) exactly: the estimator's 95% intervals
  must contain it in 90-99% of independent runs, and a study asked for 10% must stop with an
  interval that tight, around the true value.
- A crystal at low temperature never hops: "not diffusive", with an upper bound and no D.
- A crystal far above its melting point trips the host gate.
- A synthetic D(T) with a known barrier is recovered within the fit's interval; a curved one is
  flagged.
- A study killed at any moment and resumed reaches the numbers of an uninterrupted one; a wall
  budget stops it cleanly, and --resume with more budget finishes it.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import yaml
from ase import Atoms, units
from ase.build import bulk
from ase.io import write

from driver.analysis.arrhenius import fit_arrhenius, interval
from driver.analysis.diffusivity import estimate_diffusion
from driver.checkpoint import read_latest
from driver.cli import main
from driver.tasks.md import MDTask, initialize_velocities, make_integrator
from tests.conftest import ROOT
from tests.models.free_family import FreeLithium
from tests.sigkill import sigkill_once_stored

CLI = ("import sys; from driver.registry import register; "
       "from tests.models.free_family import FAMILY; register(FAMILY); "
       "from tests.models.emt_family import FAMILY as EMT; register(EMT); "
       "from driver.cli import main; sys.exit(main(sys.argv[1:]))")

N_FREE = 32
FRICTION_PER_FS = 0.02


def free_lithium(seed: int) -> Atoms:
    """32 Li at random in a 10 Å box with a simple-cubic host of 27 spring-held atoms."""
    rng = np.random.default_rng(seed)
    atoms = bulk("Cu", "sc", a=10 / 3).repeat(3) + Atoms(f"Li{N_FREE}", positions=rng.uniform(0, 10, (N_FREE, 3)))
    atoms.cell = [10.0] * 3
    atoms.pbc = True
    return atoms


def true_diffusivity_cm2_s(temperature_K: float, n_free: int = N_FREE) -> float:
    """kT/(mγ) for Li, less the centre of mass the integrator holds fixed (the free atoms' centre
    is bound to the spring-held host's, so their mean displacement is removed: factor 1 - 1/N)."""
    mass = Atoms("Li").get_masses()[0]
    d_ase = units.kB * temperature_K / (mass * FRICTION_PER_FS / units.fs)  # Å² per ASE time unit
    return d_ase * units.fs * 0.1 * (1 - 1 / n_free)  # per ASE time -> per fs; Å²/fs -> cm²/s


def _free_trajectory(seed: int, temperature_K: float, steps: int, every: int = 10, timestep_fs: float = 2.0):
    atoms = free_lithium(seed)
    atoms.calc = FreeLithium()
    spec = MDTask(kind="md", steps=steps, temperature_K=temperature_K, timestep_fs=timestep_fs, seed=seed,
                  friction_per_fs=FRICTION_PER_FS, min_distance_A=0.001)
    initialize_velocities(atoms, temperature_K, seed)
    integrator = make_integrator(atoms, spec, temperature_K, seed)
    positions, cells = [atoms.get_positions()], [atoms.cell[:]]
    integrator.attach(lambda: (positions.append(atoms.get_positions()), cells.append(atoms.cell[:])), interval=every)
    integrator.run(steps)
    return np.arange(len(positions)) * every * timestep_fs, np.array(positions), np.array(cells), atoms.numbers == 3


def test_intervals_of_free_particles_contain_the_true_diffusivity_at_their_confidence():
    """60 independent 10 ps Langevin runs (the driver's own integrator): a run whose 95% interval
    misses D = kT/(mγ), or that gives no interval at all, counts as a miss. (Free particles move
    far between the random starting sites, so the hop-count floor of the interval does not bind
    here: the interval is kinisi's own.)"""
    temperature = 1000.0
    truth = true_diffusivity_cm2_s(temperature)
    hits, ratios = 0, []
    for seed in range(60):
        times, positions, cells, mobile = _free_trajectory(seed, temperature, 5000)
        estimate = estimate_diffusion(times, positions, cells, mobile, equilibration_fs=0.0, seed=seed,
                                      min_hops_per_ion=0.2)
        if estimate.interval_cm2_s is None:
            continue
        low, high = estimate.interval_cm2_s
        hits += low <= truth <= high
        ratios.append(estimate.diffusivity_cm2_s / truth)
    print(f"free particles: {hits}/60 95% intervals contain D = kT/(mγ); mean D/D_true {np.mean(ratios):.3f}")
    assert 0.90 <= hits / 60 <= 0.99, f"{hits}/60 intervals contain the true D"
    assert abs(np.mean(ratios) - 1) < 0.05, f"mean D/D_true {np.mean(ratios):.3f}"


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", CLI, *args], cwd=ROOT, capture_output=True, text=True, timeout=600)


def _study_recipe(folder: Path, task: dict, structure: Atoms, model: str, **sections) -> Path:
    write(folder / "start.extxyz", structure)
    recipe = {"name": "study", "structure": {"file": str(folder / "start.extxyz")},
              "model": {"name": model, "dtype": "float64"},
              "task": {"kind": "diffusion", "timestep_fs": 1.0, "seed": 3, **task},
              "output": {"directory": str(folder / "out"), "write_every": 10, "checkpoint_every": 100}}
    recipe.update(sections)
    path = folder / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


FREE_TASK = {"species": ["Li"], "temperatures_K": [600, 1000], "friction_per_fs": FRICTION_PER_FS,
             "min_distance_A": 0.001, "equilibration": 0, "target": {"relative_error": 0.10},
             "segment_ps": 1, "min_ps": 2, "max_ps": 30}


def _results(out: Path) -> dict[str, dict]:
    return {job["job"]: job for job in json.loads((out / "summary.json").read_text())["jobs"]}


def test_a_study_grows_each_temperature_until_its_interval_meets_the_target(tmp_path):
    recipe = _study_recipe(tmp_path, FREE_TASK, free_lithium(5), "free_li")
    done = _run("run", str(recipe))
    assert done.returncode == 0, done.stderr
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    for job in summary["jobs"]:
        assert job["status"] == "completed" and job["state"] == "target reached"
        assert job["relative_half_width"] <= 0.10
        assert 2 < job["simulated_ps"] < 30  # grew past min_ps, stopped before max_ps
        truth = true_diffusivity_cm2_s(job["temperature_K"])
        assert job["interval_low_cm2_s"] <= truth <= job["interval_high_cm2_s"], job
        with h5py.File(tmp_path / "out" / job["file"], "r") as f:
            history = f["results/diffusion/history_relative_half_width"][()]
            # the trace: every earlier segment short of the target (or not yet diffusive), the last within it
            assert len(history) >= 2 and history[-1] <= 0.10
            assert all(np.isnan(w) or w > 0.10 for w in history[:-1]), history
    study = summary["diffusion_study"]["variants"]["raw"]
    assert study["arrhenius"] is not None and study["diffusivity_room_cm2_s"]["low"] > 0
    assert "Ea = " in done.stderr


def test_a_crystal_at_room_temperature_is_not_diffusive(tmp_path, emt_family):
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(2)
    task = {"species": ["Cu"], "temperatures_K": [300], "segment_ps": 1, "min_ps": 2, "max_ps": 3,
            "timestep_fs": 2.0}
    recipe = _study_recipe(tmp_path, task, atoms, "emt")
    assert main(["-q", "run", str(recipe)]) == 1  # the target was not reached
    job = _results(tmp_path / "out")["raw-T300K"]
    assert job["verdict"] == "not diffusive" and job["state"] == "target not reached"
    assert job["hops"] == 0 and job["diffusivity_cm2_s"] is None and job["relative_half_width"] is None
    assert 0 < job["upper_bound_cm2_s"] < 1e-4
    assert "hops" in job["reason"]


def test_a_melted_host_is_refused_as_disordered(tmp_path, emt_family):
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(2)
    task = {"species": ["Cu"], "temperatures_K": [5000], "segment_ps": 1, "min_ps": 3, "max_ps": 3,
            "timestep_fs": 1.0, "max_temperature_factor": 3}
    recipe = _study_recipe(tmp_path, task, atoms, "emt")
    main(["-q", "run", str(recipe)])
    job = _results(tmp_path / "out")["raw-T5000K"]
    assert job["verdict"] == "host disordered" and job["status"] == "suspect", job
    assert job["host_site_fraction"] < 0.6 and job["diffusivity_cm2_s"] is None


def test_arrhenius_recovers_a_known_barrier_and_flags_curvature():
    rng = np.random.default_rng(0)
    ea, d0 = 0.35, 2e-3
    temperatures = [600.0, 700.0, 800.0, 900.0, 1000.0]
    straight, curved = [], []
    for t in temperatures:
        d = d0 * np.exp(-ea / (units.kB * t))
        noise = rng.normal(0, 0.05)  # each temperature's estimate is off by its own error
        straight.append(d * np.exp(noise + rng.normal(0, 0.05, 3000)))
        bend = 1.0 if t < 850 else np.exp(1.5 * (t - 850) / 150)  # a faster mechanism above 850 K
        curved.append(d * bend * np.exp(rng.normal(0, 0.03, 3000)))
    fit = fit_arrhenius(temperatures, straight)
    low, _, high = interval(fit.activation_energy_samples_eV, 0.95)
    assert low <= ea <= high and high - low < 0.1
    d300 = d0 * np.exp(-ea / (units.kB * 300))
    low, _, high = interval(fit.diffusivity_samples(300), 0.95)
    assert low <= d300 <= high
    assert not fit.curved
    assert fit_arrhenius(temperatures, curved).curved


def test_the_study_killed_mid_segment_resumes_to_the_same_numbers(tmp_path):
    task = {**FREE_TASK, "temperatures_K": [800], "target": {"relative_error": 0.12}}
    whole = _study_recipe(tmp_path, task, free_lithium(5), "free_li")
    assert _run("run", str(whole), "--out", str(tmp_path / "whole")).returncode == 0
    killed_dir = tmp_path / "killed"
    h5 = killed_dir / "raw-T800K.h5"
    sigkill_once_stored([sys.executable, "-c", CLI, "-q", "run", str(whole), "--out", str(killed_dir)], h5,
                        tmp_path / "peek.h5", 2500, read_latest, timeout_s=300)  # past min_ps, mid-segment
    resumed = _run("run", str(whole), "--out", str(killed_dir), "--resume")
    assert resumed.returncode == 0, resumed.stderr
    a, b = _results(tmp_path / "whole")["raw-T800K"], _results(killed_dir)["raw-T800K"]
    for key in ("diffusivity_cm2_s", "interval_low_cm2_s", "interval_high_cm2_s", "simulated_ps", "hops", "state"):
        assert a[key] == b[key], key
    with h5py.File(tmp_path / "whole" / "raw-T800K.h5", "r") as f, h5py.File(h5, "r") as g:
        np.testing.assert_array_equal(f["particles/all/position/value"][()], g["particles/all/position/value"][()])
        np.testing.assert_array_equal(f["results/diffusion/history_ps"][()], g["results/diffusion/history_ps"][()])


def test_a_wall_budget_stops_the_study_and_resume_with_more_finishes_it(tmp_path):
    task = {**FREE_TASK, "temperatures_K": [800], "wall_hours": 1e-6}
    recipe = _study_recipe(tmp_path, task, free_lithium(5), "free_li")
    stopped = _run("run", str(recipe))
    assert stopped.returncode == 1
    job = _results(tmp_path / "out")["raw-T800K"]
    assert job["status"] == "interrupted" and job["state"] == "wall budget used"
    assert job["simulated_ps"] == 2  # the first segment ran; the budget stopped the second
    assert "wall budget" in stopped.stderr
    more = yaml.safe_load(recipe.read_text())
    more["task"]["wall_hours"] = 1.0
    recipe.write_text(yaml.safe_dump(more))
    finished = _run("run", str(recipe), "--resume")
    assert finished.returncode == 0, finished.stderr
    job = _results(tmp_path / "out")["raw-T800K"]
    assert job["status"] == "completed" and job["relative_half_width"] <= 0.10


@pytest.mark.parametrize("task, message", [
    ({"species": ["Na"]}, "task.species: ['Na'] not in the structure"),
    ({"min_ps": 10, "max_ps": 5}, "max_ps (5) is below min_ps (10)"),
    ({"species": ["Xx"]}, "not chemical symbols"),
])
def test_bad_study_recipes_are_one_line(tmp_path, capsys, task, message):
    recipe = _study_recipe(tmp_path, {**FREE_TASK, **task}, free_lithium(5), "free_li")
    from driver.registry import register, unregister
    from tests.models.free_family import FAMILY

    register(FAMILY)
    try:
        assert main(["validate", str(recipe)]) == 2
    finally:
        unregister(FAMILY.name)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err


def test_corrected_dynamics_at_t_are_raw_dynamics_at_s_t_within_the_interval():
    """The scalar correction's exact identity, measured through the estimator: NVE on the PES
    V/s from velocities drawn at T is NVE on V from velocities at s·T (the same seed draws
    velocities scaled by sqrt(s)) with time stretched by sqrt(s), so D_corr(T) = D_raw(s·T)/sqrt(s).
    EMT Cu, melted and settled at s·T: a liquid, so both runs diffuse (every atom is mobile; the host gate's
    verdict does not matter here, only the two posteriors)."""
    from ase.calculators.emt import EMT

    from driver.analysis.arrhenius import ratio_samples
    from driver.correction import SofteningCorrection
    from driver.potential import CalculatorPotential

    s, temperature = 0.8, 2500.0
    liquid = bulk("Cu", "fcc", a=3.7, cubic=True).repeat(2)
    liquid.calc = EMT()
    melt = MDTask(kind="md", steps=1500, temperature_K=4000.0, timestep_fs=2.0, seed=1)
    initialize_velocities(liquid, 4000.0, 1)
    make_integrator(liquid, melt, 4000.0, 1).run(1500)
    # then settled at s·T, so that both runs start from the liquid they sample (no transient)
    settle = MDTask(kind="md", steps=1500, temperature_K=s * temperature, timestep_fs=2.0, seed=1)
    make_integrator(liquid, settle, s * temperature, 1).run(1500)
    start = liquid.copy()
    raw_potential = CalculatorPotential(EMT())
    posteriors = {}
    for variant, kelvin in (("raw", s * temperature), ("corrected", temperature)):
        atoms = start.copy()
        potential = raw_potential if variant == "raw" else SofteningCorrection(
            raw_potential, s, raw_potential.energy(start))
        atoms.calc = potential.as_calculator()
        spec = MDTask(kind="md", ensemble="nve", steps=12000, temperature_K=kelvin, timestep_fs=1.0, seed=2)
        initialize_velocities(atoms, kelvin, 2)
        integrator = make_integrator(atoms, spec, kelvin, 2)
        positions, cells = [atoms.get_positions()], [atoms.cell[:]]
        integrator.attach(lambda a=atoms, p=positions, c=cells: (p.append(a.get_positions()), c.append(a.cell[:])),
                          interval=10)
        integrator.run(12000)
        times = np.arange(len(positions)) * 10.0
        estimate = estimate_diffusion(times, np.array(positions), np.array(cells), np.ones(len(atoms), bool),
                                      equilibration_fs=0.0, seed=4)
        assert estimate.samples_cm2_s is not None, estimate.reason
        posteriors[variant] = estimate.samples_cm2_s
    ratio = ratio_samples(posteriors["corrected"], posteriors["raw"] / np.sqrt(s))
    low, median, high = interval(ratio, 0.95)
    assert low <= 1 <= high, (low, median, high)
    print(f"D_corr(T) / (D_raw(sT)/sqrt(s)) = {median:.3f} [{low:.3f}, {high:.3f}]")
    assert high - low < 0.5  # a measurement, not a shrug: it would catch a factor of 2


def test_batch_replicas_steps_a_rounds_jobs_together_to_the_same_numbers(tmp_path):
    """run.batch_replicas: each round's open jobs integrate side by side, one model call per
    step for all of them; each job's numbers are those of the jobs run one after another."""
    task = {**FREE_TASK, "target": {"relative_error": 0.2}}
    alone = _study_recipe(tmp_path, task, free_lithium(5), "free_li")
    assert _run("run", str(alone), "--out", str(tmp_path / "alone")).returncode == 0
    together = _study_recipe(tmp_path, task, free_lithium(5), "free_li", run={"batch_replicas": True})
    done = _run("run", str(together), "--out", str(tmp_path / "together"))
    assert done.returncode == 0, done.stderr
    assert "integrating 2 replicas together" in done.stderr
    a, b = _results(tmp_path / "alone"), _results(tmp_path / "together")
    for name in a:
        for key in ("simulated_ps", "hops", "state"):
            assert a[name][key] == b[name][key], (name, key)
        # the trajectories agree to round-off (batched evaluation sums in another order); kinisi's
        # MCMC, seeded alike, may step differently on data that differ in the last bits
        with h5py.File(tmp_path / "alone" / a[name]["file"], "r") as f, \
                h5py.File(tmp_path / "together" / b[name]["file"], "r") as g:
            np.testing.assert_allclose(g["particles/all/position/value"][()], f["particles/all/position/value"][()],
                                       rtol=0, atol=1e-8)
        assert b[name]["diffusivity_cm2_s"] == pytest.approx(a[name]["diffusivity_cm2_s"], rel=0.01)


def test_two_mpi_ranks_share_the_temperatures_and_match_a_serial_study(tmp_path):
    from tests.test_parallel import HAVE_MPI4PY, MPIEXEC, _env

    if MPIEXEC is None or not HAVE_MPI4PY:
        pytest.skip("mpiexec or mpi4py missing (pip install '.[mpi]')")
    task = {**FREE_TASK, "target": {"relative_error": 0.2}}
    recipe = _study_recipe(tmp_path, task, free_lithium(5), "free_li")
    serial = subprocess.run([sys.executable, "-c", CLI, "run", str(recipe), "--out", str(tmp_path / "serial")],
                            cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=600)
    assert serial.returncode == 0, serial.stderr
    parallel = subprocess.run([MPIEXEC, "-n", "2", sys.executable, "-c", CLI, "run", str(recipe), "--out",
                               str(tmp_path / "parallel")], cwd=ROOT, env=_env(), capture_output=True, text=True,
                              timeout=600)
    assert parallel.returncode == 0, parallel.stderr
    a, b = _results(tmp_path / "serial"), _results(tmp_path / "parallel")
    for name in a:
        for key in ("diffusivity_cm2_s", "simulated_ps", "hops", "state"):
            assert a[name][key] == b[name][key], (name, key)
    assert "raw-T1000K" in (tmp_path / "parallel" / "logs" / "rank-1.log").read_text()  # the other rank's job
    study = json.loads((tmp_path / "parallel" / "summary.json").read_text())["diffusion_study"]
    assert study["variants"]["raw"]["temperatures_K"] == [600.0, 1000.0]  # rank 0 fitted both ranks' jobs


def test_hops_into_sites_empty_at_the_start_are_counted():
    """A simple-cubic lattice (2 Å) with one vacancy: atom A jumps into the vacancy and rests there,
    then atom B jumps into A's old site. Starting sites alone see only B's hop; the site A rests on
    is learned, so both count. Vibrations (0.1 Å) on the sites count nothing, with or without a vacancy."""
    from driver.analysis.sites import count_hops

    rng = np.random.default_rng(0)
    grid = np.array([[i, j, k] for i in range(4) for j in range(4) for k in range(4)], dtype=float) * 2.0
    vacancy, a, b = 0, 1, 2  # sites (0,0,0), (0,0,2), (0,0,4): A next to the vacancy, B next to A
    start = np.delete(grid, vacancy, axis=0)  # atom i sits on grid[i + 1]
    frames = np.repeat(start[None], 300, axis=0)
    frames[100:, a - 1] = grid[vacancy]  # A hops at frame 100 (10 fs frames: 1 ps in, rests 2 ps)
    frames[200:, b - 1] = grid[a]  # B into A's old site at frame 200
    still = np.repeat(start[None], 300, axis=0) + rng.normal(0, 0.1, (300, len(start), 3))
    frames = frames + rng.normal(0, 0.1, frames.shape)
    cells = np.repeat(np.eye(3)[None] * 8.0, 300, axis=0)
    assert count_hops(frames, cells).total == 1  # starting sites only
    assert count_hops(frames, cells, frame_fs=10.0).total == 2
    assert count_hops(still, cells, frame_fs=10.0).total == 0


def _lattice_walkers(correlated: bool, seed: int = 0, n: int = 64, frames: int = 2000, p: float = 0.05):
    """n walkers hopping 2 Å on a cubic lattice with probability p per 10 fs frame (D* = p a²/6Δt),
    each on its own or all together (the same hop at the same time), in a still 8-atom host."""
    rng = np.random.default_rng(seed)
    grid = np.array([[i, j, k] for i in range(8) for j in range(8) for k in range(8)], float) * 2.0
    start = grid[rng.choice(len(grid), n, replace=False)]
    host = np.array([[i, j, k] for i in range(2) for j in range(2) for k in range(2)], float) * 8.0 + 1.0
    moves = np.eye(3)[rng.integers(0, 3, (frames, n))] * rng.choice([-2.0, 2.0], (frames, n, 1))
    hop = rng.random((frames, 1 if correlated else n)) < p
    if correlated:
        moves = np.repeat(moves[:, :1], n, axis=1)
    path = start + np.cumsum(moves * hop[..., None], axis=0)
    path[0] = start
    positions = np.concatenate([path, np.repeat(host[None], frames, 0)], axis=1) + rng.normal(0, 0.1, (frames, n + 8, 3))
    mobile = np.r_[np.ones(n, bool), np.zeros(8, bool)]
    return np.arange(frames) * 10.0, positions, np.repeat(np.eye(3)[None] * 16.0, frames, 0), mobile


@pytest.mark.parametrize(("correlated", "haven"), [(False, 1.0), (True, 1 / 64)])
def test_haven_ratio_from_the_collective_msd_knows_independent_and_concerted_hops(correlated, haven):
    """Independent walkers: D_σ = D*, H = 1. All 64 hopping together: D_σ = 64 D*, H = 1/64."""
    estimate = estimate_diffusion(*_lattice_walkers(correlated), equilibration_fs=0.0)
    truth = 0.05 * 2.0**2 / (6 * 10.0) * 0.1  # Å²/fs -> cm²/s
    assert estimate.verdict == "diffusive"
    assert estimate.interval_cm2_s[0] <= truth <= estimate.interval_cm2_s[1]
    low, median, high = estimate.haven.quantiles(0.95)
    assert low <= haven <= high and high / low < 2, (low, median, high)


def test_haven_ratio_is_not_claimed_from_an_unresolved_collective_msd():
    """8 independent walkers for 1 ps: D* is fine, the collective MSD (one walk) is not."""
    estimate = estimate_diffusion(*_lattice_walkers(False, n=8, frames=100, p=0.3), equilibration_fs=0.0)
    assert estimate.verdict == "diffusive" and estimate.haven.samples is None
    assert "collective MSD known to ±" in estimate.haven.reason


def test_the_density_stage_runs_the_study_at_each_temperatures_own_volume(tmp_path, emt_family, capsys):
    """task.density_ps: NPT first, then the study at the stage's mean cell: EMT Cu at 1000 K runs
    thermally expanded (the 0 K lattice constant 3.59 Å would leave it under tension)."""
    atoms = bulk("Cu", "fcc", a=3.59, cubic=True).repeat(2)
    task = {"species": ["Cu"], "temperatures_K": [1000], "segment_ps": 0.1, "min_ps": 0.2, "max_ps": 0.2,
            "timestep_fs": 2.0, "density_ps": 1.0, "pdamp_fs": 200.0, "equilibration": 0}
    recipe = _study_recipe(tmp_path, task, atoms, "emt")
    main(["-q", "run", str(recipe)])
    job = _results(tmp_path / "out")["raw-T1000K"]
    start = atoms.get_volume()
    assert job["density_volume_A3"] > 1.01 * start and job["density_volume_std_A3"] > 0
    with h5py.File(tmp_path / "out" / "raw-T1000K.h5", "r") as f:
        first_cell = f["particles/all/box/edges/value"][0]
        assert abs(np.linalg.det(first_cell)) == pytest.approx(job["density_volume_A3"], rel=1e-12)
        assert np.ptp(np.linalg.det(f["particles/all/box/edges/value"][()])) == 0  # NVT from there
    not_periodic = atoms.copy()
    not_periodic.pbc = [True, True, False]
    recipe = _study_recipe(tmp_path, task, not_periodic, "emt")
    assert main(["-q", "validate", str(recipe)]) == 2
    assert "task.density_ps: the NPT density stage changes the cell" in capsys.readouterr().err
