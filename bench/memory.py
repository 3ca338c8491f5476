"""Peak memory and wall time of `driver fit` and a `single_point` run against the structure count.

    python bench/memory.py [--families chgnet m3gnet] [--counts 200 2000]

The 200 PBE Si structures of ../shared/data/si_rare_events_pbe.extxyz (63-65 atoms), and the same
200 repeated to reach each count. Each command runs as its own process (as a user runs it); its
peak resident size is the process's own ru_maxrss (and on a GPU its peak device memory, torch's
counter). Before the batch planner, `driver fit` on the
200 was killed by the kernel at 24 GB. Targets (issue #29): peak <= 4 GB at 2,000 structures and
time linear in the count. About 6 minutes on 2 CPU cores.
Writes the key "memory" of bench/results.json.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import ROOT, machine_record, models_dir, save_result, warn_if_busy  # isort: skip
from checkout import checkout_record  # isort: skip

import yaml
from ase.io import read, write

LABELS = ROOT.parent / "shared" / "data" / "si_rare_events_pbe.extxyz"
MEASURED = ("import resource, sys\nfrom driver.cli import main\ncode = main(sys.argv[1:])\n"
            "print('peak_rss_kb', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)\n"
            "torch = sys.modules.get('torch')\n"
            "if torch is not None and torch.cuda.is_available():\n"
            "    print('peak_gpu_bytes', torch.cuda.max_memory_allocated(), file=sys.stderr)\n"
            "sys.exit(code)")


def run_measured(args: list[str], cwd: Path) -> dict:
    """One driver command in a fresh process: wall seconds and its peak resident GB."""
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", MEASURED, *args], cwd=cwd, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if done.returncode != 0 or "peak_rss_kb" not in done.stderr:
        raise SystemExit(f"bench/memory.py: driver {' '.join(args)} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    peak_kb = int(done.stderr.split("peak_rss_kb ")[1].split()[0])
    gpu = (int(done.stderr.split("peak_gpu_bytes ")[1].split()[0]) / 2**30) if "peak_gpu_bytes" in done.stderr else None
    decision = next((line.split(" ", 1)[1] for line in done.stderr.splitlines() if "batched: auto on" in line), None)
    return {"wall_s": round(wall, 2), "peak_rss_GB": round(peak_kb / 2**20, 3),
            "peak_gpu_GiB": None if gpu is None else round(gpu, 3), "auto_decision": decision}


def model_args(family: str) -> list[str]:
    if family == "m3gnet":
        folder = models_dir()
        if folder is None:
            raise SystemExit("bench/memory.py: M3GNet weights not found (../shared/models or DRIVER_MODELS_DIR)")
        return ["--model", "m3gnet", "--models-dir", str(folder)]
    return ["--model", family]


def single_point_recipe(family: str, frames: Path, folder: Path) -> Path:
    model = {"name": family}
    if family == "m3gnet":
        model["models_dir"] = str(models_dir())
    recipe = {"name": f"sp_{family}_{frames.stem}", "structure": {"file": str(frames), "index": 0},
              "model": model, "task": {"kind": "single_point", "index": ":", "chunk_size": 16},
              "output": {"directory": str(folder / "runs" / frames.stem / family)}}
    path = folder / f"sp_{family}_{frames.stem}.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--families", nargs="+", default=["chgnet", "m3gnet"])
    parser.add_argument("--counts", type=int, nargs="+", default=[200, 2000])
    args = parser.parse_args(argv)
    load_before = warn_if_busy()
    structures = read(LABELS, ":")
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        files = {}
        for count in args.counts:
            files[count] = folder / f"si_{count}.extxyz"
            write(files[count], [structures[i % len(structures)] for i in range(count)])
        for family in args.families:
            rows = {}
            for count in args.counts:
                print(f"{family}: fit and single_point on {count} structures ...", file=sys.stderr, flush=True)
                fit = run_measured(["fit", *model_args(family), "--labels", str(files[count]),
                                    "--out", str(folder / f"fit_{family}_{count}")], folder)
                point = run_measured(["run", str(single_point_recipe(family, files[count], folder)), "--overwrite"], folder)
                rows[str(count)] = {"fit": fit, "single_point": point}
            results[family] = rows
    print("Peak resident memory and wall time against the number of 63-65-atom Si structures (CPU)")
    header = f"{'family':<8} {'command':<13} " + " ".join(f"{f'{c} GB':>9} {f'{c} s':>8}" for c in args.counts)
    print(header)
    print("-" * len(header))
    for family, rows in results.items():
        for command in ("fit", "single_point"):
            cells = " ".join(f"{rows[str(c)][command]['peak_rss_GB']:>9.2f} {rows[str(c)][command]['wall_s']:>8.1f}"
                             for c in args.counts)
            print(f"{family:<8} {command:<13} {cells}")
    save_result("memory", {
        "description": "peak resident GB and wall seconds of `driver fit` and a single_point run vs structure count",
        "machine": machine_record("cpu", load_before),
        "settings": {"labels": str(LABELS.name), "counts": args.counts, "checkout": checkout_record()},
        "results": results,
    })
    return 0


if __name__ == "__main__":
    sys.exit(main())
