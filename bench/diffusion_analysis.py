"""What a diffusion study's analysis costs beside its MD: the re-estimate of D after a segment
(driver.analysis.diffusivity on the whole file so far) against that segment's MD, at 256 atoms.

    python bench/diffusion_analysis.py [--segment-ps 10] [--timestep-fs 2] [--write-every 10] [--repeats 3]

On α-Li3N 4x4x4 (256 atoms, recipes/structures/Li3N_alpha.cif) with CHGNet on this machine:
- MD: the median wall time of one NVT-Langevin step at 1000 K over 20 steps after 5 of warm-up,
  through the driver's potential (as a study's job integrates), times the steps of one segment;
- analysis: `estimate_diffusion` on a trajectory of the same cell with the frames a study holds
  after its first segment and after its tenth (its cost grows with the file), Li moving as
  Brownian walkers so that every gate and kinisi's regression run; median of --repeats.
The ratio analysis / segment MD is the claim (target ≤ 5%). Writes the key "diffusion_analysis"
of bench/results.json.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
from common import ROOT, machine_record, save_result, warn_if_busy  # noqa: I001  (sets sys.path first)


def md_step_s(atoms, steps: int = 20) -> float:
    from driver.models import load_model
    from driver.specs import ModelSpec
    from driver.tasks.md import MDTask, initialize_velocities, make_integrator

    model = load_model(ModelSpec(name="chgnet"), 0)
    atoms = atoms.copy()
    atoms.calc = model.as_calculator()
    spec = MDTask(kind="md", steps=steps, temperature_K=1000.0, timestep_fs=2.0)
    initialize_velocities(atoms, 1000.0, 0)
    integrator = make_integrator(atoms, spec, 1000.0, 0)
    integrator.run(5)
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        integrator.run(1)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def analysis_s(atoms, frames: int, frame_fs: float, repeats: int) -> float:
    from driver.analysis.diffusivity import estimate_diffusion

    rng = np.random.default_rng(0)
    mobile = np.array(atoms.get_chemical_symbols()) == "Li"
    positions = np.repeat(atoms.get_positions()[None], frames, axis=0)
    steps = rng.normal(0, np.sqrt(2 * 1e-4 * frame_fs), size=(frames - 1, int(mobile.sum()), 3))  # D ~ 1e-5 cm²/s
    positions[1:, mobile] += np.cumsum(steps, axis=0)
    positions += rng.normal(0, 0.05, positions.shape)  # vibration
    cells = np.repeat(atoms.cell[:][None], frames, axis=0)
    times = np.arange(frames) * frame_fs
    energy = rng.normal(0, 0.1, frames)
    runs = []
    for _ in range(repeats):
        start = time.perf_counter()
        estimate_diffusion(times, positions, cells, mobile, energy=energy)
        runs.append(time.perf_counter() - start)
    return statistics.median(runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--segment-ps", type=float, default=10.0)
    parser.add_argument("--timestep-fs", type=float, default=2.0)
    parser.add_argument("--write-every", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    from ase.io import read

    load = warn_if_busy()
    atoms = read(ROOT / "recipes/structures/Li3N_alpha.cif").repeat((4, 4, 4))
    segment_steps = round(args.segment_ps * 1000 / args.timestep_fs)
    frames_per_segment = segment_steps // args.write_every
    step = md_step_s(atoms)
    segment = step * segment_steps
    analysis_s(atoms, 200, args.timestep_fs * args.write_every, 1)  # imports and caches, untimed
    rows = {}
    for segments in (1, 10):
        cost = analysis_s(atoms, segments * frames_per_segment + 1, args.timestep_fs * args.write_every, args.repeats)
        rows[f"after_{segments}_segments"] = {"frames": segments * frames_per_segment + 1, "analysis_s": round(cost, 3),
                                              "ratio_to_segment_md": round(cost / segment, 5)}
    print(f"{len(atoms)} atoms, CHGNet MD {step * 1000:.1f} ms/step -> one {args.segment_ps:g} ps segment "
          f"({segment_steps} steps) {segment:.0f} s")
    for name, row in rows.items():
        print(f"analysis {name.replace('_', ' ')} ({row['frames']} frames): {row['analysis_s']:.2f} s = "
              f"{100 * row['ratio_to_segment_md']:.2f}% of the segment's MD (target <= 5%)")
    save_result("diffusion_analysis", {"atoms": len(atoms), "md_step_s": round(step, 4),
                                       "segment_steps": segment_steps, "segment_md_s": round(segment, 1), **rows,
                                       "machine": machine_record("cpu", load)})


if __name__ == "__main__":
    main()
