"""The GPU benchmarks of the one-shot device check (bench/gpu/check.sh runs this after the tests).

    python bench/gpu/gpu_bench.py --out OUT/gpu-check.json [--grid gpu|tiny] [--budget-s 330]
                              [--mace-model PATH] [--device cuda|cpu]

Per model family (CHGNet 0.3.0, M3GNet-MP-2021.2.8-PES, MACE with MACE-MP-0 medium's
architecture and random weights), in this order, each section inside its share of the budget:

1. batched vs one-by-one (`driver.models.batch`, what `batched: auto` and replica MD use):
   NEB images (Li2O 2x2x2 with a Li vacancy, 95 atoms, rattled), phonon supercells (Si 2x2x2,
   64 atoms, one atom displaced 0.01 Å each), forces; 8, 32 and 128 structures; float32.
2. replica MD through run_recipe: run.batch_replicas true vs false, 8/32/128 replicas of 64-atom
   Si (one temperature each), whole run_recipe wall time; float32.
3. driver overhead: a driver MD job (run_recipe at the default output settings, the job's
   wall_time_s) vs a bare ASE VelocityVerlet loop on the same calculator, 64-atom Si; float32.
4. size ladder: VelocityVerlet steps/s and atom-steps/s of the driver's own energy+forces call
   (`as_calculator()`) at 64, 512, 4096, 32768 atoms and on
   (Si 8 n^3), float32 and float64 where the family has it; a ladder stops at the first
   out-of-memory, at a step over --max-step-s (60), or when the next size would not fit the
   budget; peak GPU memory per size.

The JSON is rewritten after every measurement (atomically), so a run cut off by its time limit
still returns every figure taken so far; its "status" says "running" until the end. `--grid tiny`
is the CPU rehearsal: 8-atom cells, 2 and 4 structures, a few steps.
"""

from __future__ import annotations

import argparse
import datetime
import gc
import json
import math
import os
import platform
import statistics
import sys
import tempfile
import time
import traceback
from pathlib import Path

os.environ.setdefault("DRIVER_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))

from mace import modules as _mace_modules  # noqa: E402,F401  # isort: skip  (mace before e3nn)
import glue  # noqa: E402
import torch  # noqa: E402
from ase import units  # noqa: E402
from ase.build import bulk  # noqa: E402
from ase.io import read  # noqa: E402
from ase.md.verlet import VelocityVerlet  # noqa: E402

M3GNET_NAME = "M3GNet-MP-2021.2.8-PES"
GRIDS = {
    # n of the 8-atom Si cell (8 n^3 atoms): 64, 512, 4096, 32768, then on until memory or time runs out
    "gpu": {"ladder_n": [2, 4, 8, 16, 20, 25, 32, 40, 50], "counts": [8, 32, 128], "replica_steps": 10,
            "overhead_steps": 100, "neb_repeat": 2, "phonon_repeat": 2, "replica_supercell": 2, "repeats": 3},
    "tiny": {"ladder_n": [1, 2], "counts": [2, 3], "replica_steps": 2,
             "overhead_steps": 3, "neb_repeat": 1, "phonon_repeat": 1, "replica_supercell": 1, "repeats": 1},
}
# Section shares of the budget (unused time rolls over to the next section).
SHARES = {"batched": 0.17, "replicas": 0.2, "overhead": 0.08, "ladder": 0.55}
MD_TEMPERATURE = {"mace-mp-0": 100.0}  # random weights: hot MD collapses the structure
MD_TIMESTEP = {"mace-mp-0": 0.5}


def now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")


def is_oom(exc: BaseException) -> bool:
    return isinstance(exc, torch.cuda.OutOfMemoryError) or "out of memory" in str(exc).lower()


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def free(device: str) -> None:
    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.empty_cache()


class Record:
    """The JSON under $OUT, rewritten after every figure."""

    def __init__(self, path: Path, data: dict):
        self.path = path
        self.data = data
        self.save()

    def save(self) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data, indent=1, default=str) + "\n")
        tmp.replace(self.path)

    def put(self, section: str, key: str, value) -> None:
        self.data.setdefault(section, {})[key] = value
        self.save()


