"""The PES-softening correction as a Potential wrapping a Potential (Deng et al., npj Comput. Mater. 2025).

    E'(R) = E0 + (E(R) - E0) / s,   F' = F / s,   sigma' = sigma / s

E0 is the raw energy of the job's reference structure. The map keeps the raw PES's minima and
saddle points and multiplies its curvature by 1/s; it is conservative, so NVE conserves E'.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from driver.errors import InputError
from driver.potential import ENERGY_FORCES, Potential, Results
from driver.provenance import sha256_of_path
from driver.specs import MAX_SOFTENING_SCALE
from driver.trust import Trust, read_trust
from driver.yaml_guard import load_yaml_file

if TYPE_CHECKING:
    from driver.specs import CorrectionSpec, ModelSpec


class SofteningCorrection(Potential):
    """Any Potential with its PES stiffened by 1/softening_scale about E0 (the map above), for
    one structure or a batch alike: the one place the correction's formula is written."""

    def __init__(self, base: Potential, softening_scale: float, reference_energy_eV: float):
        if not softening_scale > 0:
            raise InputError(f"correction: softening_scale must be > 0, got {softening_scale!r}")
        self.base = base
        self.device = base.device
        self.softening_scale = float(softening_scale)
        self.reference_energy_eV = float(reference_energy_eV)

    def evaluate(self, structures, properties=ENERGY_FORCES, *, batched="auto", batch_size=None):
        s, e0 = self.softening_scale, self.reference_energy_eV
        raw = self.base.evaluate(structures, properties, batched=batched, batch_size=batch_size)
        return [Results(
            energy=e0 + (r.energy - e0) / s,
            forces=None if r.forces is None else r.forces / s,
            stress=None if r.stress is None else r.stress / s,
            magmoms=r.magmoms,  # not a derivative of the PES: the correction leaves it alone
        ) for r in raw]

    def provenance(self) -> dict[str, object]:
        return {**self.base.provenance(), "softening_scale": self.softening_scale,
                "reference_energy_eV": self.reference_energy_eV}

    def unsupported_elements(self, atoms) -> list[str]:
        return self.base.unsupported_elements(atoms)

    def energy_is_defined(self, atoms, reference) -> bool:
        """E' = E0 + (E - E0)/s compares energies on one PES: it means something only for a
        structure with the reference's composition (the same atoms, any positions or cell).
        Forces and stresses (F/s, sigma/s) are defined for any structure."""
        same_atoms = sorted(reference.numbers.tolist()) == sorted(atoms.numbers.tolist())
        return same_atoms and self.base.energy_is_defined(atoms, reference)


@dataclass(frozen=True)
class SofteningScale:
    """A softening scale and where it came from (inline in the recipe, or a fit file)."""

    value: float
    source: str
    fitted_model: dict | None = None
    file_sha256: str | None = None
    trust: Trust | None = None  # the file's trust block (driver fit's verdict); None inline or hand-written

    def provenance(self) -> dict[str, object]:
        record: dict[str, object] = {"softening_scale": self.value, "correction_source": self.source}
        if self.file_sha256:
            record["correction_file_sha256"] = self.file_sha256
        if self.trust is not None:
            record.update(self.trust.provenance())
        return record

    def apply(self, base: Potential, reference_energy_eV: float) -> SofteningCorrection:
        """The corrected potential of a job whose reference structure has raw energy E0."""
        return SofteningCorrection(base, self.value, reference_energy_eV)

    def warning_lines(self) -> list[str]:
        """What a run prints before its jobs start: one line for an untrusted or warned correction."""
        return self.trust.warning_lines() if self.trust is not None else []

    def check_model(self, weights_sha256: str | None) -> None:
        """A scale fitted for other weights must not silently correct these."""
        fitted = (self.fitted_model or {}).get("weights_sha256")
        if fitted and weights_sha256 and fitted != weights_sha256:
            raise InputError(
                f"{self.source}: model.weights_sha256: fitted for weights {fitted[:12]}…, "
                f"the recipe's model has {weights_sha256[:12]}…"
            )




