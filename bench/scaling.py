"""Time and peak memory per MD step vs system size, per model family: how far each model goes here.

    python bench/scaling.py [--repeats 2 3 4 5 8] [--families ...] [--dtypes float32 ...]
                            [--max-step-s 20] [--target-s 2]

One MD step = one VelocityVerlet step (1 fs) on the driver's own potential (`as_calculator()`,
as the driver's MD runs it: one model call giving energy and forces; the driver's per-frame
extras are measured by bench/md_overhead.py), with the C allocator tuned as `driver` tunes it
(driver.memory). Structures: diamond Si, the 8-atom cubic cell repeated n x n x n (n = 4, 6, 8,
10: 512, 1728, 4096, 8000 atoms by default on the CPU; --repeats changes them), rattled by 0.05 Å.
Per size the peak memory of the steps above what was in use before them (driver.memory.PeakMemory)
and MB per atom; per family the growth of time per atom from the smallest to the largest size.
Targets (issue #29) on the CPU: growth <= 1.3x and <= 1 MB/atom from 512 to 8000 atoms.

Per family, three warm-up calls on 64 atoms; per size: one untimed first step (graph set-up, allocator), then k timed steps with k chosen so
they take about --target-s (2 <= k <= 10); reports s/step, steps/s and atom-steps/s. Budget:
a size whose estimated step (last size's time scaled by the atom count) exceeds --max-step-s is
skipped, and so are all larger ones; a first step over --max-step-s is recorded alone and ends
that family. About 3-5 minutes on 2 CPU cores with the defaults.

On CUDA (torch.cuda.is_available()) the default sizes go on to about 100k atoms (n up to 23),
for float32 and float64 (CHGNet: float32 only); a size that runs out of GPU memory ends the
series and the largest size that fitted is recorded, with the peak memory per size.
Writes the key "md_scaling" of bench/results.json.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import math
import sys
import tempfile
import time
from pathlib import Path

from common import machine_record, save_result, specs, warn_if_busy  # isort: skip
from checkout import checkout_record  # isort: skip
from idle import guarded  # isort: skip

import torch
from ase import units
from ase.build import bulk
from ase.md.verlet import VelocityVerlet

from driver.errors import InputError
from driver.memory import PeakMemory, tune_allocator
from driver.models import load_model
from driver.specs import ModelSpec

CPU_REPEATS = [4, 6, 8, 10]
CUDA_REPEATS = [2, 4, 5, 8, 10, 12, 14, 16, 18, 20, 23]  # up to 97,336 atoms


def si_supercell(n: int):
    atoms = bulk("Si", "diamond", a=5.43, cubic=True).repeat((n, n, n))
    atoms.rattle(0.05, seed=1)
    return atoms


def _is_oom(exc: BaseException) -> bool:
    return isinstance(exc, torch.cuda.OutOfMemoryError) or "out of memory" in str(exc).lower()


def time_point(model, n: int, target_s: float, max_step_s: float, cuda: bool) -> dict:
    atoms = si_supercell(n)
    atoms.calc = model.as_calculator()
    dynamics = VelocityVerlet(atoms, timestep=1.0 * units.fs)
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    with PeakMemory(model.device) as peak:
        start = time.perf_counter()
        atoms.get_forces()  # the first model call: ASE's step 0
        first = time.perf_counter() - start
        point = {"atoms": len(atoms), "first_call_s": round(first, 4)}
        if first > max_step_s:
            point.update(s_per_step=round(first, 3), timed_steps=0,
                         note=f"first call {first:.1f} s > {max_step_s:g} s: not timed further")
        else:
            steps = max(2, min(10, math.ceil(target_s / max(first, 1e-6))))
            start = time.perf_counter()
            dynamics.run(steps)
            per_step = (time.perf_counter() - start) / steps
            point.update(s_per_step=round(per_step, 5), timed_steps=steps)
    point["steps_per_s"] = round(1.0 / point["s_per_step"], 3)
    point["atom_steps_per_s"] = round(len(atoms) / point["s_per_step"], 1)
    point["ms_per_atom_step"] = round(1000 * point["s_per_step"] / len(atoms), 4)
    if peak.peak_bytes is not None:
        point["peak_memory_GiB"] = round(peak.peak_bytes / 2**30, 3)
        point["peak_MB_per_atom"] = round(peak.peak_bytes / 2**20 / len(atoms), 3)
    if cuda:
        point["peak_gpu_memory_GiB"] = round(torch.cuda.max_memory_allocated() / 2**30, 3)
    atoms.calc = None
    return point


def warm_up(model, calls: int = 3) -> None:
    """First calls of a fresh model are slow (lazy init, allocator, kernels): not a size effect."""
    atoms = si_supercell(2)
    atoms.calc = model.as_calculator()
    for seed in range(calls):
        atoms.rattle(0.01, seed=seed)
        atoms.get_forces()
    atoms.calc = None


def series(model, repeats: list[int], target_s: float, max_step_s: float, cuda: bool) -> dict:
    points, skipped, stopped = [], [], None
    warm_up(model)
    for n in repeats:
        n_atoms = 8 * n**3
        if stopped is not None:
            skipped.append({"atoms": n_atoms, "why": stopped})
            continue
        if points:
            estimate = points[-1]["s_per_step"] * n_atoms / points[-1]["atoms"]
            if estimate > max_step_s:
                stopped = f"estimated {estimate:.3g} s per step > {max_step_s:g} s"
                skipped.append({"atoms": n_atoms, "why": stopped})
                continue
        print(f"  {n_atoms} atoms ...", file=sys.stderr, flush=True)
        try:
            point, foreign, _ = guarded(lambda n=n: time_point(model, n, target_s, max_step_s, cuda), tries=2)
        except Exception as exc:
            if not (cuda and _is_oom(exc)):
                raise
            stopped = f"out of GPU memory at {n_atoms} atoms"
        if stopped is not None and stopped.startswith("out of GPU memory"):
            gc.collect()  # the exception's frames are gone now
            torch.cuda.empty_cache()
            skipped.append({"atoms": n_atoms, "why": stopped})
            continue
        point["foreign_cores"] = foreign
        points.append(point)
        if point["timed_steps"] == 0:
            stopped = point["note"]
    result = {"points": points, "skipped_sizes": skipped}
    if len(points) >= 2:
        result["time_per_atom_growth"] = round(points[-1]["ms_per_atom_step"] / points[0]["ms_per_atom_step"], 3)
        result["growth_between_atoms"] = [points[0]["atoms"], points[-1]["atoms"]]
    if cuda:
        result["largest_that_fit"] = points[-1]["atoms"] if points else None
    return result


def main(argv: list[str] | None = None) -> int:
    cuda = torch.cuda.is_available()
    tune_allocator()  # as `driver` runs
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, nargs="+", default=CUDA_REPEATS if cuda else CPU_REPEATS,
                        help="supercell repeats n of the 8-atom cubic Si cell (8 n^3 atoms)")
    parser.add_argument("--families", nargs="+", default=["chgnet", "m3gnet", "mace-mp-0"])
    parser.add_argument("--dtypes", nargs="+", default=["float32", "float64"] if cuda else ["float32"])
    parser.add_argument("--max-step-s", type=float, default=20.0, help="skip sizes whose step would take longer")
    parser.add_argument("--target-s", type=float, default=2.0, help="timed seconds per size (sets the steps)")
    args = parser.parse_args(argv)
    repeats = sorted(set(args.repeats))

    load_before = warn_if_busy()
    device = "cuda" if cuda else "cpu"
    results: dict[str, dict] = {}
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for family, fields, label in specs(Path(tmp)):
            if family not in args.families:
                continue
            for dtype in args.dtypes:
                key = f"{family}/{dtype}"
                if fields is None:
                    results[key] = {"skipped": "weights not found"}
                    continue
                try:
                    with contextlib.redirect_stdout(sys.stderr):
                        model = load_model(ModelSpec(**{**fields, "dtype": dtype, "device": device}))
                except InputError as exc:  # CHGNet: float32 only
                    results[key] = {"skipped": str(exc)}
                    continue
                print(f"{key} on {model.device}:", file=sys.stderr, flush=True)
                results[key] = {"model": label, "device": model.device,
                                **series(model, repeats, args.target_s, args.max_step_s, cuda)}
                del model
                if cuda:
                    torch.cuda.empty_cache()
    total = time.perf_counter() - started

    print(f"MD step (VelocityVerlet, the driver's energy+forces call) vs size on {device}; {total:.0f} s in all")
    header = (f"{'family/dtype':<18} {'atoms':>6} {'s/step':>9} {'ms/atom':>8} {'atom-steps/s':>13} {'peak GiB':>9} "
              f"{'MB/atom':>8}") + (f" {'GPU GiB':>8}" if cuda else "")
    print(header)
    print("-" * len(header))
    for key, row in results.items():
        if "skipped" in row:
            print(f"{key:<18} skipped ({row['skipped']})")
            continue
        for point in row["points"]:
            line = (f"{key:<18} {point['atoms']:>6} {point['s_per_step']:>9.4f} {point['ms_per_atom_step']:>8.3f} "
                    f"{point['atom_steps_per_s']:>13.0f} {point.get('peak_memory_GiB', float('nan')):>9.2f} "
                    f"{point.get('peak_MB_per_atom', float('nan')):>8.2f}")
            if cuda:
                line += f" {point['peak_gpu_memory_GiB']:>8.2f}"
            print(line + (f"   ({point['note']})" if "note" in point else ""))
        for skip in row["skipped_sizes"]:
            print(f"{key:<18} {skip['atoms']:>6} skipped: {skip['why']}")
        if "time_per_atom_growth" in row:
            low, high = row["growth_between_atoms"]
            print(f"{key:<18} time per atom {low} -> {high} atoms: x{row['time_per_atom_growth']:.2f}")
    save_result("md_scaling", {
        "description": "seconds and peak memory per MD step (the driver's energy+forces call) vs atom count",
        "machine": machine_record(device, load_before),
        "settings": {"structure": "Si diamond, 8-atom cubic cell repeated n x n x n, rattled 0.05 Å",
                     "repeats_n": repeats, "dtypes": args.dtypes, "max_step_s": args.max_step_s,
                     "target_timed_s_per_size": args.target_s, "total_runtime_s": round(total, 1),
                     "checkout": checkout_record()},
        "results": results,
    })
    return 0


if __name__ == "__main__":
    sys.exit(main())