class Budget:
    def __init__(self, total_s: float):
        self.start = time.monotonic()
        self.total = total_s
        self.section_end = self.start

    def open(self, share: float) -> None:
        """The next section may run until its cumulative share of the budget (rolling over)."""
        self.section_end = max(self.section_end, time.monotonic()) + share * self.total
        self.section_end = min(self.section_end, self.start + self.total)

    def left(self) -> float:
        return self.section_end - time.monotonic()

    def left_overall(self) -> float:
        return self.start + self.total - time.monotonic()


def timed(fn, device: str) -> float:
    sync(device)
    start = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - start


# --- structures -----------------------------------------------------------------------------

def si(n: int, rattle: float = 0.05, seed: int = 1):
    atoms = bulk("Si", "diamond", a=5.43, cubic=True).repeat((n, n, n))
    atoms.rattle(rattle, seed=seed)
    return atoms


def neb_images(count: int, repeat: int) -> list:
    """Stand-ins for NEB images: Li2O (repeat^3 cells) with one Li removed, rattled apart."""
    host = read(glue.LI2O_CIF).repeat(repeat)
    li = [i for i, z in enumerate(host.numbers) if z == 3]
    del host[li[0]]
    images = []
    for k in range(count):
        image = host.copy()
        image.rattle(0.03, seed=100 + k)
        images.append(image)
    return images


def phonon_supercells(count: int, repeat: int) -> list:
    """As phonopy's displaced supercells: Si (2 n)^3-cell supercell, one atom moved 0.01 Å each."""
    base = bulk("Si", "diamond", a=5.43, cubic=True).repeat(repeat)
    cells = []
    for k in range(count):
        cell = base.copy()
        cell.positions[k % len(cell), k % 3] += 0.01
        cells.append(cell)
    return cells


# --- sections -------------------------------------------------------------------------------

def section_batched(rec: Record, budget: Budget, models, grid: dict, device: str) -> None:
    kinds = {"neb": lambda c: neb_images(c, grid["neb_repeat"]), "phonons": lambda c: phonon_supercells(c, grid["phonon_repeat"])}
    for family, model in models("float32"):
        for kind, make in kinds.items():
            estimate = None
            for count in grid["counts"]:
                key = f"{family}/{kind}/{count}"
                if estimate is not None and 2.5 * estimate * count > budget.left():
                    rec.put("batched", key, {"skipped": f"budget: ~{2.5 * estimate * count:.0f} s needed, "
                                                        f"{budget.left():.0f} s left"})
                    continue
                structures = make(count)
                try:
                    glue.batched(model, structures[:2])  # warm-up of both paths
                    glue.one_by_one(model, structures[:2])
                    t_batch, t_single = [], []
                    for _ in range(grid["repeats"] if count <= 32 else 1):
                        t_batch.append(timed(lambda s=structures: glue.batched(model, s), device))
                        t_single.append(timed(lambda s=structures: glue.one_by_one(model, s), device))
                    b, o = statistics.median(t_batch), statistics.median(t_single)
                    row = {"structures": count, "atoms_each": len(structures[0]), "batched_s": round(b, 4),
                           "one_by_one_s": round(o, 4), "speedup": round(o / b, 2),
                           "batched_runs_s": [round(t, 4) for t in t_batch],
                           "one_by_one_runs_s": [round(t, 4) for t in t_single]}
                    if device.startswith("cuda"):
                        row["peak_gpu_memory_GiB"] = round(torch.cuda.max_memory_allocated() / 2**30, 3)
                    estimate = (b + o) / count
                except Exception as exc:  # noqa: BLE001  # one failure is a figure, not the end
                    row = {"error": f"{type(exc).__name__}: {str(exc)[:300]}", "oom": is_oom(exc)}
                    free(device)
                rec.put("batched", key, row)
                print(f"batched  {key:28s} {row}", flush=True)


