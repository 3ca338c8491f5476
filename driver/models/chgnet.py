"""CHGNet: pretrained weights ship inside the chgnet wheel; fine-tuned `.pth.tar` files load too."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from driver.errors import InputError, first_line, is_out_of_memory
from driver.models.checkpoint_kind import torch_pickle_names
from driver.provenance import sha256_of_path
from driver.registry import ModelFamily

if TYPE_CHECKING:
    from driver.specs import ModelSpec

DEFAULT_VERSION = "0.3.0"
# `CHGNet.from_file` reads a dict whose "model" is `CHGNet.as_dict()` ({"state_dict", "model_args"}), as
# chgnet's `Trainer.save` writes it (the bundled weights and `driver finetune`'s output alike); the
# model_args name CHGNet's two graph cutoffs, which no other library's checkpoint carries.
CHECKPOINT_KEYS = frozenset({"model", "state_dict", "model_args", "atom_graph_cutoff", "bond_graph_cutoff"})


def bundled_weights(version: str) -> Path | None:
    """The weights file that `CHGNet.load(model_name=version)` reads from the package."""
    import chgnet

    folder = Path(chgnet.__file__).parent / "pretrained" / version
    files = sorted(folder.glob("*.pth.tar"))
    return files[0] if files else None


def is_checkpoint(path: Path) -> bool:
    """A CHGNet checkpoint by its content, whatever its name (driver.models.checkpoint_kind)."""
    names = torch_pickle_names(path)
    return names is not None and CHECKPOINT_KEYS <= names.strings


def load(spec: ModelSpec, device: str, models_dirs: list[Path]):
    from chgnet.model import CHGNet
    from chgnet.model.dynamics import CHGNetCalculator

    from driver.models import LoadedWeights

    if spec.checkpoint:
        try:
            model = CHGNet.from_file(spec.checkpoint)
        except Exception as exc:  # the library raises many types for a bad file
            if is_out_of_memory(exc):
                raise
            raise InputError(f"model.checkpoint: {spec.checkpoint}: not a CHGNet checkpoint ({first_line(exc)})") from None
        source, weights = spec.checkpoint, Path(spec.checkpoint)
    else:
        version = spec.variant or DEFAULT_VERSION
        weights = bundled_weights(version)
        if weights is None:
            raise InputError(f"model.variant: CHGNet version {version!r} is not bundled with chgnet")
        model = CHGNet.load(model_name=version, use_device=device, verbose=False)
        source = f"chgnet-{version}"
    calculator = CHGNetCalculator(model=model, use_device=device)
    return LoadedWeights(calculator, source, sha256_of_path(weights))


def can_batch(calculator) -> bool:
    from chgnet.model.dynamics import CHGNetCalculator

    return isinstance(calculator, CHGNetCalculator)


def batch(calculator, structures: Sequence, properties: tuple, batch_size: int) -> list:
    """`CHGNet.predict_graph` over many structures, the graphs built from the ASE atoms in numpy
    (driver.models.chgnet_graph: chgnet's own converter is most of a small cell's call);
    energies come back per atom and stresses in GPa, converted as `CHGNetCalculator` converts them."""
    from driver.models.chgnet_graph import crystal_graph
    from driver.potential import Results

    model = calculator.model
    stress, magmoms = "stress" in properties, "magmoms" in properties
    # Only what was asked for (the stock calculator asks "efsm" at every step); chgnet has no "efm".
    task = "efsm" if magmoms else "efs" if stress else "ef"
    graphs = [crystal_graph(atoms, model.graph_converter) for atoms in structures]
    predictions = model.predict_graph(graphs, task=task, batch_size=batch_size)
    if isinstance(predictions, dict):  # chgnet returns a bare dict for a one-structure list
        predictions = [predictions]
    results = []
    for atoms, pred in zip(structures, predictions, strict=True):
        factor = len(atoms) if model.is_intensive else 1  # e is eV/atom for an intensive model
        energy = np.asarray(pred["e"]).reshape(()) * factor
        sigma = np.asarray(pred["s"]) * calculator.stress_weight if stress else None
        results.append(Results.of(energy, pred["f"], sigma, pred["m"] if magmoms else None))
    return results


FAMILY = ModelFamily(
    magmoms=True,
    name="chgnet",
    package="chgnet",
    dtypes=("float32",),
    description="variant: CHGNet version (default 0.3.0), weights bundled in the chgnet wheel; "
                "checkpoint: a fine-tuned CHGNet file (chgnet's own save; recognised by content, any name)",
    load=load,
    batch=batch,
    can_batch=can_batch,
    elements=lambda calculator: range(1, calculator.model.composition_model.fc.in_features + 1),  # H..Pu (94)
    is_checkpoint=is_checkpoint,
    finetune_module="driver.finetune.chgnet",
    distributions=("chgnet", "pymatgen"),
)
