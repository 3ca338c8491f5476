"""CHGNet fine-tuning with chgnet's own `Trainer` on a `StructureData` of the labelled structures.

CHGNet is trained on energies per atom (its model predicts eV/atom), forces, and optionally
stresses and magnetic moments; labelled structures carry energies and forces only, so the
target is "ef" and `StructureData` gets no stresses/magmoms. The file written is the
trainer's own `.pth.tar` (model, optimizer, history), which `CHGNet.from_file` loads.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from driver.labels import LabelledStructure
from driver.models import ModelPotential
from driver.specs import ModelSpec

if TYPE_CHECKING:
    from driver.finetune import TrainSettings

CHECKPOINT_NAME = "chgnet-finetuned.pth.tar"


def structure_data(structures: Sequence[LabelledStructure], graph_converter):
    """chgnet's dataset: pymatgen structures, eV/atom energies, eV/Å forces, the model's graph converter."""
    from chgnet.data.dataset import StructureData
    from pymatgen.io.ase import AseAtomsAdaptor

    return StructureData(
        structures=[AseAtomsAdaptor.get_structure(s.atoms) for s in structures],
        energies=[s.energy_eV / len(s.atoms) for s in structures],
        forces=[s.forces_eV_A.tolist() for s in structures],
        graph_converter=graph_converter,
        shuffle=False,  # the loader shuffles, with our seed; StructureData would use the global RNG
    )


def train(spec: ModelSpec, base: ModelPotential, train_set: Sequence[LabelledStructure],
          val_set: Sequence[LabelledStructure], out_dir: Path, settings: TrainSettings) -> tuple[Path, list[str]]:
    """Train a copy of the loaded CHGNet; return the checkpoint path and notes for the report."""
    import torch
    from chgnet.data.dataset import collate_graphs
    from chgnet.model import CHGNet
    from chgnet.trainer import Trainer
    from torch.utils.data import DataLoader

    # A fresh copy through chgnet's own serialisation; the loaded model stays as it was.
    model = CHGNet.from_dict(base.calculator.model.as_dict())
    batch_size = min(settings.batch_size, len(train_set))
    train_loader = DataLoader(structure_data(train_set, model.graph_converter), batch_size=batch_size,
                              shuffle=True, collate_fn=collate_graphs,
                              generator=torch.Generator().manual_seed(settings.seed))
    # Trainer.train needs a validation loader; without held-out structures it validates on the training ones.
    val_loader = DataLoader(structure_data(val_set or train_set, model.graph_converter), batch_size=batch_size,
                            shuffle=False, collate_fn=collate_graphs)
    trainer = Trainer(model=model, targets="ef", optimizer="Adam", scheduler="CosLR", criterion="MSE",
                      epochs=settings.epochs, learning_rate=settings.learning_rate, use_device=settings.device,
                      torch_seed=settings.seed, data_seed=settings.seed, print_freq=10)
    # Per-epoch checkpoints go to a scratch folder: the final weights are what we keep.
    with tempfile.TemporaryDirectory(prefix="chgnet-finetune-") as scratch:
        trainer.train(train_loader, val_loader, save_dir=scratch, train_composition_model=False)
    checkpoint = out_dir / CHECKPOINT_NAME
    trainer.save(filename=str(checkpoint))
    notes = [f"chgnet Trainer: targets ef (energy per atom, forces), MSE loss, Adam + cosine LR, batch size "
             f"{batch_size}; weights from the last epoch; composition model (AtomRef) kept frozen"]
    return checkpoint, notes