def read_correction_file(path: str | Path, model: ModelSpec | None = None) -> SofteningScale:
    """Read a correction file (as `driver fit` writes it) and check it suits the recipe's model."""
    path = Path(path)
    data = load_yaml_file(path, "correction file")
    if not isinstance(data, dict) or "softening_scale" not in data:
        raise InputError(f"{path}: softening_scale: is required")
    value = data["softening_scale"]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise InputError(f"{path}: softening_scale: must be a number > 0, got {value!r}")
    if value > MAX_SOFTENING_SCALE:
        raise InputError(f"{path}: softening_scale: must be <= {MAX_SOFTENING_SCALE:g}, got {value!r} "
                         f"(allowed: 0 < softening_scale <= {MAX_SOFTENING_SCALE:g}, as correction.scale)")
    fitted_model = data.get("model")
    if isinstance(fitted_model, str):
        fitted_model = {"name": fitted_model}
    if fitted_model is not None and not isinstance(fitted_model, dict):
        raise InputError(f"{path}: model: must be a mapping with at least 'name', got {fitted_model!r}")
    if model is not None and fitted_model and fitted_model.get("name") not in (None, model.name):
        raise InputError(
            f"{path}: model.name: fitted for {fitted_model.get('name')!r}, "
            f"but the recipe's model is {model.name!r}"
        )
    if model is not None and fitted_model:
        _check_fitted_weights(path, fitted_model, model)
    return SofteningScale(float(value), str(path), fitted_model, sha256_of_path(path), read_trust(data, str(path)))


def _check_fitted_weights(path: Path, fitted: dict, model: ModelSpec) -> None:
    """Before any model loads: a scale fitted for other weights (another variant, a fine-tuned
    checkpoint, or the pretrained model when the recipe runs a checkpoint) is refused. The
    loaded weights' sha256 is checked again after loading (SofteningScale.check_model)."""
    variant = fitted.get("variant")
    if variant is not None and model.variant is not None and variant != model.variant:
        raise InputError(f"{path}: model.variant: fitted for {variant!r}, but the recipe's model is {model.variant!r}")
    if "checkpoint" not in fitted:  # a hand-written file naming only the family
        return
    if (fitted["checkpoint"] is None) != (model.checkpoint is None):
        fitted_for = "the pretrained weights" if fitted["checkpoint"] is None else f"checkpoint {fitted['checkpoint']}"
        runs = "the pretrained weights" if model.checkpoint is None else f"checkpoint {model.checkpoint}"
        raise InputError(f"{path}: model.checkpoint: fitted for {fitted_for}, but the recipe's model runs {runs}")
    sha = fitted.get("weights_sha256")
    if sha and model.checkpoint is not None and Path(model.checkpoint).is_file():
        if sha256_of_path(model.checkpoint) != sha:
            raise InputError(f"{path}: model.weights_sha256: fitted for weights {sha[:12]}…, the recipe's "
                             f"checkpoint {model.checkpoint} has other weights")


def resolve_softening_scale(spec: CorrectionSpec, model: ModelSpec) -> SofteningScale:
    if spec.file is not None:
        return read_correction_file(spec.file, model)
    return SofteningScale(float(spec.scale), "recipe")


# What the scalar map predicts for a corrected result relative to the raw one on the same path or
# structure: energy differences (barriers, B0, C_ij) scale by 1/s, harmonic frequencies by
# 1/sqrt(s), thermal displacement amplitudes at one temperature by sqrt(s). Reports and
# `driver compare` print these beside the measured ratios.
EXPECTED_RATIO = {
    "energy": lambda s: 1 / s,
    "modulus": lambda s: 1 / s,  # bulk modulus, elastic constants: second derivatives of the energy
    "frequency": lambda s: s ** -0.5,
    "displacement": lambda s: s ** 0.5,
}
EXPECTED_RATIO_TEXT = {"energy": "1/s", "modulus": "1/s", "frequency": "1/sqrt(s)", "displacement": "sqrt(s)"}


def expected_ratio(kind: str, softening_scale: float | None) -> float | None:
    """corrected/raw as the scalar correction predicts it (None for a job without one)."""
    if not softening_scale:
        return None
    return float(EXPECTED_RATIO[kind](softening_scale))


def raw_temperature_equivalent(temperature_K: float, softening_scale: float) -> float:
    """The raw-PES temperature whose dynamics corrected dynamics at T reproduce (the NVE
    time-rescaling: v -> sqrt(s) v, dt -> dt / sqrt(s)), s T; rates then follow with the
    frequency ratio 1/sqrt(s) on the prefactor."""
    return softening_scale * temperature_K
