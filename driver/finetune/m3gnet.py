"""M3GNet fine-tuning with matgl's `PotentialLightningModule`, trained by a `lightning.Trainer`.

The Lightning module wraps the pretrained M3GNet with the loaded potential's element
references and data scale, so energies keep the pretrained reference; its loss is on energy
per atom and forces (stress weight 0: labelled structures carry no stresses). The trained
M3GNet lives inside a fresh copy of the loaded `Potential`, which is saved with `Potential.save`:
a folder (`model.json`, `model.pt`, `state.pt`) that `matgl.load_model` reads, with the
pretrained potential's settings (stress output included) intact.
"""

from __future__ import annotations

import tempfile
import warnings
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from driver.labels import LabelledStructure
from driver.models import ModelPotential
from driver.models.m3gnet import matgl_float_dtype
from driver.specs import ModelSpec

if TYPE_CHECKING:
    from driver.finetune import TrainSettings

CHECKPOINT_NAME = "m3gnet-finetuned"


def dataset(structures: Sequence[LabelledStructure], converter, root: Path):
    """matgl's in-memory graph dataset: total energies (eV) and forces (eV/Å), no cache on disk."""
    from matgl.graph.data import MGLDataset
    from pymatgen.io.ase import AseAtomsAdaptor

    labels = {"energies": [float(s.energy_eV) for s in structures],
              "forces": [s.forces_eV_A.tolist() for s in structures]}
    return MGLDataset(structures=[AseAtomsAdaptor.get_structure(s.atoms) for s in structures],
                      labels=labels, converter=converter, save_cache=False, root=str(root))


def _trainer_device(device: str) -> dict:
    if device.startswith("cuda"):
        return {"accelerator": "gpu", "devices": [int(device.partition(":")[2] or 0)]}
    return {"accelerator": "cpu", "devices": 1}


def train(spec: ModelSpec, base: ModelPotential, train_set: Sequence[LabelledStructure],
          val_set: Sequence[LabelledStructure], out_dir: Path, settings: TrainSettings) -> tuple[Path, list[str]]:
    """Train a copy of the loaded M3GNet potential; return the saved folder and notes for the report."""
    import lightning as pl
    import matgl
    import torch
    from matgl.ext.pymatgen import Structure2Graph
    from matgl.graph.data import MGLDataLoader, collate_fn_pes
    from matgl.utils.training import PotentialLightningModule

    batch_size = min(settings.batch_size, len(train_set))
    with matgl_float_dtype(spec.dtype), tempfile.TemporaryDirectory(prefix="m3gnet-finetune-") as scratch:
        # A fresh copy from the same source (the loaded one cannot be deep-copied once it has run).
        potential = matgl.load_model(base.source).to(dtype=torch.float64 if spec.dtype == "float64" else torch.float32)
        torch.manual_seed(settings.seed)
        # The converter must use the model's own element order and cutoff.
        converter = Structure2Graph(element_types=potential.model.element_types, cutoff=potential.model.cutoff)
        train_data = dataset(train_set, converter, Path(scratch) / "train")
        # Lightning's fit needs a validation loader; without held-out structures it validates on training ones.
        val_data = dataset(val_set, converter, Path(scratch) / "val") if val_set else train_data
        train_loader, val_loader = MGLDataLoader(
            train_data=train_data, val_data=val_data, collate_fn=partial(collate_fn_pes, include_stress=False),
            batch_size=batch_size, num_workers=0, generator=torch.Generator().manual_seed(settings.seed))
        refs = potential.element_refs.property_offset if potential.element_refs is not None else None
        module = PotentialLightningModule(
            model=potential.model, element_refs=refs, data_mean=potential.data_mean.tolist(),
            data_std=potential.data_std.tolist(), lr=settings.learning_rate, stress_weight=0.0,
            include_line_graph=False)  # M3GNet builds its three-body line graph itself
        trainer = pl.Trainer(
            max_epochs=settings.epochs, **_trainer_device(settings.device), default_root_dir=scratch,
            logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
            inference_mode=False)  # forces are gradients: validation must keep autograd on
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*does not have many workers.*")
            trainer.fit(module, train_dataloaders=train_loader, val_dataloaders=val_loader)
    checkpoint = out_dir / CHECKPOINT_NAME
    potential.to("cpu").save(checkpoint)
    notes = [f"matgl PotentialLightningModule + lightning.Trainer: energy-per-atom and force MSE (weights 1, 1), "
             f"Adam + cosine LR, batch size {batch_size}, {spec.dtype}; weights from the last epoch"]
    return checkpoint, notes
