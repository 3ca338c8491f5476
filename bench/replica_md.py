"""Batched replica MD (`run.batch_replicas: true`) vs the same jobs one after another, per family.

    python bench/replica_md.py [--steps 10] [--repeats 2]      (from the repository root)

One recipe: 64-atom Si, Langevin, two temperatures x raw/corrected = 4 MD jobs, streamed to
H5MD as usual. Both sides go through `driver.runner.run_recipe`, the model loaded once for the
whole script (the harness hands the runner the loaded model, so loading is not timed); the
speed-up is one-by-one time / batched time, medians of interleaved repeats in this run. Writes
the key "replica_md" of bench/results.json.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from common import interleaved_medians, machine_record, save_result, specs, warn_if_busy  # isort: skip

import driver.runner
from driver.models import load_model
from driver.recipe import Recipe
from driver.specs import ModelSpec
from tests.conftest import SI_CIF


def recipe_for(model_fields: dict, batch: bool, steps: int, out: Path) -> Recipe:
    return Recipe.model_validate({
        "name": "replica-bench",
        "structure": {"file": str(SI_CIF), "supercell": [2, 2, 2]},
        "model": model_fields,
        "correction": {"scale": 0.8},
        "compare": True,
        "task": {"kind": "md", "ensemble": "nvt_langevin", "timestep_fs": 1.0, "steps": steps,
                 "temperature_K": [300, 600], "seed": 1},
        "output": {"directory": str(out), "write_every": 1},
        "run": {"batch_replicas": batch},
    })


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    load = warn_if_busy()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for family, fields, description in specs(work):
            if fields is None:
                print(f"{family}: weights not found, skipped")
                continue
            model = load_model(ModelSpec(**fields))
            driver.runner.load_model = lambda spec, local_rank=0, local_size=1, _m=model: _m  # loaded once, not timed
            runs = {batch: recipe_for(fields, batch, args.steps, work / f"{family}-{batch}") for batch in (False, True)}

            def run(batch: bool, runs: dict = runs) -> None:
                driver.runner.run_recipe(runs[batch], "", overwrite=True)

            run(True)  # warm-up: graph construction paths, allocator, first HDF5 files
            one_by_one, batched = interleaved_medians(lambda: run(False), lambda: run(True), args.repeats)
            rows.append({"family": family, "model": description, "replicas": 4, "atoms": 64, "steps": args.steps,
                         "one_by_one_s": round(one_by_one, 3), "batched_s": round(batched, 3),
                         "speedup": round(one_by_one / batched, 2)})
            print(f"{family:10s} 4 replicas x 64 atoms x {args.steps} steps: one by one {one_by_one:7.2f} s, "
                  f"batched {batched:7.2f} s, speed-up {one_by_one / batched:5.2f}x")
    save_result("replica_md", {"machine": machine_record(model.device if rows else None, load), "results": rows,
                               "note": "speed-up = one-by-one / batched, medians of interleaved repeats, same run"})


if __name__ == "__main__":
    main()