def section_replicas(rec: Record, budget: Budget, specs, models, grid: dict, device: str, work: Path) -> None:
    steps = grid["replica_steps"]
    n = grid["replica_supercell"]
    for family, model in models("float32"):
        fields = specs[family]
        estimate = None
        try:  # warm-up: the first run_recipe of a model pays one-off costs (imports, HDF5, kernels)
            with glue.reusing_model(model):
                glue.run_md_recipe(work / f"rep-{family}-warm", model_fields=fields, dtype="float32", device=device,
                                   supercell=[n, n, n], temperatures_K=[300.0, 301.0], steps=1, batch_replicas=True,
                                   timestep_fs=MD_TIMESTEP.get(family, 1.0))
        except Exception as exc:  # noqa: BLE001
            rec.put("replicas", f"{family}/warm-up", {"error": f"{type(exc).__name__}: {str(exc)[:300]}"})
            continue
        for count in grid["counts"]:
            key = f"{family}/{count}"
            if estimate is not None and 2.5 * estimate * count > budget.left():
                rec.put("replicas", key, {"skipped": f"budget: ~{2.5 * estimate * count:.0f} s needed, "
                                                     f"{budget.left():.0f} s left"})
                continue
            temperatures = [float(MD_TEMPERATURE.get(family, 300.0) + k) for k in range(count)]
            row = {"replicas": count, "atoms_each": 8 * n**3, "steps": steps}
            try:
                with glue.reusing_model(model):
                    runs: dict[bool, list[float]] = {True: [], False: []}
                    # interleaved, the order swapped on the repeat; the smaller counts repeated
                    order = [False, True, True, False] if count <= grid["counts"][0] and grid["repeats"] > 1 else [False, True]
                    for together in order:
                        run = lambda t=together: glue.run_md_recipe(  # noqa: E731
                            work / f"rep-{family}-{count}-{t}", model_fields=fields, dtype="float32",
                            device=device, supercell=[n, n, n], temperatures_K=temperatures, steps=steps,
                            batch_replicas=t, timestep_fs=MD_TIMESTEP.get(family, 1.0), write_every=steps)
                        runs[together].append(timed(run, device))
                    times = {t: min(v) for t, v in runs.items()}
                    row["runs_s"] = {"batched": [round(t, 3) for t in runs[True]],
                                     "one_by_one": [round(t, 3) for t in runs[False]]}
                row.update(batched_s=round(times[True], 3), one_by_one_s=round(times[False], 3),
                           speedup=round(times[False] / times[True], 2),
                           batched_ms_per_replica_step=round(times[True] / (count * steps) * 1e3, 3),
                           one_by_one_ms_per_replica_step=round(times[False] / (count * steps) * 1e3, 3))
                estimate = (times[True] + times[False]) / count
            except Exception as exc:  # noqa: BLE001
                row["error"] = f"{type(exc).__name__}: {str(exc)[:300]}"
                row["oom"] = is_oom(exc)
                free(device)
            rec.put("replicas", key, row)
            print(f"replicas {key:28s} {row}", flush=True)


def bare_md(model, atoms, steps: int, timestep_fs: float) -> None:
    atoms = atoms.copy()
    model.calculator.reset()
    atoms.calc = model.calculator
    VelocityVerlet(atoms, timestep=timestep_fs * units.fs).run(steps)


