"""The driver's MD step against the same MD on each library's stock ASE calculator, per family,
size and ensemble: what "compute only what the task needs" (driver.models.ModelPotential.
evaluate_one: CHGNet "ef" instead of "efsm", matgl without the strain gradient, MACE without
stress) buys over the calculators users run by hand.

    python bench/stock_vs_driver.py [--families chgnet m3gnet mace-mp-0] [--sizes 64 512]
                                    [--ensembles nve nvt_langevin] [--repeats 3] [--seconds 4]

- stock:  ASE's VelocityVerlet / Langevin on the library's calculator as users build it
          (`stock_calculator`: CHGNetCalculator, matgl's PESCalculator on the potential as
          matgl.load_model gives it, MACECalculator), seeded Maxwell-Boltzmann start, no output.
- driver: `driver run`'s MD job for the same MD (run_recipe in-process, default output:
          a frame every 10 steps), timed by the job's wall_time_s.
Si diamond supercells (64 = 2x2x2, 512 = 4x4x4 conventional cells); 1 fs at 600 K (the
random-weight MACE with MACE-MP-0 medium's architecture: 0.5 fs at 100 K). Steps per run are
chosen from a probe so that a run takes about --seconds (at least 3 steps); the two sides run
alternately, --repeats times, and the ratio is of medians per step. Writes "stock_vs_driver" in
bench/results.json.
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

from common import ROOT, machine_record, models_dir, now_utc, read_results, save_result, warn_if_busy  # isort: skip
from checkout import checkout_record  # isort: skip

import numpy as np
from ase import units
from ase.io import write
from ase.md.langevin import Langevin
from ase.md.velocitydistribution import MaxwellBoltzmannDistribution, Stationary
from ase.md.verlet import VelocityVerlet

from driver.models import load_model
from driver.recipe import parse_recipe
from driver.runner import run_recipe
from driver.specs import ModelSpec
from driver.structure import load_structure
from tests.conftest import M3GNET_NAME, MEDIUM_MACE_DESCRIPTION, build_medium_mace

SI_CIF = ROOT / "recipes" / "structures" / "Si_diamond.cif"
REPEATS_FOR = {64: (2, 2, 2), 216: (3, 3, 3), 512: (4, 4, 4)}
MD = {"timestep_fs": 1.0, "temperature_K": 600.0}
MD_PER_FAMILY = {"mace-mp-0": {"timestep_fs": 0.5, "temperature_K": 100.0}}
FRICTION_PER_FS = 0.01
SEED = 3


def family_specs(workdir: Path) -> list[tuple[str, dict | None, str]]:
    folder = models_dir()
    mace = build_medium_mace(workdir / "medium-bench.model")
    return [
        ("chgnet", {"name": "chgnet"}, "CHGNet 0.3.0 (bundled)"),
        ("m3gnet", {"name": "m3gnet", "models_dir": str(folder)} if folder else None, M3GNET_NAME),
        ("mace-mp-0", {"name": "mace-mp-0", "checkpoint": str(mace)}, MEDIUM_MACE_DESCRIPTION),
    ]


def recipe_for(fields: dict, structure: Path, ensemble: str, steps: int, md: dict, out: Path):
    task = {"kind": "md", "ensemble": ensemble, "timestep_fs": md["timestep_fs"], "steps": steps,
            "temperature_K": md["temperature_K"], "seed": SEED}
    if ensemble == "nvt_langevin":
        task["friction_per_fs"] = FRICTION_PER_FS
    data = {"name": "stock-vs-driver", "structure": {"file": str(structure), "max_atoms": 10**5},
            "model": dict(fields), "task": task, "output": {"directory": str(out)}}
    return parse_recipe(data, "stock_vs_driver", ROOT), repr(data)


def stock_calculator(model):
    """The calculator a user builds by hand. The driver's own M3GNet potential runs in eval mode
    (driver.models.m3gnet.load), so the stock side gets its own, as matgl.load_model returns it
    (training mode); CHGNet's and MACE's `model.calculator` are their libraries' calculators as is."""
    if model.family != "m3gnet":
        return model.calculator
    import matgl
    from matgl.ext.ase import PESCalculator

    return PESCalculator(matgl.load_model(model.source), stress_unit="eV/A3")


def stock_run(calculator, start, ensemble: str, steps: int, md: dict) -> float:
    atoms = start.copy()
    calculator.reset()
    gc.collect()
    atoms.calc = calculator
    begin = time.perf_counter()
    MaxwellBoltzmannDistribution(atoms, temperature_K=md["temperature_K"], rng=np.random.default_rng(SEED))
    Stationary(atoms)
    dt = md["timestep_fs"] * units.fs
    if ensemble == "nve":
        integrator = VelocityVerlet(atoms, timestep=dt)
    else:
        integrator = Langevin(atoms, timestep=dt, temperature_K=md["temperature_K"],
                              friction=FRICTION_PER_FS / units.fs, rng=np.random.default_rng(SEED))
    integrator.run(steps)
    return (time.perf_counter() - begin) / (steps + 1)  # ASE also evaluates step 0


