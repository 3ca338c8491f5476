"""What the driver adds to an MD run: `driver run`'s MD task vs a bare ASE loop, and the cost of
streaming every step to HDF5.

    python bench/md_overhead.py [--families chgnet m3gnet mace-mp-0] [--repeats 9] [--seconds 3]

Per family, on a 64-atom Si supercell (recipes/structures/Si_diamond.cif repeated 2x2x2), NVE
(VelocityVerlet, 1 fs), Maxwell-Boltzmann start at 600 K with the same seed on every side (the
random-weight MACE: 0.5 fs, 100 K, at most 250 steps, before its atoms collapse; MD_PER_FAMILY):

- bare:      ase.md.verlet.VelocityVerlet on `model.calculator`, N steps, no output, no checks.
- driver:    a Recipe (driver.recipe) for the same MD, run in-process by driver.runner.run_recipe
             into a temporary folder with the default output settings (write_every 10,
             flush_every 10); the time is the job's `wall_time_s` from the returned report
             (= summary.json), which covers the task only: velocities, integrator, N steps, the
             per-frame observables, explosion check and HDF5 appends, and the final results
             group. It leaves out what the bare loop also lacks: model loading, the reference
             energy of the start structure, opening the .h5 file (before the clock starts) and
             closing it (after). Those are reported separately as the whole run_recipe time.
- every:     the driver with output.write_every 1 (every step streamed; flush default).
- one-frame: the driver with output.write_every N (frames at step 0 and step N only).

A run during which other processes competed for the CPUs is repeated (bench/idle.py
`guarded`). N is chosen per family so that one run takes about --seconds on this machine (at
least 30 steps), measured from bare warm-up steps. After one untimed warm-up of each, all four
run once per repeat, in an order rotated every repeat, each after gc.collect() (Python's cyclic
garbage collector otherwise adds about 10% run-to-run jitter to CHGNet); medians over
--repeats. Ratios (from this run): driver / bare (target <= 1.05); HDF5 streaming at the default
settings vs (almost) off = driver / one-frame (target <= 1.02); and, for the record, every step
streamed / one-frame. `bare_spread` = (slowest - fastest) / median of the bare runs: ratios closer
to 1 than that are within this machine's run-to-run noise. Writes the key "md_overhead" of bench/results.json.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

from common import print_family_table, ROOT, machine_record, save_result, specs, warn_if_busy  # isort: skip
from checkout import checkout_record  # isort: skip
from idle import guarded  # isort: skip

import numpy as np
from ase import units
from ase.md.velocitydistribution import MaxwellBoltzmannDistribution, Stationary
from ase.md.verlet import VelocityVerlet

from driver.models import load_model
from driver.recipe import parse_recipe
from driver.runner import run_recipe
from driver.specs import ModelSpec
from driver.structure import load_structure

SI_CIF = ROOT / "recipes" / "structures" / "Si_diamond.cif"
# The MD each family runs: 1 fs at 600 K; the random-weight MACE pulls atoms together within
# ~100 fs whatever the temperature (the driver's explosion check stops it), so it runs 0.5 fs
# steps at 100 K, at most 250 of them (125 fs).
MD_DEFAULT = {"timestep_fs": 1.0, "temperature_K": 600.0, "max_steps": None}
MD_PER_FAMILY = {"mace-mp-0": {"timestep_fs": 0.5, "temperature_K": 100.0, "max_steps": 250}}
SEED = 3
MIN_STEPS = 30
SIDES = ("bare", "driver", "every", "one_frame")
warnings.filterwarnings("ignore", message="Use thermalize_momenta")  # ASE 3.29; the driver makes the same call


def make_recipe(fields: dict, steps: int, out_dir: Path, write_every: int | None, md: dict = MD_DEFAULT):
    output = {"directory": str(out_dir)}
    if write_every is not None:
        output["write_every"] = write_every
    data = {
        "name": "md-overhead",
        "structure": {"file": str(SI_CIF), "supercell": [2, 2, 2]},
        "model": dict(fields),
        "task": {"kind": "md", "ensemble": "nve", "timestep_fs": md["timestep_fs"], "steps": steps,
                 "temperature_K": md["temperature_K"], "seed": SEED},
        "output": output,
    }
    return parse_recipe(data, "md_overhead", ROOT), repr(data)


def driver_run(recipe, text: str) -> tuple[float, float, dict]:
    """(job wall_time_s, whole run_recipe seconds, the job's summary entry)."""
    gc.collect()  # every run starts from the same garbage-collector state
    start = time.perf_counter()
    with contextlib.redirect_stdout(sys.stderr):
        report = run_recipe(recipe, text, overwrite=True)
    whole = time.perf_counter() - start
    job = report.jobs[0]
    if job["status"] != "completed":
        raise RuntimeError(f"driver job {job['job']} {job['status']}: {job.get('error')}")
    return job["wall_time_s"], whole, job


def bare_run(model, start_atoms, steps: int, md: dict = MD_DEFAULT) -> float:
    """The same MD with nothing but ASE: same start, same seeded velocities, no output."""
    atoms = start_atoms.copy()
    model.calculator.reset()  # no cached result from an earlier run
    gc.collect()  # every run starts from the same garbage-collector state
    atoms.calc = model.calculator
    begin = time.perf_counter()
    MaxwellBoltzmannDistribution(atoms, temperature_K=md["temperature_K"], rng=np.random.default_rng(SEED))
    Stationary(atoms)
    VelocityVerlet(atoms, timestep=md["timestep_fs"] * units.fs).run(steps)
    return time.perf_counter() - begin


def choose_steps(model, start_atoms, seconds: float, md: dict) -> tuple[int, float]:
    bare_run(model, start_atoms, 3, md)  # warm-up
    probe = 10
    per_step = bare_run(model, start_atoms, probe, md) / (probe + 1)  # ASE also evaluates step 0
    steps = max(MIN_STEPS, int(round(seconds / per_step)))
    return (min(steps, md["max_steps"]) if md["max_steps"] else steps), per_step


def bench_family(fields: dict, steps_seconds: float, repeats: int, tmp: Path, md: dict) -> dict:
    with contextlib.redirect_stdout(sys.stderr):
        model = load_model(ModelSpec(**fields))
    recipe0, _ = make_recipe(fields, MIN_STEPS, tmp / "probe", None, md)
    start_atoms = load_structure(recipe0.structure)
    (steps, probe_step_s), _, _ = guarded(lambda: choose_steps(model, start_atoms, steps_seconds, md))
    recipes = {
        "driver": make_recipe(fields, steps, tmp / "default", None, md),
        "every": make_recipe(fields, steps, tmp / "every", 1, md),
        "one_frame": make_recipe(fields, steps, tmp / "one", steps, md),
    }
    runs = {side: [] for side in SIDES}
    whole = {side: [] for side in SIDES if side != "bare"}
    frames = {}
    # Warm-up of each side (file system, lazy imports, allocator), not timed.
    bare_run(model, start_atoms, steps, md)
    for recipe, text in recipes.values():
        driver_run(recipe, text)
    retries, foreign = 0, []
    for repeat in range(repeats):  # interleaved: load drifts hit every side alike
        order = SIDES[repeat % len(SIDES):] + SIDES[:repeat % len(SIDES)]  # and no side always goes first
        for side in order:
            if side == "bare":
                bare_s, load, tries = guarded(lambda: bare_run(model, start_atoms, steps, md))
                runs["bare"].append(bare_s)
            else:
                recipe, text = recipes[side]
                (job_s, whole_s, job), load, tries = guarded(lambda r=recipe, t=text: driver_run(r, t))
                runs[side].append(job_s)
                whole[side].append(whole_s)
                frames[side] = job["frames"]
            retries, foreign = retries + tries - 1, foreign + [load]
    med = {side: statistics.median(values) for side, values in runs.items()}
    return {
        "device": model.device,
        "dtype": model.dtype,
        "steps": steps,
        "timestep_fs": md["timestep_fs"],
        "temperature_K": md["temperature_K"],
        "atoms": len(start_atoms),
        "bare_probe_s_per_step": round(probe_step_s, 5),
        "frames": frames,
        **{f"{side}_s": round(med[side], 4) for side in SIDES},
        "driver_over_bare": round(med["driver"] / med["bare"], 4),
        "one_frame_over_bare": round(med["one_frame"] / med["bare"], 4),
        "default_over_one_frame": round(med["driver"] / med["one_frame"], 4),
        "every_over_one_frame": round(med["every"] / med["one_frame"], 4),
        "bare_spread": round((max(runs["bare"]) - min(runs["bare"])) / med["bare"], 3),
        "driver_ms_per_step_over_bare": round((med["driver"] - med["bare"]) / steps * 1e3, 3),
        "every_ms_per_step_over_one_frame": round((med["every"] - med["one_frame"]) / steps * 1e3, 3),
        "runs_repeated_because_other_processes_competed": retries,
        "max_foreign_cores_in_kept_runs": max((x for x in foreign if x is not None), default=None),
        "runs_s": {side: [round(t, 4) for t in values] for side, values in runs.items()},
        "whole_run_recipe_s": {side: round(statistics.median(values), 3) for side, values in whole.items()},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--families", nargs="+", default=["chgnet", "m3gnet", "mace-mp-0"])
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--seconds", type=float, default=3.0, help="target length of one run (sets the steps)")
    args = parser.parse_args(argv)

    load_before = warn_if_busy()
    rows: dict[str, dict] = {}
    device = None
    with tempfile.TemporaryDirectory() as tmp:
        for family, fields, label in specs(Path(tmp)):
            if family not in args.families:
                continue
            if fields is None:
                print(f"{family}: skipped (M3GNet weights not found; set DRIVER_MODELS_DIR)", file=sys.stderr)
                rows[family] = {"skipped": "weights not found"}
                continue
            print(f"{family}: timing ...", file=sys.stderr, flush=True)
            try:
                row = bench_family(fields, args.seconds, args.repeats, Path(tmp) / family,
                                   {**MD_DEFAULT, **MD_PER_FAMILY.get(family, {})})
            except Exception as exc:  # one family failing leaves the others' numbers
                print(f"{family}: failed: {type(exc).__name__}: {exc}", file=sys.stderr)
                rows[family] = {"skipped": f"failed: {type(exc).__name__}: {exc}"}
                continue
            device = row["device"]
            rows[family] = {"model": label, **row}

    print(f"MD, 64-atom Si, NVE (1 fs; MACE 0.5 fs), "
          f"median of {args.repeats} interleaved runs; driver time = the job's wall_time_s")
    header = (f"{'family':<10} {'steps':>5} {'bare s':>7} {'driver s':>8} {'ratio':>6}   "
              f"{'every-step s':>12} {'one-frame s':>11} {'ratio':>6}  {'+ms/step':>8}")
    print_family_table(header, rows, lambda family, row: (
        f"{family:<10} {row['steps']:>5} {row['bare_s']:>7.3f} {row['driver_s']:>8.3f} "
        f"{row['driver_over_bare']:>5.3f}x   {row['every_s']:>12.3f} {row['one_frame_s']:>11.3f} "
        f"{row['every_over_one_frame']:>5.3f}x  {row['every_ms_per_step_over_one_frame']:>8.2f}"))
    save_result("md_overhead", {
        "description": "driver MD job wall_time_s vs a bare ASE VelocityVerlet loop; write_every 1 vs one frame",
        "machine": machine_record(device, load_before),
        "settings": {"structure": "Si diamond 2x2x2 (64 atoms)", "ensemble": "nve", "md": MD_DEFAULT,
                     "md_per_family": MD_PER_FAMILY, "target_seconds_per_run": args.seconds,
                     "min_steps": MIN_STEPS, "repeats": args.repeats, "statistic": "median",
                     "driver_output": "default write_every 10, flush_every 10",
                     "time_measured": "job wall_time_s (task only; model loading excluded)",
                     "checkout": checkout_record()},
        "results": rows,
    })
    return 0


if __name__ == "__main__":
    sys.exit(main())
