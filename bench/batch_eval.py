"""Batched vs one-by-one evaluation of N displaced copies of a 64-atom Si supercell, per family.

    python bench/batch_eval.py            (from the repository root)

One-by-one is `model.evaluate(..., batched=False)` (the family's own calculator per structure);
batched is `model.evaluate(..., batched=True)` with all N structures in one call. Both ask for energy,
forces and stress (the calculators compute stress on every call anyway). Each side gets warm-up
calls (WARMUP full batches, WARMUP single calculator calls), then REPEATS timed runs,
interleaved, and reports the median; the speed-up is
one_by_one_time / batched_time measured side by side in this run. Writes the key
"batched_evaluation" of bench/results.json (other keys are kept).

Models: CHGNet bundled with chgnet; M3GNet from $DRIVER_MODELS_DIR or ../shared/models relative
to the repository root (skipped when absent); a small random-weight MACE built with
tests/conftest.py's build_small_mace (MACE-MP-0 weights cannot be downloaded here).
"""

from __future__ import annotations

import contextlib
import statistics
import sys
import tempfile
import time
from pathlib import Path

from common import print_family_table, machine_record, save_result, specs, warn_if_busy  # isort: skip

import numpy as np
from ase.build import bulk

from driver.models import load_model
from driver.potential import PROPERTIES
from driver.specs import ModelSpec

N_STRUCTURES = 16
WARMUP = 2
REPEATS = 3


def displaced_supercells(n: int) -> list:
    base = bulk("Si", "diamond", a=5.43, cubic=True).repeat((2, 2, 2))  # 64 atoms
    copies = []
    for seed in range(n):
        atoms = base.copy()
        atoms.rattle(0.03, seed=seed)
        copies.append(atoms)
    return copies


def timed(fn) -> tuple[float, list[dict]]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def bench_family(model, structures) -> dict:
    def batched():
        return model.evaluate(structures, PROPERTIES, batched=True)

    def one_by_one():
        return model.evaluate(structures, PROPERTIES, batched=False)

    # Warm-up: WARMUP batched calls on the full set, WARMUP single calculator calls.
    for _ in range(WARMUP):
        batched()
    model.evaluate(structures[:WARMUP], PROPERTIES, batched=False)
    t_batch, t_loop = [], []
    for _ in range(REPEATS):  # interleaved, so drifts in machine load hit both sides alike
        t, a = timed(batched)
        t_batch.append(t)
        t, b = timed(one_by_one)
        t_loop.append(t)
    max_df = max(float(np.abs(x["forces"] - y["forces"]).max()) for x, y in zip(a, b, strict=True))
    max_de = max(abs(x["energy"] - y["energy"]) for x, y in zip(a, b, strict=True))
    batched_s, loop_s = statistics.median(t_batch), statistics.median(t_loop)
    return {
        "batched_s": round(batched_s, 4),
        "one_by_one_s": round(loop_s, 4),
        "speedup": round(loop_s / batched_s, 2),
        "batched_runs_s": [round(t, 4) for t in t_batch],
        "one_by_one_runs_s": [round(t, 4) for t in t_loop],
        "max_abs_energy_diff_eV": max_de,
        "max_abs_force_diff_eV_per_A": max_df,
    }


def main() -> int:
    structures = displaced_supercells(N_STRUCTURES)
    load_before = warn_if_busy()
    rows: dict[str, dict] = {}
    device = None
    with tempfile.TemporaryDirectory() as tmp:
        for family, fields, label in specs(Path(tmp)):
            if fields is None:
                print(f"{family}: skipped (M3GNet weights not found; set DRIVER_MODELS_DIR)", file=sys.stderr)
                rows[family] = {"skipped": "weights not found"}
                continue
            with contextlib.redirect_stdout(sys.stderr):
                model = load_model(ModelSpec(**fields))
                row = bench_family(model, structures)
            device = model.device
            rows[family] = {"model": label, "dtype": model.dtype, "device": model.device, **row}

    header = f"{'family':<10} {'dtype':<8} {'batched s':>10} {'1-by-1 s':>10} {'speed-up':>9}  max|dF| eV/Å"
    print(f"{N_STRUCTURES} x Si{len(structures[0])} (rattled), energy+forces+stress, "
          f"median of {REPEATS} after {WARMUP} warm-ups, batch = all {N_STRUCTURES} in one call")
    print_family_table(header, rows, lambda family, row: (
        f"{family:<10} {row['dtype']:<8} {row['batched_s']:>10.3f} {row['one_by_one_s']:>10.3f} "
        f"{row['speedup']:>8.2f}x  {row['max_abs_force_diff_eV_per_A']:.1e}"))

    record = {
        "description": "ModelPotential.evaluate batched (all structures per model call) vs one by one",
        "machine": machine_record(device, load_before),
        "settings": {
            "structures": N_STRUCTURES,
            "atoms_per_structure": len(structures[0]),
            "properties": "energy, forces, stress",
            "batch_size": N_STRUCTURES,
            "warmup_calls": WARMUP,
            "repeats": REPEATS,
            "statistic": "median",
        },
        "results": rows,
    }
    save_result("batched_evaluation", record)
    return 0


if __name__ == "__main__":
    sys.exit(main())
