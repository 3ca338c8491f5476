"""Models: a recipe's `model:` block becomes a ModelPotential (driver.potential) and its provenance.

Each family is one module with one registry entry (driver.registry), imported when the
registry is first read; the family's library itself is imported only when a model loads:
importing mace changes torch's loading defaults for the whole process, and each library takes
seconds to import.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path

from ase import Atoms
from ase.calculators.calculator import Calculator

from driver.errors import DriverError, InputError, ResourceError, first_line, is_out_of_memory
from driver.memory import MemoryBudget, available_bytes, gib
from driver.models.batching import AutoBatching, BatchPlanner
from driver.models.device import resolve_device
from driver.potential import ENERGY_FORCES, CalculatorPotential, Results, check_properties
from driver.registry import ModelFamily, family
from driver.specs import ModelSpec

log = logging.getLogger(__name__)

MODELS_DIR_ENV = "DRIVER_MODELS_DIR"
OFFLINE_ENV = "DRIVER_OFFLINE"
# What the libraries' own hubs read: huggingface_hub (matgl's model lookup) reads them when
# imported, so they are set before any family's library is.
_HUB_OFFLINE_VARIABLES = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE")


def downloads_allowed() -> bool:
    """False under DRIVER_OFFLINE=1: compute nodes without internet fail at once, not after retries."""
    return os.environ.get(OFFLINE_ENV, "").strip().lower() in ("", "0", "false", "no")


def forbid_downloads_if_offline() -> None:
    """DRIVER_OFFLINE=1 means no library makes a network attempt, not only ours."""
    if not downloads_allowed():
        for name in _HUB_OFFLINE_VARIABLES:
            os.environ[name] = "1"


@dataclass(frozen=True)
class LoadedWeights:
    """What a family's loader hands back: its library's ASE calculator and where it came from."""

    calculator: Calculator
    source: str
    weights_sha256: str | None


class ModelPotential(CalculatorPotential):
    """A loaded uMLIP: its library's own calculator one structure at a time, and the library's
    graph batching for many (where the family has one and the configuration allows)."""

    def __init__(self, family: ModelFamily, weights: LoadedWeights, device: str, dtype: str, sharing: int = 1):
        super().__init__(weights.calculator, device)  # .calculator: the library's own, as its users run it
        self.family = family.name
        self.entry = family  # the family's registry entry: batching, dtypes, fine-tuning
        self.source = weights.source
        self.weights_sha256 = weights.weights_sha256
        self.dtype = dtype
        self.auto_batching = AutoBatching()  # batched: auto, decided on this model's own calls
        # Batches sized by the memory this model's calls use, out of this process's share of it.
        declared = family.memory_per_atom_mb
        self.planner = BatchPlanner(device, budget=lambda where: MemoryBudget.for_device(where, sharing),
                                    fallback_bytes_per_atom=None if declared is None else
                                    declared * 2**20 * (2 if dtype == "float64" else 1))
        elements = family.elements(weights.calculator)
        self.elements = None if elements is None else frozenset(int(z) for z in elements)

    def unsupported_elements(self, atoms: Atoms) -> list[str]:
        """Elements outside the model's table: a library would fail on them with a shape error
        deep inside (CHGNet: "mat1 and mat2 shapes cannot be multiplied (1x118 and 94x1)")."""
        if self.elements is None:
            return []
        return sorted({atom.symbol for atom in atoms if atom.number not in self.elements})

    @property
    def can_batch(self) -> bool:
        return self.entry.batch is not None and self.entry.can_batch(self.calculator)

    def evaluate_one(self, atoms: Atoms, properties: tuple) -> Results:
        """Only the properties asked for, through the library's own model call (the family's
        `batch` on one structure) where the configuration allows: the stock calculators compute
        everything at every step (CHGNet energy, forces, stress and magnetic moments; matgl and
        MACE the stress), though only NPT and cell relaxation need a stress (bench/README.md)."""
        if self.can_batch:
            return self.entry.batch(self.calculator, [atoms], properties, 1)[0]
        return super().evaluate_one(atoms, properties)

    def evaluate(self, structures: Sequence[Atoms], properties=ENERGY_FORCES, *, batched="auto",
                 batch_size: int | None = None) -> list[Results]:
        wanted = check_properties(properties)
        structures = list(structures)
        if batch_size is not None and batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size!r}")
        if len(structures) <= 1 or not self.can_batch or batched is False:
            return self.one_by_one(structures, wanted)
        if batched == "auto":
            return self.auto_batching.evaluate(structures, wanted, lambda part: self.one_by_one(part, wanted),
                                               lambda part: self.batch(part, wanted, batch_size), self.device)
        return self.batch(structures, wanted, batch_size)

    def one_by_one(self, structures: list[Atoms], properties: tuple) -> list[Results]:
        """One model call per structure (the first measured for the planner's bytes per atom)."""
        return [self.planner.measured(lambda atoms=atoms: [self.evaluate_one(atoms, properties)], len(atoms),
                                      batched=False)[0] for atoms in structures]

    def batch(self, structures: list[Atoms], properties: tuple, batch_size: int | None) -> list[Results]:
        """Many structures per call, through the family's own batching, in batches the memory holds."""
        return self.planner.run(structures, lambda part: self.entry.batch(self.calculator, part, properties, len(part)),
                                batch_size)

    def provenance(self) -> dict[str, object]:
        return {
            "model_family": self.family,
            "model_source": self.source,
            "model_weights_sha256": self.weights_sha256 or "unknown",
            "model_device": self.device,
            "model_dtype": self.dtype,
        }


def models_dirs(spec: ModelSpec) -> list[Path]:
    """Folders searched for weights, in order: the recipe's, then $DRIVER_MODELS_DIR."""
    dirs = []
    if spec.models_dir:
        dirs.append(Path(spec.models_dir))
    for entry in os.environ.get(MODELS_DIR_ENV, "").split(os.pathsep):
        if entry:
            dirs.append(Path(entry).expanduser())
    return dirs


class KnownElements:
    """A family's element table read from its files (ModelFamily.known_elements), standing in for
    the loaded model in the element checks `driver validate` runs (Task.check_elements)."""

    def __init__(self, spec: ModelSpec, numbers: Collection[int]):
        self.spec = spec
        self.elements = frozenset(int(z) for z in numbers)

    def unsupported_elements(self, atoms: Atoms) -> list[str]:
        return sorted({atom.symbol for atom in atoms if atom.number not in self.elements})

    def provenance(self) -> dict[str, object]:
        source = self.spec.checkpoint or self.spec.variant or "default weights"
        return {"model_family": self.spec.name, "model_source": source}


def known_elements(spec: ModelSpec) -> KnownElements | None:
    """The model's element table without loading it, where its family can read one."""
    numbers = family(spec.name).known_elements(spec, models_dirs(spec))
    return None if numbers is None else KnownElements(spec, numbers)


def check_fits_in_memory(n_atoms: int, spec: ModelSpec, local_rank: int = 0) -> None:
    """Refuse, before the model loads, a cell whose one model call cannot fit in the memory
    available (estimated from the family's measured MB per atom), instead of the kernel killing
    the run minutes later."""
    entry = family(spec.name)
    if entry.memory_per_atom_mb is None:
        return
    device = resolve_device(spec.device, local_rank)
    per_atom = entry.memory_per_atom_mb * 2**20 * (2 if spec.dtype == "float64" else 1)
    estimate, available = n_atoms * per_atom, available_bytes(device)
    if estimate > available:
        raise ResourceError(
            f"structure: {n_atoms} atoms need about {gib(estimate)} for one {spec.name} call on {device} "
            f"({per_atom / 2**20:.1f} MB/atom in {spec.dtype}, measured on Si), more than the {gib(available)} "
            f"available; use a smaller cell or a device with more memory")


def processes_sharing(device: str, local_rank: int, local_size: int) -> int:
    """How many of this node's ranks draw on the memory this rank's model uses: all of them on the
    CPU, those mapped to the same GPU (rank r uses GPU r % n_gpus) on a GPU."""
    if local_size <= 1:
        return 1
    if not device.startswith("cuda"):
        return local_size
    import torch

    n_gpus = max(torch.cuda.device_count(), 1)
    return sum(1 for rank in range(local_size) if rank % n_gpus == local_rank % n_gpus)


def load_model(spec: ModelSpec, local_rank: int = 0, local_size: int = 1) -> ModelPotential:
    """Load the model a recipe names on the device it asks for (auto: GPU when present).

    Errors by cause: a bad name, path or file is InputError (exit 2); running out of memory on
    the device is ResourceError (exit 1); both keep the library's own message."""
    entry = family(spec.name)
    problem = entry.unsupported_dtype(spec.dtype)
    if problem is not None:
        raise InputError(problem)
    forbid_downloads_if_offline()
    device = resolve_device(spec.device, local_rank)
    try:
        # The libraries print banners on stdout; keep stdout for results.
        with contextlib.redirect_stdout(sys.stderr):
            weights = entry.load(spec, device, models_dirs(spec))
    except DriverError:
        raise
    except Exception as exc:
        if is_out_of_memory(exc):
            raise ResourceError(f"model: loading {spec.name} on {device} ran out of memory ({first_line(exc)})") from None
        raise
    return ModelPotential(entry, weights, device, spec.dtype, processes_sharing(device, local_rank, local_size))