def section_overhead(rec: Record, budget: Budget, specs, models, grid: dict, device: str, work: Path) -> None:
    steps = grid["overhead_steps"]
    n = grid["replica_supercell"]
    for family, model in models("float32"):
        if budget.left() < 5:
            rec.put("overhead", family, {"skipped": f"budget: {budget.left():.0f} s left"})
            continue
        timestep = MD_TIMESTEP.get(family, 1.0)
        row = {"atoms": 8 * n**3, "steps": steps}
        try:
            with glue.reusing_model(model):
                def driver_job(k: int) -> float:
                    jobs = glue.run_md_recipe(work / f"ovh-{family}-{k}", model_fields=specs[family], dtype="float32",
                                              device=device, supercell=[n, n, n],
                                              temperatures_K=[MD_TEMPERATURE.get(family, 300.0)], steps=steps,
                                              batch_replicas=False, timestep_fs=timestep, ensemble="nve")
                    return float(jobs[0]["wall_time_s"])
                start = si(n)
                bare_md(model, start, 2, timestep)  # warm-up
                driver_job(-1)
                bare, job = [], []
                for k in range(grid["repeats"]):
                    bare.append(timed(lambda: bare_md(model, start, steps, timestep), device))
                    job.append(driver_job(k))
            b, d = statistics.median(bare), statistics.median(job)
            row.update(bare_s=round(b, 4), driver_s=round(d, 4), driver_over_bare=round(d / b, 3),
                       driver_ms_per_step_over_bare=round((d - b) / steps * 1e3, 3),
                       bare_ms_per_step=round(b / steps * 1e3, 3), bare_runs_s=[round(t, 4) for t in bare],
                       driver_runs_s=[round(t, 4) for t in job])
        except Exception as exc:  # noqa: BLE001
            row["error"] = f"{type(exc).__name__}: {str(exc)[:300]}"
            free(device)
        rec.put("overhead", family, row)
        print(f"overhead {family:28s} {row}", flush=True)


def ladder_point(model, n: int, device: str, max_step_s: float, target_s: float) -> dict:
    atoms = si(n)
    atoms.calc = model.as_calculator()  # the driver's own energy+forces call, as its MD runs it
    dynamics = VelocityVerlet(atoms, timestep=1.0 * units.fs)
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    first = timed(atoms.get_forces, device)  # ASE's step 0: graph set-up, allocator
    point = {"atoms": len(atoms), "first_call_s": round(first, 4)}
    if first > max_step_s:
        point.update(s_per_step=round(first, 3), timed_steps=0, note=f"first call {first:.1f} s > {max_step_s:g} s")
    else:
        steps = max(2, min(20, math.ceil(target_s / max(first, 1e-6))))
        per_step = timed(lambda: dynamics.run(steps), device) / steps
        point.update(s_per_step=round(per_step, 5), timed_steps=steps)
    point["steps_per_s"] = round(1.0 / point["s_per_step"], 3)
    point["atom_steps_per_s"] = round(len(atoms) / point["s_per_step"], 1)
    if device.startswith("cuda"):
        point["peak_gpu_memory_GiB"] = round(torch.cuda.max_memory_allocated() / 2**30, 3)
    atoms.calc = None
    return point


def section_ladder(rec: Record, budget: Budget, ladders: list, grid: dict, device: str,
                   max_step_s: float) -> None:
    end = budget.section_end
    for index, (key, load_model) in enumerate(ladders):
        # each remaining ladder gets an equal share of what is left of the section
        share = (end - time.monotonic()) / (len(ladders) - index)
        ladder_end = time.monotonic() + share
        result = {"points": [], "stopped": None}
        try:
            model = load_model()
        except Exception as exc:  # noqa: BLE001
            rec.put("ladder", key, {"skipped": f"{type(exc).__name__}: {str(exc)[:300]}"})
            continue
        if model is None:
            continue
        result["device"] = model.device
        try:  # the first calls of a fresh model (lazy init, kernels, allocator) are not a size effect
            warm = si(grid["ladder_n"][0])
            warm.calc = model.as_calculator()
            for seed in range(2):
                warm.rattle(0.01, seed=seed)
                warm.get_forces()
        except Exception as exc:  # noqa: BLE001
            rec.put("ladder", key, {"skipped": f"warm-up failed: {type(exc).__name__}: {str(exc)[:300]}"})
            continue
        for n in grid["ladder_n"]:
            atoms = 8 * n**3
            left = ladder_end - time.monotonic()
            if left < 1:
                result["stopped"] = f"{atoms} atoms: this ladder's budget is spent"
                break
            if result["points"]:
                last = result["points"][-1]
                step = last["s_per_step"] * atoms / last["atoms"]
                # the first call costs more than a step; a few steps plus that must fit
                need = 2 * max(step, last["first_call_s"] * atoms / last["atoms"]) + 3 * step
                if step > max_step_s:
                    result["stopped"] = f"{atoms} atoms: estimated {step:.3g} s per step > {max_step_s:g} s"
                    break
                if need > left:
                    result["stopped"] = f"{atoms} atoms: ~{need:.0f} s needed, {left:.0f} s of this ladder's budget left"
                    break
            try:
                point = ladder_point(model, n, device, max_step_s, target_s=min(3.0, max(0.5, left / 8)))
            except Exception as exc:  # noqa: BLE001
                free(device)
                result["stopped"] = (f"out of GPU memory at {atoms} atoms" if is_oom(exc)
                                     else f"{atoms} atoms: {type(exc).__name__}: {str(exc)[:300]}")
                break
            result["points"].append(point)
            result["largest_that_ran"] = atoms
            rec.put("ladder", key, result)
            print(f"ladder   {key:28s} {point}", flush=True)
            if point["timed_steps"] == 0:
                result["stopped"] = point["note"]
                break
        else:
            result["stopped"] = "end of the size grid"
        rec.put("ladder", key, result)
        del model
        free(device)


