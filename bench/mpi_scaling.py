"""`driver run` on one process vs `mpiexec -n 2 driver run`: the speed-up of MPI job distribution.

    python bench/mpi_scaling.py [--steps 150] [--repeats 3] [--ranks 2] [--oversubscribed]

One recipe with 4 independent MD jobs (temperatures 300, 600, 900, 1200 K, raw only), 64-atom Si
(recipes/structures/Si_diamond.cif repeated 2x2x2), CHGNet, Langevin 1 fs, --steps steps each
(150: about 10 s per job on 2 cores). Each repeat runs, one after the other:

- serial:         driver run RECIPE                        (torch's default threads: all cores)
- serial_1_thread: the same with OMP_NUM_THREADS=1: what one single-threaded process does, so that
                  the MPI speed-up can be read against its ceiling (serial / serial_1_thread is
                  what torch's own threads already gain on these cores)
- parallel:       mpiexec -n RANKS driver run RECIPE       (driver.parallel gives each rank
                                                            cores // ranks torch threads)
- oversubscribed: (only with --oversubscribed) the same with OMP_NUM_THREADS=cores, i.e. every
                  rank taking every core, which is what torch did before driver.parallel shared
                  the cores. Left out by default: on 2 cores one such run took over 9 minutes
                  against about 1 for the others (torch's threads spin-wait on each other).

The time is the wall time of the whole command (imports, MPI start, model loading, all jobs,
summary), measured from here; speed-up = serial / parallel, medians of --repeats from this run.
OMP_NUM_THREADS and MKL_NUM_THREADS are removed from the commands' environment (except where set
on purpose above). Each job's wall_time_s from summary.json shows whether the ranks are balanced.
Each command is repeated when other processes competed for the CPUs while it ran
(bench/idle.py `guarded`; the foreign load of the kept runs is recorded). Writes the key
"mpi_scaling" of bench/results.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import ROOT, machine_record, save_result, warn_if_busy  # isort: skip
from checkout import checkout_record  # isort: skip
from idle import guarded  # isort: skip

import yaml

TEMPERATURES = [300, 600, 900, 1200]
SI_CIF = ROOT / "recipes" / "structures" / "Si_diamond.cif"


def venv_tool(name: str) -> str:
    beside = Path(sys.executable).parent / name
    found = str(beside) if beside.is_file() else shutil.which(name)
    if found is None:
        sys.exit(f"{name} not found next to {sys.executable} or on PATH (pip install '.[mpi]')")
    return found


def write_recipe(folder: Path, steps: int) -> Path:
    recipe = {
        "name": "mpi-scaling",
        "structure": {"file": str(SI_CIF), "supercell": [2, 2, 2]},
        "model": {"name": "chgnet", "device": "cpu"},
        "task": {"kind": "md", "ensemble": "nvt_langevin", "timestep_fs": 1.0, "steps": steps,
                 "temperature_K": TEMPERATURES, "seed": 5},
    }
    path = folder / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return path


def timed_command(command: list[str], env: dict, out_dir: Path) -> tuple[float, list[dict], str]:
    """(wall seconds, summary.json's jobs, stderr) of one whole command."""
    start = time.perf_counter()
    result = subprocess.run(command + ["--out", str(out_dir), "--overwrite"], env=env,
                            capture_output=True, text=True, cwd=out_dir.parent)
    elapsed = time.perf_counter() - start
    if result.returncode != 0:
        sys.exit(f"{' '.join(command)} failed ({result.returncode}):\n{result.stderr[-3000:]}")
    jobs = json.loads((out_dir / "summary.json").read_text())["jobs"]
    if any(job["status"] != "completed" for job in jobs):
        sys.exit(f"{' '.join(command)}: not every job completed: {jobs}")
    return elapsed, jobs, result.stderr


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=150, help="MD steps per job (150: about 10 s on 2 cores)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--ranks", type=int, default=2)
    parser.add_argument("--oversubscribed", action="store_true",
                        help="also time every rank taking every core (slow: minutes per run on 2 cores)")
    args = parser.parse_args(argv)

    cores = os.cpu_count() or 1
    driver, mpiexec = venv_tool("driver"), venv_tool("mpiexec")
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    env["DRIVER_OFFLINE"] = "1"
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [env.get("PYTHONPATH")])])  # this checkout's driver
    sides = {
        "serial": ([driver, "run"], env),
        "parallel": ([mpiexec, "-n", str(args.ranks), driver, "run"], env),
        # The ceiling: torch already spreads the serial run over the cores, so the speed-up ranks
        # can add is bounded by how well it does that. One thread, one process shows it.
        "serial_1_thread": ([driver, "run"], {**env, "OMP_NUM_THREADS": "1"}),
    }
    if args.oversubscribed:
        sides["oversubscribed"] = ([mpiexec, "-n", str(args.ranks), driver, "run"],
                                   {**env, "OMP_NUM_THREADS": str(cores)})
    load_before = warn_if_busy()
    times: dict[str, list[float]] = {side: [] for side in sides}
    job_times: dict[str, list[dict[str, float]]] = {side: [] for side in sides}
    thread_note = ""
    foreign_load: dict[str, list[float | None]] = {side: [] for side in sides}
    retries = 0
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        recipe = write_recipe(folder, args.steps)
        for repeat in range(args.repeats):  # interleaved: drifts in machine load hit every side alike
            for side, (command, side_env) in sides.items():
                print(f"repeat {repeat + 1}/{args.repeats}: {side} ...", file=sys.stderr, flush=True)
                (elapsed, jobs, stderr), foreign, tries = guarded(
                    lambda c=command, e=side_env, o=folder / side: timed_command(c + [str(recipe)], e, o))
                foreign_load[side].append(foreign)
                retries += tries - 1
                times[side].append(elapsed)
                job_times[side].append({job["job"]: job["wall_time_s"] for job in jobs})
                if side == "parallel":
                    thread_note = next((line.split(" ", 1)[1] for line in stderr.splitlines()
                                        if "torch thread" in line), "no thread message")

    med = {side: statistics.median(values) for side, values in times.items()}
    rows = {}
    for side in sides:
        per_job = {name: statistics.median(run[name] for run in job_times[side]) for name in job_times[side][0]}
        names = list(per_job)
        ranks = 1 if side.startswith("serial") else args.ranks
        per_rank = [round(sum(per_job[n] for n in names[r::ranks]), 2) for r in range(ranks)]
        rows[side] = {
            "command_s": round(med[side], 2),
            "runs_s": [round(t, 2) for t in times[side]],
            "job_wall_time_s": {n: round(t, 2) for n, t in per_job.items()},
            "jobs_per_rank_s": per_rank,
            "outside_jobs_s": round(med[side] - max(per_rank), 2),
            "foreign_cores_during_runs": foreign_load[side],
        }
    speedup = med["serial"] / med["parallel"]
    result = {
        "speedup": round(speedup, 3),
        # jobs per second of the ranks over that of one single-threaded process: how much of the
        # ideal (= ranks) the ranks reach when the torch threads of the serial run are set aside
        "speedup_over_serial_1_thread": round(med["serial_1_thread"] / med["parallel"], 3),
        "torch_threads_gain_serial": round(med["serial_1_thread"] / med["serial"], 3),
        **rows,
    }
    if "oversubscribed" in med:
        result["oversubscribed_speedup"] = round(med["serial"] / med["oversubscribed"], 3)

    print(f"4 MD jobs (CHGNet, Si64, {args.steps} steps each), whole-command wall time, "
          f"median of {args.repeats}; {cores} CPUs; parallel: {thread_note}")
    header = f"{'command':<16} {'wall s':>7} {'speed-up':>8}   {'jobs per rank s':<18} {'outside jobs s':>14}   per-job s"
    print(header)
    print("-" * len(header))
    for side, row in rows.items():
        label = side if side.startswith("serial") else f"{side} x{args.ranks}"
        print(f"{label:<16} {row['command_s']:>7.1f} {med['serial'] / med[side]:>7.2f}x   "
              f"{' + '.join(f'{t:.1f}' for t in row['jobs_per_rank_s']):<18} {row['outside_jobs_s']:>14.1f}   "
              f"{', '.join(f'{t:.1f}' for t in row['job_wall_time_s'].values())}")
    print(f"speed-up over one single-threaded process: {result['speedup_over_serial_1_thread']:.2f}x "
          f"(ideal {args.ranks}); torch's threads alone already gain {result['torch_threads_gain_serial']:.2f}x "
          "in the serial run")
    save_result("mpi_scaling", {
        "description": "driver run (1 process) vs mpiexec -n RANKS driver run, 4 independent MD jobs, whole command",
        "machine": machine_record("cpu", load_before),
        "settings": {"jobs": len(TEMPERATURES), "temperatures_K": TEMPERATURES, "model": "chgnet",
                     "structure": "Si diamond 2x2x2 (64 atoms)", "ensemble": "nvt_langevin", "timestep_fs": 1.0,
                     "steps": args.steps, "ranks": args.ranks, "repeats": args.repeats, "statistic": "median",
                     "parallel_threads": thread_note,
                     "oversubscribed_env": f"OMP_NUM_THREADS={cores}" if args.oversubscribed else None,
                     "runs_repeated_because_other_processes_competed": retries,
                     "checkout": checkout_record()},
        "results": result,
    })
    return 0


if __name__ == "__main__":
    sys.exit(main())