def driver_run(recipe, text: str) -> float:
    gc.collect()
    with contextlib.redirect_stdout(sys.stderr):
        report = run_recipe(recipe, text, overwrite=True)
    job = report.jobs[0]
    if job["status"] != "completed":
        raise RuntimeError(f"driver job {job['status']}: {job.get('error')}")
    return job["wall_time_s"] / (job["steps"] + 1)


def bench_case(stock_calc, fields: dict, structure: Path, ensemble: str, md: dict, seconds: float, repeats: int,
               tmp: Path) -> dict:
    start = load_structure(recipe_for(fields, structure, ensemble, 3, md, tmp)[0].structure)
    probe = stock_run(stock_calc, start, ensemble, 2, md)  # also the warm-up
    steps = max(3, int(round(seconds / probe)))
    recipe, text = recipe_for(fields, structure, ensemble, steps, md, tmp / "out")
    driver_run(recipe, text)  # warm-up of the driver side
    stock, driver = [], []
    for repeat in range(repeats):  # alternating, and no side always first
        order = [("stock", stock), ("driver", driver)][:: 1 if repeat % 2 == 0 else -1]
        for side, bucket in order:
            bucket.append(stock_run(stock_calc, start, ensemble, steps, md) if side == "stock" else driver_run(recipe, text))
    stock_s, driver_s = statistics.median(stock), statistics.median(driver)
    return {"atoms": len(start), "ensemble": ensemble, "steps": steps, "stock_ms_per_step": round(stock_s * 1e3, 2),
            "driver_ms_per_step": round(driver_s * 1e3, 2), "driver_over_stock": round(driver_s / stock_s, 3),
            "spread_stock": round((max(stock) - min(stock)) / stock_s, 3),
            "runs_ms": {"stock": [round(x * 1e3, 2) for x in stock], "driver": [round(x * 1e3, 2) for x in driver]}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--families", nargs="+", default=["chgnet", "m3gnet", "mace-mp-0"])
    parser.add_argument("--sizes", nargs="+", type=int, default=[64, 512], choices=sorted(REPEATS_FOR))
    parser.add_argument("--ensembles", nargs="+", default=["nve", "nvt_langevin"])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=4.0)
    args = parser.parse_args(argv)
    load_before = warn_if_busy()
    rows, device = {}, None
    print(f"MD step, driver vs the stock calculator's ASE loop, Si, median of {args.repeats} alternating runs")
    print(f"{'family':<10} {'atoms':>5} {'ensemble':<13} {'steps':>5} {'stock ms':>9} {'driver ms':>9} {'ratio':>6}")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        structures = {}
        for size in args.sizes:
            structures[size] = tmp / f"Si{size}.extxyz"
            write(structures[size], load_structure(
                parse_recipe({"name": "x", "structure": {"file": str(SI_CIF), "supercell": list(REPEATS_FOR[size])},
                              "model": {"name": "chgnet"}, "task": {"kind": "single_point"}}, "x", ROOT).structure))
        for family, fields, label in family_specs(tmp):
            if family not in args.families:
                continue
            if fields is None:
                rows[family] = {"skipped": "weights not found"}
                print(f"{family:<10} skipped (weights not found)")
                continue
            with contextlib.redirect_stdout(sys.stderr):
                model = load_model(ModelSpec(**fields))
            device = model.device
            stock = stock_calculator(model)
            md = {**MD, **MD_PER_FAMILY.get(family, {})}
            rows[family] = {"model": label, "cases": []}
            for size in args.sizes:
                for ensemble in args.ensembles:
                    row = bench_case(stock, fields, structures[size], ensemble, md, args.seconds, args.repeats,
                                     tmp / f"{family}-{size}-{ensemble}")
                    rows[family]["cases"].append(row)
                    print(f"{family:<10} {size:>5} {ensemble:<13} {row['steps']:>5} {row['stock_ms_per_step']:>9.1f} "
                          f"{row['driver_ms_per_step']:>9.1f} {row['driver_over_stock']:>5.3f}x", flush=True)
    # A run of some families keeps the others' rows; each row carries its own date and machine.
    machine = machine_record(device, load_before)
    for row in rows.values():
        row.update(date=now_utc(), machine=machine)
    earlier = (read_results().get("stock_vs_driver") or {}).get("results") or {}
    rows = {**{f: r for f, r in earlier.items() if f not in rows}, **rows}
    save_result("stock_vs_driver", {
        "description": "driver MD step vs the stock calculator's ASE loop (medians of alternating runs)",
        "machine": machine,
        "settings": {"md": MD, "md_per_family": MD_PER_FAMILY, "repeats": args.repeats,
                     "target_seconds_per_run": args.seconds, "checkout": checkout_record()},
        "results": rows,
    })
    return 0


if __name__ == "__main__":
    sys.exit(main())
