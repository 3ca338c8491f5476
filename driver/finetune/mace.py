"""MACE fine-tuning with mace-torch's own training script (`mace_run_train`) from a foundation model.

The script runs in a child process: it sets torch's default dtype, seeds and logging handlers
for the whole process, and its arguments are its documented interface. Settings chosen:

* `--foundation_model=<the .model file loaded>`: mace accepts a path; the model's architecture,
  cutoff, scale/shift and weights come from it.
* `--multiheads_finetuning=False`: mace's default multihead mode replays Materials Project
  data that it downloads at run time, and needs MP-trained heads; a plain fine-tune needs neither.
* `--E0s=foundation`: keep the foundation model's isolated-atom energies, so energies stay on
  the scale the model was trained on (and a single-element set cannot be fitted anyway).
* `--foundation_model_elements=True`: keep every element of the foundation model, so the
  result still runs on other chemistries (mace's default would keep only the trained ones).
* float64 training (mace's default for training); the saved model loads in either dtype.

mace keeps the weights of the epoch with the lowest validation loss.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from driver.errors import SimulationError
from driver.labels import LabelledStructure
from driver.models import ModelPotential
from driver.specs import ModelSpec

if TYPE_CHECKING:
    from driver.finetune import TrainSettings

CHECKPOINT_NAME = "mace-finetuned.model"
RUN_NAME = "mace-finetuned"
ENERGY_KEY, FORCES_KEY = "FT_energy", "FT_forces"


def write_xyz(path: Path, structures: Sequence[LabelledStructure]) -> None:
    """Extended XYZ with only positions, cell and our two label keys (no stray info/arrays keys)."""
    from ase import Atoms
    from ase.io import write

    frames = []
    for structure in structures:
        src = structure.atoms
        atoms = Atoms(numbers=src.numbers, positions=src.positions, cell=src.cell, pbc=src.pbc)
        atoms.info[ENERGY_KEY] = float(structure.energy_eV)
        atoms.new_array(FORCES_KEY, structure.forces_eV_A.astype(float))
        frames.append(atoms)
    write(path, frames, format="extxyz")


def _device_args(device: str) -> tuple[str, dict[str, str]]:
    """mace takes `cpu` or `cuda` (no index): pick the GPU through CUDA_VISIBLE_DEVICES."""
    if not device.startswith("cuda"):
        return "cpu", {}
    index = int(device.partition(":")[2] or 0)
    visible = [v for v in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if v.strip()]
    return "cuda", {"CUDA_VISIBLE_DEVICES": visible[index] if index < len(visible) else str(index)}


def _failure_line(log: Path) -> str:
    lines = [line.strip() for line in log.read_text(errors="replace").splitlines() if line.strip()]
    errors = [line for line in lines if "Error" in line or "error" in line]
    return (errors or lines or ["no output"])[-1]


def train(spec: ModelSpec, base: ModelPotential, train_set: Sequence[LabelledStructure],
          val_set: Sequence[LabelledStructure], out_dir: Path, settings: TrainSettings) -> tuple[Path, list[str]]:
    """Run mace's training script on the labels; return the `.model` path and notes for the report."""
    work = out_dir / "mace-run"
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    write_xyz(work / "train.xyz", train_set)
    # mace requires a validation set; without held-out structures it validates on the training ones.
    write_xyz(work / "valid.xyz", val_set or train_set)
    # mace's training loader drops the last incomplete batch: a batch larger than the set trains nothing.
    batch_size = min(settings.batch_size, len(train_set))
    device, env = _device_args(settings.device)
    args = [
        f"--name={RUN_NAME}", f"--work_dir={work}", f"--model_dir={work}",
        f"--foundation_model={base.source}", "--multiheads_finetuning=False",
        "--foundation_model_elements=True", "--E0s=foundation",
        f"--train_file={work / 'train.xyz'}", f"--valid_file={work / 'valid.xyz'}",
        f"--energy_key={ENERGY_KEY}", f"--forces_key={FORCES_KEY}",
        f"--max_num_epochs={settings.epochs}", f"--batch_size={batch_size}",
        f"--valid_batch_size={batch_size}", f"--lr={settings.learning_rate}", f"--seed={settings.seed}",
        f"--device={device}", "--default_dtype=float64", f"--pin_memory={device == 'cuda'}",
        "--plot=False", "--save_cpu",
    ]
    log = work / "mace_run_train.log"
    with open(log, "w") as handle:
        done = subprocess.run([sys.executable, "-m", "mace.cli.run_train", *args], stdout=handle,
                              stderr=subprocess.STDOUT, env={**os.environ, **env}, cwd=work, check=False)
    produced = work / f"{RUN_NAME}.model"
    if done.returncode != 0 or not produced.is_file():
        raise SimulationError(f"finetune: mace_run_train failed (exit {done.returncode}): {_failure_line(log)} "
                              f"(full log: {log})")
    checkpoint = out_dir / CHECKPOINT_NAME
    shutil.move(produced, checkpoint)
    # Per-epoch copies with optimizer state, and a TorchScript twin of the weights: not needed.
    shutil.rmtree(work / "checkpoints", ignore_errors=True)
    (work / f"{RUN_NAME}_compiled.model").unlink(missing_ok=True)
    notes = [f"mace_run_train: --foundation_model {base.source}, --multiheads_finetuning=False, "
             f"--E0s=foundation, --foundation_model_elements=True, weighted energy/forces loss, float64, "
             f"batch size {batch_size}; weights from the epoch with the lowest validation loss; log {log}"]
    return checkpoint, notes
