"""One entry per model family: everything the rest of the driver needs to know about it.

A family module (driver/models/chgnet.py, ...) defines `FAMILY = ModelFamily(...)`: how to load
it, how its library batches, the precisions it runs in, how to recognise its checkpoints, where
its fine-tuning lives and which packages shape its results. The recipe's model names, the CLI's
choices, `driver models`, fine-tuning dispatch and provenance all read this registry, so a new
family is one new module (plus `register` for one that lives outside the package, as the tests'
EMT family does). Family modules import their heavy library only inside functions.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ase import Atoms
    from ase.calculators.calculator import Calculator

    from driver.models import LoadedWeights
    from driver.potential import Property, Results
    from driver.specs import ModelSpec

BUILTIN_FAMILY_MODULES = ("driver.models.chgnet", "driver.models.m3gnet", "driver.models.mace")

BatchFn = Callable[["Calculator", "Sequence[Atoms]", "tuple[Property, ...]", int], "list[Results]"]


@dataclass(frozen=True)
class ModelFamily:
    name: str  # what a recipe's model.name says
    package: str  # the library that runs it (importable name)
    dtypes: tuple[str, ...]  # precisions it runs in; the first is the default
    description: str  # one line for `driver models`: variants, defaults, where weights are looked up
    load: Callable[[ModelSpec, str, list[Path]], LoadedWeights]  # (spec, device, models dirs)
    # Native batching: `can_batch(calculator)` says whether the library configuration is one
    # `batch` reproduces; `batch(calculator, structures, properties, batch_size)` evaluates.
    batch: BatchFn | None = None
    can_batch: Callable[[Calculator], bool] = lambda calculator: False
    # Whether a path holds this library's own checkpoint, told by its content and never by its name
    # alone, without unpickling it (driver.models.checkpoint_kind).
    is_checkpoint: Callable[[Path], bool] = lambda path: False
    # The atomic numbers the loaded model has parameters for (its calculator in hand); None: it
    # does not say. A structure with another element is refused before any job runs.
    elements: Callable[[Calculator], Collection[int] | None] = lambda calculator: None
    # The same table read without loading the model (from its files), where the format allows:
    # `driver validate` then refuses such a structure too. None: known only once loaded (MACE).
    known_elements: Callable[[ModelSpec, list[Path]], Collection[int] | None] = lambda spec, dirs: None
    magmoms: bool = False  # predicts per-atom magnetic moments (output.magmoms)
    # Peak MB per atom of one energy+forces call in float32 (diamond Si, CPU; bench/scaling.py),
    # twice that in float64: a cell that cannot fit is refused before the model loads.
    memory_per_atom_mb: float | None = None
    finetune_module: str | None = None  # module with train(...) for `driver finetune`
    distributions: tuple[str, ...] = ()  # packages whose versions go into provenance

    def unsupported_dtype(self, dtype: str) -> str | None:
        if dtype in self.dtypes:
            return None
        return f"model.dtype: {self.name} runs in {' or '.join(self.dtypes)} only, got {dtype!r}"


_FAMILIES: dict[str, ModelFamily] = {}
_BUILTINS_LOADED = False


def _load_builtins() -> None:
    global _BUILTINS_LOADED
    if not _BUILTINS_LOADED:
        _BUILTINS_LOADED = True
        for module in BUILTIN_FAMILY_MODULES:
            _FAMILIES.setdefault(importlib.import_module(module).FAMILY.name, importlib.import_module(module).FAMILY)


def register(family: ModelFamily) -> None:
    """Add (or replace) a family; recipes can name it from then on."""
    _FAMILIES[family.name] = family


def unregister(name: str) -> None:
    _FAMILIES.pop(name, None)


def families() -> dict[str, ModelFamily]:
    _load_builtins()
    return dict(_FAMILIES)


def family_names() -> tuple[str, ...]:
    return tuple(families())


def family(name: str) -> ModelFamily:
    found = families().get(name)
    if found is None:
        raise KeyError(name)
    return found