# --- the whole run --------------------------------------------------------------------------

def suggested_defaults(data: dict) -> dict:
    """What the figures say for `batched: auto` and run.batch_replicas on this device."""
    out = {}
    for family in ("chgnet", "m3gnet", "mace-mp-0"):
        speedups = {kind: [row["speedup"] for key, row in data.get("batched", {}).items()
                           if key.startswith(f"{family}/{kind}/") and "speedup" in row]
                    for kind in ("neb", "phonons")}
        replicas = [row["speedup"] for key, row in data.get("replicas", {}).items()
                    if key.startswith(f"{family}/") and "speedup" in row]
        out[family] = {
            "batch_neb_phonons": (min(speedups["neb"] + speedups["phonons"]) >= 1.0
                                  if speedups["neb"] + speedups["phonons"] else None),
            "batch_replicas": (min(replicas) >= 1.0) if replicas else None,
            "smallest_speedups": {"neb": min(speedups["neb"], default=None),
                                  "phonons": min(speedups["phonons"], default=None),
                                  "replicas": min(replicas, default=None)},
        }
    return out


def environment(device: str, args) -> dict:
    env = {"date_start": now(), "driver_version": glue.DRIVER_VERSION, "torch": torch.__version__,
           "cuda": torch.version.cuda, "python": platform.python_version(), "platform": platform.platform(),
           "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(), "device": device,
           "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
           "grid": args.grid, "budget_s": args.budget_s, "max_step_s": args.max_step_s}
    if torch.cuda.is_available():
        env["gpu_memory_GiB"] = round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1)
    versions = {}
    for name in ("ase", "chgnet", "matgl", "mace", "e3nn", "pymatgen", "phonopy", "numpy", "torch_geometric"):
        try:
            versions[name] = getattr(__import__(name), "__version__", "?")
        except Exception as exc:  # noqa: BLE001
            versions[name] = f"import failed: {type(exc).__name__}: {exc}"
    env["packages"] = versions
    try:
        import subprocess

        env["checkout"] = subprocess.run(["git", "-C", str(glue.ROOT), "rev-parse", "HEAD"], capture_output=True,
                                         text=True, timeout=10).stdout.strip() or None
    except Exception:  # noqa: BLE001  # the device copy of the tree may have no .git
        env["checkout"] = None
    return env


def models_dir() -> Path | None:
    for entry in [*os.environ.get("DRIVER_MODELS_DIR", "").split(os.pathsep), str(glue.ROOT / "shared" / "models"),
                  str(glue.ROOT.parent / "shared" / "models")]:
        if entry and (Path(entry) / M3GNET_NAME / "model.json").is_file():
            return Path(entry)
    return None


