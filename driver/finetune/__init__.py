"""Fine-tune a pretrained uMLIP on a handful of DFT-labelled structures (`driver finetune`).

Each family is trained by its own library's training code (chgnet's Trainer, mace's
`run_train`, matgl's Lightning module), never by a loop of ours: those carry the loss
weighting, normalisation and saving conventions their checkpoints are loaded with. This
module only splits the data, measures force errors before and after through our own model
registry (which proves the new checkpoint loads the way a recipe's `model.checkpoint` does),
and writes `finetune.yaml`.
"""

from __future__ import annotations

import contextlib
import importlib
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import yaml

from driver.errors import InputError
from driver.labels import LabelledStructure
from driver.models import ModelPotential, load_model
from driver.models.device import resolve_device
from driver.provenance import now_iso, package_versions, sha256_of_path
from driver.registry import family
from driver.specs import ModelSpec

MIN_FOR_VALIDATION = 4



@dataclass(frozen=True)
class TrainSettings:
    """What every family's trainer is asked to do, already checked and resolved."""

    epochs: int
    learning_rate: float
    batch_size: int
    seed: int
    device: str  # resolved: "cpu" or "cuda:N"


@dataclass
class FinetuneReport:
    """What a fine-tuning run did and how much it helped (forces in eV/Å)."""

    family: str
    checkpoint: str
    n_train: int
    n_val: int
    epochs: int
    learning_rate: float
    batch_size: int
    device: str
    force_mae_train_before: float
    force_mae_train_after: float
    force_mae_val_before: float | None
    force_mae_val_after: float | None
    base_source: str
    base_weights_sha256: str | None
    checkpoint_sha256: str
    seconds: float
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return asdict(self)


def _check_inputs(labels: Sequence[LabelledStructure], epochs: int, learning_rate: float, batch_size: int,
                  val_fraction: float) -> None:
    """Mistakes a user can make, each as one line before anything heavy runs."""
    if not labels:
        raise InputError("finetune: no labelled structures given (got 0); fine-tuning needs at least one")
    missing = [s.source for s in labels if s.energy_eV is None]
    if missing:
        more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
        raise InputError(f"finetune: {missing[0]}{more}: no reference energy; fine-tuning trains on energies "
                         "and forces, so every structure needs one (name it with the energy key)")
    if epochs < 1:
        raise InputError(f"finetune: epochs must be >= 1, got {epochs}")
    if not learning_rate > 0:
        raise InputError(f"finetune: learning rate must be > 0, got {learning_rate}")
    if batch_size < 1:
        raise InputError(f"finetune: batch size must be >= 1, got {batch_size}")
    if not 0 <= val_fraction < 1:
        raise InputError(f"finetune: validation fraction must be in [0, 1), got {val_fraction}")


def split(n: int, val_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Random train/validation indices; no validation below MIN_FOR_VALIDATION structures."""
    if n < MIN_FOR_VALIDATION or val_fraction == 0:
        return list(range(n)), []
    order = np.random.default_rng(seed).permutation(n).tolist()
    n_val = min(n - 1, max(1, round(val_fraction * n)))
    return sorted(order[n_val:]), sorted(order[:n_val])


def force_mae(model: ModelPotential, structures: Sequence[LabelledStructure]) -> float | None:
    """Mean absolute error over all force components, eV/Å (None for no structures)."""
    if not structures:
        return None
    from driver.fit.run import evaluate

    model_forces, _ = evaluate(model, structures)
    errors = [np.abs(forces - s.forces_eV_A).ravel() for forces, s in zip(model_forces, structures, strict=True)]
    return float(np.concatenate(errors).mean())


def family_module(name: str):
    """The family's training module, as its registry entry names it."""
    module = family(name).finetune_module
    if module is None:
        raise InputError(f"--model: {name} has no fine-tuning support")
    return importlib.import_module(module)


def finetune(spec: ModelSpec, labels: list[LabelledStructure], out_dir: Path, *, epochs: int = 10,
             learning_rate: float = 1e-3, batch_size: int = 2, val_fraction: float = 0.2,
             seed: int = 0) -> FinetuneReport:
    """Fine-tune the model `spec` names on `labels`; write the checkpoint and finetune.yaml in out_dir."""
    _check_inputs(labels, epochs, learning_rate, batch_size, val_fraction)
    started = time.perf_counter()
    out_dir = Path(out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    train_idx, val_idx = split(len(labels), val_fraction, seed)
    train = [labels[i] for i in train_idx]
    val = [labels[i] for i in val_idx]
    notes = []
    if not val:
        why = (f"fewer than {MIN_FOR_VALIDATION} structures" if len(labels) < MIN_FOR_VALIDATION
               else "validation fraction 0")
        notes.append(f"{why}: trained on all {len(train)}, no held-out validation "
                     "(the library's own validation ran on the training structures)")
    settings = TrainSettings(epochs, learning_rate, batch_size, seed, resolve_device(spec.device))

    base = load_model(spec)
    base_source, base_sha256 = base.source, base.weights_sha256
    mae_train_before, mae_val_before = force_mae(base, train), force_mae(base, val)
    # The libraries print progress on stdout; keep stdout for results.
    with contextlib.redirect_stdout(sys.stderr):
        checkpoint, family_notes = family_module(spec.name).train(spec, base, train, val, out_dir, settings)
    notes += family_notes
    del base

    # Through our registry: proves the checkpoint loads the way a recipe's model.checkpoint does.
    tuned = load_model(ModelSpec(name=spec.name, checkpoint=str(checkpoint), device=spec.device, dtype=spec.dtype))
    report = FinetuneReport(
        family=spec.name, checkpoint=str(checkpoint), n_train=len(train), n_val=len(val), epochs=epochs,
        learning_rate=learning_rate, batch_size=batch_size, device=settings.device,
        force_mae_train_before=mae_train_before, force_mae_train_after=force_mae(tuned, train),
        force_mae_val_before=mae_val_before, force_mae_val_after=force_mae(tuned, val),
        base_source=base_source, base_weights_sha256=base_sha256, checkpoint_sha256=sha256_of_path(checkpoint),
        seconds=round(time.perf_counter() - started, 1), notes=notes,
    )
    write_record(out_dir / "finetune.yaml", report, spec, train, val)
    return report


def write_record(path: Path, report: FinetuneReport, spec: ModelSpec, train: Sequence[LabelledStructure],
                 val: Sequence[LabelledStructure]) -> None:
    """finetune.yaml: the report, the base model, which structures went where, and how to use the result."""
    record = {
        **report.as_dict(),
        "base_model": {"name": spec.name, "variant": spec.variant, "checkpoint": spec.checkpoint,
                       "source": report.base_source, "weights_sha256": report.base_weights_sha256},
        "use_in_recipe": {"model": {"name": spec.name, "checkpoint": report.checkpoint}},
        "train_structures": [s.source for s in train],
        "validation_structures": [s.source for s in val],
        "created": now_iso(),
        "package_versions": package_versions(),
    }
    path.write_text(yaml.safe_dump(record, sort_keys=False))
