"""A model family in one module, as a new uMLIP would be added: ASE's EMT (Cu, Al, Ni, Pd, Ag,
Pt, Au), cheap enough to run every layer of the driver in a fraction of a second per step.
Registered by the tests that use it (driver.registry.register)."""

from __future__ import annotations

from pathlib import Path

from driver.registry import ModelFamily


def _stateless_emt():
    """ASE's EMT with its neighbour list built afresh at every call, as a uMLIP builds its graph:
    stock EMT updates the list only past a skin, so its forces (to round-off) depend on the
    structures it saw before, and a resumed job could not match an uninterrupted one bit for bit."""
    from ase.calculators.calculator import all_changes
    from ase.calculators.emt import EMT

    class StatelessEMT(EMT):
        def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
            super().calculate(atoms, properties, all_changes)

    return StatelessEMT


def load(spec, device: str, models_dirs: list[Path]):
    from driver.models import LoadedWeights

    return LoadedWeights(_stateless_emt()(), "ase-emt", None)


FAMILY = ModelFamily(
    name="emt",
    package="ase",
    dtypes=("float64",),
    description="ASE's effective-medium theory (tests only)",
    load=load,
    distributions=("ase",),
)


SLOW_CALL_S = 0.03


def load_slow(spec, device: str, models_dirs: list[Path]):
    """EMT that takes SLOW_CALL_S per call: slow enough to be killed mid-job by the restart tests."""
    import time

    from driver.models import LoadedWeights

    class SlowEMT(_stateless_emt()):
        def calculate(self, *args, **kwargs):
            time.sleep(SLOW_CALL_S)
            super().calculate(*args, **kwargs)

    return LoadedWeights(SlowEMT(), "ase-emt-slow", None)


SLOW_FAMILY = ModelFamily(
    name="emt_slow",
    package="ase",
    dtypes=("float64",),
    description="ASE's EMT, slowed down (restart tests only)",
    load=load_slow,
    distributions=("ase",),
)