def wait_for(path: Path, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if path.is_file() and not path.with_suffix(path.suffix + ".part").exists():
            return True
        time.sleep(1)
    return path.is_file()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="the JSON to write (and rewrite as it goes)")
    parser.add_argument("--grid", choices=sorted(GRIDS), default="gpu")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--budget-s", type=float, default=330.0, help="seconds for all benchmarks")
    parser.add_argument("--max-step-s", type=float, default=60.0)
    parser.add_argument("--mace-model", type=Path, help="the medium-architecture MACE (bench/gpu/build_mace.py); "
                        "waited for up to 120 s if another process is still writing it")
    parser.add_argument("--families", nargs="+", default=["chgnet", "m3gnet", "mace-mp-0"])
    parser.add_argument("--sections", nargs="+", default=list(SHARES), choices=list(SHARES))
    args = parser.parse_args(argv)
    grid = GRIDS[args.grid]
    device = args.device
    budget = Budget(args.budget_s)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    rec = Record(args.out, {"status": "running", "environment": environment(device, args)})
    print(f"gpu-check bench: device {device} ({rec.data['environment']['gpu']}), torch {torch.__version__}, "
          f"grid {args.grid}, budget {args.budget_s:.0f} s", flush=True)

    folder = models_dir()
    specs: dict[str, dict | None] = {"chgnet": {"name": "chgnet"},
                                     "m3gnet": {"name": "m3gnet", "models_dir": str(folder)} if folder else None,
                                     "mace-mp-0": None}
    labels = {"chgnet": "CHGNet 0.3.0 (bundled)", "m3gnet": M3GNET_NAME, "mace-mp-0": None}
    if args.mace_model is not None and wait_for(args.mace_model, 120):
        specs["mace-mp-0"] = {"name": "mace-mp-0", "checkpoint": str(args.mace_model.resolve())}
        info = args.mace_model.with_suffix(".json")
        labels["mace-mp-0"] = json.loads(info.read_text()) if info.is_file() else str(args.mace_model)
    specs = {f: s for f, s in specs.items() if f in args.families}
    rec.data["models"] = {f: (labels[f] if s else "skipped: weights not found") for f, s in specs.items()}
    rec.save()

    cache: dict[tuple[str, str], object] = {}

    def models(dtype: str):
        for family, fields in specs.items():
            if fields is None:
                continue
            if (family, dtype) not in cache:
                try:
                    cache[(family, dtype)] = glue.load(fields, dtype, device)
                except Exception as exc:  # noqa: BLE001
                    rec.put("errors", f"load {family}/{dtype}", f"{type(exc).__name__}: {str(exc)[:300]}")
                    continue
            yield family, cache[(family, dtype)]

    with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
        work = Path(tmp)
        chosen = [section for section in SHARES if section in args.sections]
        for section in chosen:
            budget.open(SHARES[section] / sum(SHARES[c] for c in chosen))  # the chosen ones share it all
            started = time.monotonic()
            print(f"--- {section} ({budget.left():.0f} s)", flush=True)
            try:
                if section == "batched":
                    section_batched(rec, budget, models, grid, device)
                elif section == "replicas":
                    section_replicas(rec, budget, specs, models, grid, device, work)
                elif section == "overhead":
                    section_overhead(rec, budget, specs, models, grid, device, work)
                else:
                    cache.clear()
                    free(device)
                    ladders = []
                    for family, fields in specs.items():
                        for dtype in (("float32",) if family == "chgnet" else ("float32", "float64")):
                            if fields is not None:
                                ladders.append((f"{family}/{dtype}",
                                                lambda f=fields, d=dtype: glue.load(f, d, device)))
                    section_ladder(rec, budget, ladders, grid, device, args.max_step_s)
            except Exception:  # noqa: BLE001  # keep what the other sections measure
                rec.put("errors", section, traceback.format_exc()[-2000:])
            rec.put("section_seconds", section, round(time.monotonic() - started, 1))
    rec.data["suggested_defaults"] = suggested_defaults(rec.data)
    rec.data["status"] = "completed"
    rec.data["environment"]["date_end"] = now()
    rec.save()
    print(f"gpu-check bench: done in {time.monotonic() - budget.start:.0f} s -> {args.out}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
