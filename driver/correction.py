"""The PES-softening correction as one more ASE calculator (Deng et al., npj Comput. Mater. 2025).

    E'(R) = E0 + (E(R) - E0) / s,   F' = F / s,   sigma' = sigma / s

E0 is the raw energy of the job's reference structure. The map keeps the raw PES's minima and
saddle points and multiplies its curvature by 1/s; it is conservative, so NVE conserves E'.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml
from ase import Atoms
from ase.calculators.calculator import Calculator, all_changes

from driver.errors import InputError
from driver.fit.trust import Trust, read_trust
from driver.provenance import sha256_of_path
from driver.recipe import CorrectionSpec, ModelSpec


class SofteningCorrection(Calculator):
    """Wrap any calculator so its PES is stiffened by 1/softening_scale about E0."""

    implemented_properties = ["energy", "free_energy", "forces", "stress"]

    def __init__(self, base: Calculator, softening_scale: float, reference_energy_eV: float):
        if not softening_scale > 0:
            raise InputError(f"correction: softening_scale must be > 0, got {softening_scale!r}")
        super().__init__()
        self.base = base
        self.softening_scale = float(softening_scale)
        self.reference_energy_eV = float(reference_energy_eV)

    def calculate(self, atoms: Atoms | None = None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        s, e0 = self.softening_scale, self.reference_energy_eV
        raw_energy = self.base.get_potential_energy(self.atoms)
        energy = e0 + (raw_energy - e0) / s
        self.results = {
            "energy": energy,
            "free_energy": energy,
            "forces": self.base.get_forces(self.atoms) / s,
        }
        if "stress" in properties:
            self.results["stress"] = self.base.get_stress(self.atoms) / s


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
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise InputError(f"{path}: cannot read correction file: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise InputError(f"{path}: YAML syntax error: {getattr(exc, 'problem', exc)}") from None
    if not isinstance(data, dict) or "softening_scale" not in data:
        raise InputError(f"{path}: softening_scale: is required")
    value = data["softening_scale"]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise InputError(f"{path}: softening_scale: must be a number > 0, got {value!r}")
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
    return SofteningScale(float(value), str(path), fitted_model, sha256_of_path(path), read_trust(data, str(path)))


def resolve_softening_scale(spec: CorrectionSpec, model: ModelSpec) -> SofteningScale:
    if spec.file is not None:
        return read_correction_file(spec.file, model)
    return SofteningScale(float(spec.scale), "recipe")


def correct_batch_results(results: list[dict], softening_scale: float, reference_energy_eV: float) -> list[dict]:
    """SofteningCorrection's map applied to raw batch results (as `evaluate_batch` returns them):
    E' = E0 + (E - E0) / s, F' = F / s, sigma' = sigma / s. Returns new dicts; other keys are kept."""
    import numpy as np

    if not softening_scale > 0:
        raise InputError(f"correction: softening_scale must be > 0, got {softening_scale!r}")
    s, e0 = float(softening_scale), float(reference_energy_eV)
    corrected = []
    for result in results:
        out = dict(result)
        out["energy"] = e0 + (float(result["energy"]) - e0) / s
        out["forces"] = np.asarray(result["forces"], dtype=np.float64) / s
        if "stress" in result:
            out["stress"] = np.asarray(result["stress"], dtype=np.float64) / s
        corrected.append(out)
    return corrected
