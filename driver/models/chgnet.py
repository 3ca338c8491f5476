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
    from chgnet.model.dynamics import CHGNetCalculator

    from driver.models import LoadedWeights

    if spec.checkpoint:
        try:
            model = from_file(Path(spec.checkpoint))
        except InputError:
            raise
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
        # As `CHGNet.load(model_name=version)` builds it, read with the weights-only unpickler.
        model = from_file(weights, mlp_out_bias=version == "0.2.0", version=version)
        source = f"chgnet-{version}"
    model = model.to(device)
    calculator = CHGNetCalculator(model=model, use_device=device)
    return LoadedWeights(calculator, source, sha256_of_path(weights))


def from_file(path: Path, **kwargs):
    """`CHGNet.from_file(path, **kwargs)`, unpickled as weights only where the file allows
    (chgnet's own save, bundled and fine-tuned, does); otherwise as code, logged or refused
    (driver.models.pickles)."""
    from chgnet.model import CHGNet

    from driver.models.pickles import allow_code_load, load_weights_only

    state = load_weights_only(path)
    if state is None:
        allow_code_load(path, "CHGNet", "it names objects outside torch's weights-only allow-list")
        return CHGNet.from_file(path, **kwargs)
    return CHGNet.from_dict(state["model"], **kwargs)


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
    predictions = [prediction for start in range(0, len(graphs), batch_size)
                   for prediction in predict(model, graphs[start:start + batch_size], task)]
    results = []
    for atoms, pred in zip(structures, predictions, strict=True):
        factor = len(atoms) if model.is_intensive else 1  # e is eV/atom for an intensive model
        energy = np.asarray(pred["e"]).reshape(()) * factor
        sigma = np.asarray(pred["s"]) * calculator.stress_weight if stress else None
        results.append(Results.of(energy, pred["f"], sigma, pred["m"] if magmoms else None))
    return results


def predict(model, graphs: Sequence, task: str) -> list[dict]:
    """What `CHGNet.predict_graph` returns per structure, with the derivatives taken once.

    `CHGNet._compute` takes forces and stress with `create_graph=True, retain_graph=True`, which
    training needs and inference does not: the double-backward graph is about 60% of a call's
    memory (2.5 -> 0.9 MB/atom on Si; bench/memory.py). Here chgnet's own `_compute` gives the
    energy and magnetic moments; forces and stress are the same gradients of the same energy,
    taken once without a graph (equal to chgnet's: tests/models/test_chgnet_graph.py)."""
    import torch
    from chgnet.model.model import BatchedGraph

    model.eval()
    device = next(model.parameters()).device
    graphs = [graph.to(device) for graph in graphs]
    composition_energy = 0 if model.composition_model is None else model.composition_model(graphs)
    stress = "s" in task
    batched = BatchedGraph.from_graphs(graphs, bond_basis_expansion=model.bond_basis_expansion,
                                       angle_basis_expansion=model.angle_basis_expansion, compute_stress=stress)
    prediction = model._compute(batched, compute_force=False, compute_stress=False, compute_magmom="m" in task)
    energy = prediction["e"]
    # `_compute` divides an intensive model's energy by the atom count after its derivatives;
    # multiplying back by the same integers gives exactly the gradient chgnet takes.
    total = (energy * torch.bincount(batched.atom_owners) if model.is_intensive else energy).sum()
    inputs = [*batched.atom_positions, *(batched.strains if stress else [])]
    gradients = torch.autograd.grad(total, inputs)
    n = len(graphs)
    forces = [-1 * gradient for gradient in gradients[:n]]
    energies = (energy + composition_energy).detach()
    out = []
    for index in range(n):
        item = {"e": energies[index].cpu().numpy(), "f": forces[index].cpu().numpy()}
        if stress:
            item["s"] = (gradients[n + index] * (1 / batched.volumes * 160.21766208)[index]).cpu().numpy()
        if "m" in task:
            item["m"] = prediction["m"][index].detach().cpu().numpy()
        out.append(item)
    return out


FAMILY = ModelFamily(
    memory_per_atom_mb=1.0,  # 0.99 at 512-8000 Si atoms
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
    known_elements=lambda spec, dirs: range(1, 95),  # every CHGNet (bundled or fine-tuned) embeds H..Pu
    is_checkpoint=is_checkpoint,
    finetune_module="driver.finetune.chgnet",
    distributions=("chgnet", "pymatgen"),
)
