"""Batched vs one-by-one model evaluation inside the tasks that evaluate many structures at once.

    python bench/task_batching.py            (from the repository root)

- NEB: one force evaluation of a 5-image band (Li2O 2x2x2 with a Li vacancy, 95 atoms per image),
  through BatchedNEB with `model.evaluate` batched vs one by one: the cost of one NEB iteration.
- Phonons: the force set of phonopy's displaced supercells plus the perfect one (Li2O 2x2x2, 96
  atoms), through `compute_force_sets`' evaluation with batching forced on vs off.
Median of REPEATS interleaved runs after a warm-up; ratios = one-by-one / batched from this run.
Writes the key "task_batching" of bench/results.json.
"""

from __future__ import annotations

import contextlib
import sys
import tempfile
from pathlib import Path

from common import print_family_table, ROOT, interleaved_medians, machine_record, save_result, specs, warn_if_busy  # isort: skip

from ase.io import read

from driver.models import load_model
from driver.specs import ModelSpec
from driver.tasks.neb import NEBTask, build_band
from driver.tasks.neb_endpoints import VacancyHop, vacancy_hop_endpoints
from driver.tasks.phonons import PhononTask, make_phonopy, to_ase

REPEATS = 3
LI2O = ROOT / "recipes" / "structures" / "Li2O_antifluorite.cif"


def neb_band(model, batched: bool):
    host = read(LI2O).repeat(2)
    initial, final, _ = vacancy_hop_endpoints(host, VacancyHop(species="Li", **{"from": 4}))
    task = NEBTask(kind="neb", vacancy_hop={"species": "Li", "from": 4}, n_images=5, interpolation="linear")
    if batched:
        return build_band(initial, final, task, lambda images: model.evaluate(images, batched=True))
    return build_band(initial, final, task, lambda images: model.evaluate(images, batched=False))


def iteration(band) -> None:
    """One NEB iteration's force call, the model run every time (the band caches results for
    unmoved images, and here nothing moves)."""
    band.forget_results()
    band.get_forces()


def phonon_structures() -> list:
    phonon = make_phonopy(read(LI2O), PhononTask(kind="phonons", supercell=(2, 2, 2)))
    return [to_ase(phonon.supercell)] + [to_ase(c) for c in phonon.supercells_with_displacements]


def main() -> int:
    load_before = warn_if_busy()
    displaced = phonon_structures()
    rows: dict[str, dict] = {}
    device = None
    with tempfile.TemporaryDirectory() as tmp:
        for family, fields, label in specs(Path(tmp)):
            if fields is None:
                rows[family] = {"skipped": "weights not found"}
                continue
            with contextlib.redirect_stdout(sys.stderr):
                model = load_model(ModelSpec(**fields))
            device = model.device
            bands = {batched: neb_band(model, batched) for batched in (True, False)}
            for band in bands.values():  # warm-up
                iteration(band)
            model.evaluate(displaced, batched=True)
            neb_batched, neb_single = interleaved_medians(lambda b=bands[True]: iteration(b),
                                                          lambda b=bands[False]: iteration(b), REPEATS)
            ph_batched, ph_single = interleaved_medians(lambda m=model: m.evaluate(displaced, batched=True),
                                                        lambda m=model: m.evaluate(displaced, batched=False),
                                                        REPEATS)
            rows[family] = {
                "model": label, "dtype": model.dtype, "device": model.device,
                "neb_iteration_batched_s": round(neb_batched, 4), "neb_iteration_one_by_one_s": round(neb_single, 4),
                "neb_speedup": round(neb_single / neb_batched, 2),
                "phonon_forces_batched_s": round(ph_batched, 4), "phonon_forces_one_by_one_s": round(ph_single, 4),
                "phonon_speedup": round(ph_single / ph_batched, 2),
            }
    print(f"NEB: 5 moving images x {len(bands[True].images[1])} atoms per force call; phonons: "
          f"{len(displaced)} supercells x {len(displaced[0])} atoms; median of {REPEATS}")
    header = f"{'family':<10} {'NEB batched s':>13} {'1-by-1 s':>9} {'ratio':>6}   {'phonon batched s':>16} {'1-by-1 s':>9} {'ratio':>6}"
    print_family_table(header, rows, lambda family, row: (
        f"{family:<10} {row['neb_iteration_batched_s']:>13.3f} {row['neb_iteration_one_by_one_s']:>9.3f} "
        f"{row['neb_speedup']:>5.2f}x   {row['phonon_forces_batched_s']:>16.3f} "
        f"{row['phonon_forces_one_by_one_s']:>9.3f} {row['phonon_speedup']:>5.2f}x"))
    save_result("task_batching", {
        "description": "one NEB force call (5 images) and one phonon force set, batched vs one by one",
        "machine": machine_record(device, load_before),
        "settings": {"neb_images": 5, "neb_atoms": len(bands[True].images[1]), "phonon_supercells": len(displaced),
                     "phonon_atoms": len(displaced[0]), "repeats": REPEATS, "statistic": "median"},
        "results": rows,
    })
    return 0


if __name__ == "__main__":
    sys.exit(main())
