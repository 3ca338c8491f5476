"""The driver against TorchSim (the batched-MD reference) on the same MACE model and systems:
NVT Langevin on 64-atom Si with a random-weight MACE of MACE-MP-0 medium's architecture.

    PYTHONPATH=.bench-site python bench/torchsim_mace.py [--systems 1 4 8] [--steps 6] [--repeats 3]

TorchSim 0.3.0 (torch-sim-atomistic, the last release for Python 3.11) lives in the bench's own
folder .bench-site (make bench-torchsim installs it there), never in the project's environment.
Per number of systems n, time per system-step (medians of alternating repeats):
- torchsim: `torch_sim.integrate(n copies, MaceModel(compute_stress=False), nvt_langevin)`, all
  n systems in one batched state;
- driver:   `driver run` with n MD jobs (n temperatures, raw only): n = 1 one job; n > 1 with
            `run.batch_replicas: true` (one batched model call per step for all jobs) and, for
            comparison, one job after another (the driver may choose not to batch);
- stock:    ASE's Langevin on MACECalculator, one system (the loop users write by hand).
Writes "torchsim_mace" in bench/results.json.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import statistics
import sys
import tempfile
import time
from pathlib import Path

from common import ROOT, machine_record, save_result, warn_if_busy  # isort: skip
from checkout import checkout_record  # isort: skip

import numpy as np
from ase import units
from ase.io import write
from ase.md.langevin import Langevin
from ase.md.velocitydistribution import MaxwellBoltzmannDistribution

from driver.models import load_model
from driver.recipe import parse_recipe
from driver.runner import run_recipe
from driver.specs import ModelSpec
from driver.structure import load_structure
from tests.conftest import MEDIUM_MACE_DESCRIPTION, build_medium_mace

SI_CIF = ROOT / "recipes" / "structures" / "Si_diamond.cif"
TIMESTEP_FS = 0.5
TEMPERATURE_K = 100.0
FRICTION_PER_FS = 0.01
SEED = 3


def si64():
    data = {"name": "x", "structure": {"file": str(SI_CIF), "supercell": [2, 2, 2]}, "model": {"name": "chgnet"},
            "task": {"kind": "single_point"}}
    return load_structure(parse_recipe(data, "x", ROOT).structure)


def torchsim_run(ts, model, atoms, systems: int, steps: int) -> float:
    gc.collect()
    begin = time.perf_counter()
    ts.integrate(system=[atoms.copy() for _ in range(systems)], model=model, integrator=ts.nvt_langevin,
                 n_steps=steps, temperature=TEMPERATURE_K, timestep=TIMESTEP_FS / 1000.0)  # metal units: ps
    return (time.perf_counter() - begin) / (steps * systems)


def driver_run(structure: Path, mace: Path, systems: int, steps: int, together: bool, out: Path) -> float:
    temperatures = [TEMPERATURE_K + i for i in range(systems)]
    data = {"name": "torchsim-vs-driver", "structure": {"file": str(structure)},
            "model": {"name": "mace-mp-0", "checkpoint": str(mace), "dtype": "float64"},
            "task": {"kind": "md", "ensemble": "nvt_langevin", "timestep_fs": TIMESTEP_FS, "steps": steps,
                     "temperature_K": temperatures if systems > 1 else temperatures[0], "seed": SEED,
                     "friction_per_fs": FRICTION_PER_FS},
            "output": {"directory": str(out)}, "run": {"batch_replicas": together}}
    recipe = parse_recipe(data, "torchsim_mace", ROOT)
    gc.collect()
    with contextlib.redirect_stdout(sys.stderr):
        report = run_recipe(recipe, repr(data), overwrite=True)
    bad = [job for job in report.jobs if job["status"] != "completed"]
    if bad:
        raise RuntimeError(f"driver job {bad[0]['job']} {bad[0]['status']}: {bad[0].get('error')}")
    # Side by side the jobs overlap: the longest is the run; one after another they add up.
    walls = [job["wall_time_s"] for job in report.jobs]
    return (max(walls) if together else sum(walls)) / ((steps + 1) * systems)


def stock_run(model, atoms, steps: int) -> float:
    atoms = atoms.copy()
    model.calculator.reset()
    atoms.calc = model.calculator
    gc.collect()
    begin = time.perf_counter()
    MaxwellBoltzmannDistribution(atoms, temperature_K=TEMPERATURE_K, rng=np.random.default_rng(SEED))
    Langevin(atoms, timestep=TIMESTEP_FS * units.fs, temperature_K=TEMPERATURE_K,
             friction=FRICTION_PER_FS / units.fs, rng=np.random.default_rng(SEED)).run(steps)
    return (time.perf_counter() - begin) / (steps + 1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--systems", nargs="+", type=int, default=[1, 4, 8])
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    try:
        import torch
        import torch_sim as ts
        from torch_sim.models.mace import MaceModel
    except ImportError as exc:
        print(f"torchsim_mace: TorchSim is not importable ({exc}); run `make bench-torchsim` (it installs "
              "torch-sim-atomistic 0.3.0 into .bench-site)", file=sys.stderr)
        return 2
    load_before = warn_if_busy()
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        mace = build_medium_mace(tmp / "medium.model")
        atoms = si64()
        structure = tmp / "Si64.extxyz"
        write(structure, atoms)
        with contextlib.redirect_stdout(sys.stderr):
            model = load_model(ModelSpec(name="mace-mp-0", checkpoint=str(mace), dtype="float64"))
        module = model.calculator.models[0]
        ts_model = MaceModel(model=module, device=torch.device("cpu"), dtype=torch.float64, compute_forces=True,
                             compute_stress=False)
        stock_run(model, atoms, 1)  # warm-ups
        torchsim_run(ts, ts_model, atoms, 1, 1)
        stock = statistics.median(stock_run(model, atoms, args.steps) for _ in range(args.repeats))
        print(f"MACE ({MEDIUM_MACE_DESCRIPTION}), Si64 NVT Langevin, float64, seconds per system-step, "
              f"median of {args.repeats}; stock ASE loop: {stock:.3f} s")
        print(f"{'systems':>7} {'torchsim':>9} {'driver':>9} {'ratio':>6}   {'one after another':>17} {'ratio':>6}")
        for systems in args.systems:
            ts_times, together, apart = [], [], []

            def run_torchsim(n=systems, bucket=ts_times):
                bucket.append(torchsim_run(ts, ts_model, atoms, n, args.steps))

            def run_together(n=systems, bucket=together):
                bucket.append(driver_run(structure, mace, n, args.steps, n > 1, tmp / f"d{n}"))

            def run_apart(n=systems, bucket=apart):
                if n > 1:
                    bucket.append(driver_run(structure, mace, n, args.steps, False, tmp / f"a{n}"))

            sides = [run_torchsim, run_together, run_apart]
            for repeat in range(args.repeats):  # rotated, so that no side always goes first
                for side in sides[repeat % 3:] + sides[:repeat % 3]:
                    side()
            row = {"torchsim_s": statistics.median(ts_times), "driver_s": statistics.median(together)}
            row["driver_over_torchsim"] = row["driver_s"] / row["torchsim_s"]
            if apart:
                row["one_after_another_s"] = statistics.median(apart)
                row["one_after_another_over_torchsim"] = row["one_after_another_s"] / row["torchsim_s"]
            rows[str(systems)] = {key: round(value, 4) for key, value in row.items()}
            line = f"{systems:>7} {row['torchsim_s']:>9.3f} {row['driver_s']:>9.3f} {row['driver_over_torchsim']:>5.2f}x"
            if apart:
                line += f"   {row['one_after_another_s']:>17.3f} {row['one_after_another_over_torchsim']:>5.2f}x"
            print(line, flush=True)
    save_result("torchsim_mace", {
        "description": "driver (one job; batch_replicas) vs TorchSim 0.3.0 nvt_langevin, same MACE, per system-step",
        "machine": machine_record("cpu", load_before),
        "settings": {"model": MEDIUM_MACE_DESCRIPTION, "structure": "Si diamond 2x2x2 (64 atoms)",
                     "timestep_fs": TIMESTEP_FS, "temperature_K": TEMPERATURE_K, "steps": args.steps,
                     "repeats": args.repeats, "torch_sim": ts.__version__ if hasattr(ts, "__version__") else "0.3.0",
                     "checkout": checkout_record()},
        "results": {"stock_ase_langevin_s_per_step": round(stock, 4), "by_systems": rows},
    })
    return 0


if __name__ == "__main__":
    sys.exit(main())
