"""Where the time of one driver MD job goes: model forward, backward (forces and stress by
autograd), graph construction, the ASE integrator, the driver's per-frame work, HDF5 writing.

    python bench/profile_md.py [--steps 100] [--write-every 10] [--rate 100] [--cprofile]

Profiles one `run_recipe` MD job (CHGNet, 64-atom Si, NVE 1 fs, --steps steps, HDF5 output
with write_every --write-every) after an untimed warm-up run. With py-spy installed
(pip install py-spy) the job is sampled from outside at --rate Hz without pausing it
(py-spy record --nonblocking); otherwise (or with --cprofile) cProfile runs in-process, which
slows Python-heavy code (ASE, h5py, pymatgen) more than torch's kernels, so its shares lean
towards the Python side. Only samples inside driver.runner.run_job count; each is put in the
first category whose frame it contains (CATEGORIES, in order). Writes the key "md_profile" of
bench/results.json.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import json
import pstats
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

from common import machine_record, save_result, warn_if_busy  # isort: skip
from checkout import checkout_record  # isort: skip

# (category, substrings of a py-spy frame "qualname (path:line)"); first match wins.
CATEGORIES = [
    ("HDF5 writing (H5MDWriter)", ["H5MDWriter."]),
    ("explosion check (neighbor_list)", ["explosion (driver/tasks/md.py"]),
    ("other per-frame driver work", ["run_md.<locals>.record"]),
    ("model backward (autograd: forces, stress)", ["grad (torch/autograd/__init__.py"]),
    ("graph construction (CrystalGraphConverter)", ["CrystalGraphConverter."]),
    ("ASE Atoms -> pymatgen Structure", ["AseAtomsAdaptor."]),
    ("graph batching (BatchedGraph.from_graphs)", ["BatchedGraph."]),
    ("model forward", ["CHGNet.forward", "CHGNet.predict_graph"]),
    ("calculator, rest", ["CHGNetCalculator.calculate"]),
    ("ASE integrator and rest of the job", ["run_job (driver/runner.py"]),
]


def run_job_once(steps: int, write_every: int, out_dir: Path) -> dict:
    from md_overhead import driver_run, make_recipe

    recipe, text = make_recipe({"name": "chgnet"}, steps, out_dir, write_every)
    job_s, whole_s, job = driver_run(recipe, text)
    return {"job_wall_time_s": job_s, "run_recipe_s": round(whole_s, 3), "frames": job["frames"]}


def classify_stacks(lines) -> tuple[Counter, int]:
    counts: Counter = Counter()
    total = 0
    for line in lines:
        stack, _, n = line.rstrip("\n").rpartition(" ")
        if "_profiled_job (" not in stack or "run_job (driver/runner.py" not in stack:
            continue  # imports, model loading, the warm-up job
        frames = stack.split(";")
        total += int(n)
        for name, needles in CATEGORIES:
            if any(needle in frame for frame in frames for needle in needles):
                counts[name] += int(n)
                break
    return counts, total


def with_py_spy(py_spy: str, args) -> tuple[dict, Counter, int]:
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "stacks.txt"
        result_file = Path(tmp) / "job.json"
        child = [sys.executable, __file__, "--child", str(result_file), "--steps", str(args.steps),
                 "--write-every", str(args.write_every)]
        command = [py_spy, "record", "--nonblocking", "--format", "raw", "-r", str(args.rate), "-o", str(raw), "--"]
        done = subprocess.run(command + child, capture_output=True, text=True)
        if done.returncode != 0 or not raw.is_file():
            sys.exit(f"py-spy failed ({done.returncode}); try --cprofile:\n{done.stderr[-2000:]}")
        counts, total = classify_stacks(raw.read_text().splitlines())
        return json.loads(result_file.read_text()), counts, total


def with_cprofile(args) -> tuple[dict, Counter, int]:
    """cProfile's cumulative times of the functions that bound each category."""
    with tempfile.TemporaryDirectory() as tmp:
        run_job_once(args.steps, args.write_every, Path(tmp) / "warm")
        profiler = cProfile.Profile()
        profiler.enable()
        job = run_job_once(args.steps, args.write_every, Path(tmp) / "prof")
        profiler.disable()
    stats = pstats.Stats(profiler).stats

    def cum(path_part: str, name: str) -> float:
        return sum(v[3] for (path, _, func), v in stats.items() if func == name and path_part in path)

    job_s = cum("driver/runner.py", "run_job")
    calc = cum("chgnet/model/dynamics.py", "calculate")
    backward = cum("torch/autograd/__init__.py", "grad")
    graph = cum("chgnet/graph/converter.py", "forward")
    pymatgen = cum("pymatgen/io/ase.py", "get_structure")
    batching = cum("chgnet/graph/crystalgraph.py", "from_graphs") + cum("chgnet/model/model.py", "from_graphs")
    forward = cum("chgnet/model/model.py", "predict_graph") - backward - batching
    hdf5 = cum("driver/output.py", "append") + cum("driver/output.py", "write_result")
    explosion = cum("driver/tasks/md.py", "explosion")
    record = cum("driver/tasks/md.py", "record")
    seconds = {
        CATEGORIES[0][0]: hdf5, CATEGORIES[1][0]: explosion,
        CATEGORIES[2][0]: record - explosion - cum("driver/output.py", "append"),
        CATEGORIES[3][0]: backward, CATEGORIES[4][0]: graph, CATEGORIES[5][0]: pymatgen,
        CATEGORIES[6][0]: batching, CATEGORIES[7][0]: forward,
        CATEGORIES[8][0]: calc - backward - graph - pymatgen - batching - forward,
    }
    seconds[CATEGORIES[9][0]] = job_s - sum(seconds.values())
    scale = 1000  # counts in milliseconds
    return job, Counter({k: max(0, int(round(v * scale))) for k, v in seconds.items()}), int(round(job_s * scale))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--write-every", type=int, default=10, help="the driver's default is 10")
    parser.add_argument("--rate", type=int, default=100, help="py-spy samples per second")
    parser.add_argument("--cprofile", action="store_true", help="use cProfile even when py-spy is installed")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.child:  # under py-spy: warm up, then the profiled job; only run_job's samples count
        with tempfile.TemporaryDirectory() as tmp:
            with contextlib.redirect_stdout(sys.stderr):
                from md_overhead import driver_run, make_recipe

                warm, text = make_recipe({"name": "chgnet"}, 5, Path(tmp) / "warm", args.write_every)
                driver_run(warm, text)
            job = _profiled_job(args.steps, args.write_every, Path(tmp) / "prof")
        Path(args.child).write_text(json.dumps(job))
        return 0

    load_before = warn_if_busy()
    py_spy = None if args.cprofile else (shutil.which("py-spy", path=str(Path(sys.executable).parent))
                                         or shutil.which("py-spy"))
    if py_spy:
        job, counts, total = with_py_spy(py_spy, args)
        tool = f"py-spy record --nonblocking -r {args.rate}"
    else:
        job, counts, total = with_cprofile(args)
        tool = "cProfile"
    job_s = job["job_wall_time_s"]
    rows = {name: {"share": round(counts[name] / total, 4), "seconds": round(counts[name] / total * job_s, 3),
                   "ms_per_step": round(counts[name] / total * job_s / args.steps * 1e3, 2)}
            for name, _ in CATEGORIES}
    print(f"One driver MD job: CHGNet, Si64, NVE 1 fs, {args.steps} steps, write_every {args.write_every} "
          f"({job['frames']} frames); job wall time {job_s:.2f} s; {tool}, {total} samples in the job")
    header = f"{'where':<44} {'share':>6} {'s':>7} {'ms/step':>8}"
    print(header)
    print("-" * len(header))
    for name, row in sorted(rows.items(), key=lambda item: -item[1]["share"]):
        print(f"{name:<44} {row['share']:>6.1%} {row['seconds']:>7.3f} {row['ms_per_step']:>8.2f}")
    save_result("md_profile", {
        "description": "where one driver MD job's time goes (CHGNet, 64-atom Si)",
        "machine": machine_record("cpu", load_before),
        "settings": {"steps": args.steps, "write_every": args.write_every, "tool": tool,
                     "samples_in_job": total if py_spy else None,
                     "checkout": checkout_record()},
        "results": {"job": job, "categories": rows},
    })
    return 0


def _profiled_job(steps: int, write_every: int, out_dir: Path) -> dict:
    """The profiled job; its name in the stacks tells its samples from the warm-up's."""
    with contextlib.redirect_stdout(sys.stderr):
        return run_job_once(steps, write_every, out_dir)


if __name__ == "__main__":
    sys.exit(main())
