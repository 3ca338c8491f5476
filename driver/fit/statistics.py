"""The softening-scale statistics, as plain numpy over force components (DESIGN.md):

    s = sum(f_model . f_ref) / sum(f_ref . f_ref)     (least squares through the origin)

Kept free of models and files so every number can be checked against a direct computation.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

from driver.fit import validation
from driver.trust import refusal_reasons

# Below these the fit is reported as untrustworthy; each is explained in the warning itself.
MIN_COMPONENTS = 150
MIN_R_SQUARED = 0.8
MAX_RELATIVE_INTERVAL = 0.10
MIN_MEAN_REFERENCE_FORCE_EV_A = 0.3


def slope_through_origin(model: np.ndarray, reference: np.ndarray) -> float | None:
    """None where every reference component is zero: no slope can be fitted through them."""
    denominator = float(np.dot(reference, reference))
    return float(np.dot(model, reference) / denominator) if denominator > 0 else None


@dataclass
class FitStatistics:
    softening_scale: float
    interval_95: tuple[float, float]
    interval_method: str
    r_squared: float
    n_structures: int
    n_force_components: int
    mean_abs_reference_force_eV_A: float
    force_mae_before_eV_A: float
    force_mae_after_eV_A: float
    force_rmse_before_eV_A: float
    force_rmse_after_eV_A: float
    energy_mae_before_eV_atom: float | None
    energy_mae_after_eV_atom: float | None
    n_structures_energy: int
    per_element: dict[str, dict[str, float | int | None]]  # slope None: that element felt no force
    warnings: list[str] = field(default_factory=list)
    held_out: validation.HeldOut | None = None  # cross-validation over structures
    one_point: validation.OnePoint | None = None  # the paper's protocol: s from one structure, judged on the others
    per_force_bin: list[validation.SlopeSubset] = field(default_factory=list)
    per_group: list[validation.SlopeSubset] = field(default_factory=list)
    group_key: str | None = None
    fitted_force_range_eV_A: dict[str, float] = field(default_factory=dict)
    refusal_reasons: list[str] = field(default_factory=list)  # trust.refusal_reasons: why it must not be used

    def as_dict(self) -> dict:
        return plain_data(asdict(self))


def plain_data(value):
    """Lists for tuples and floats for numpy scalars, all the way down: what yaml.safe_dump writes."""
    if isinstance(value, dict):
        return {k: plain_data(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain_data(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def _bootstrap(groups: list[tuple[np.ndarray, np.ndarray]], resamples: int, rng: np.random.Generator) -> tuple[float, float]:
    """2.5 and 97.5 percentiles of s over resamples of the groups, with replacement."""
    dot_mr = np.array([np.dot(m, r) for m, r in groups])
    dot_rr = np.array([np.dot(r, r) for _, r in groups])
    picks = rng.integers(0, len(groups), size=(resamples, len(groups)))
    denominators = dot_rr[picks].sum(axis=1)
    usable = denominators > 0  # a resample of only force-free groups (atoms on symmetry sites) has no slope
    slopes = dot_mr[picks][usable].sum(axis=1) / denominators[usable]
    low, high = np.percentile(slopes, [2.5, 97.5])
    return float(low), float(high)


def _relative_energy_mae(model_energies, reference_energies, formulas, n_atoms, scale) -> tuple[float | None, float | None, int]:
    """MAE (eV/atom) of energies relative to the mean of structures that share a composition:
    absolute energies of a uMLIP and a DFT code differ by constants that carry no information."""
    groups: dict[str, list[int]] = defaultdict(list)
    for i, formula in enumerate(formulas):
        if model_energies[i] is not None and reference_energies[i] is not None:
            groups[formula].append(i)
    before, after = [], []
    for members in groups.values():
        if len(members) < 2:
            continue
        model = np.array([model_energies[i] for i in members])
        reference = np.array([reference_energies[i] for i in members])
        atoms = np.array([n_atoms[i] for i in members])
        d_model, d_reference = model - model.mean(), reference - reference.mean()
        before += list(np.abs(d_model - d_reference) / atoms)
        after += list(np.abs(d_model / scale - d_reference) / atoms)
    if not before:
        return None, None, 0
    return float(np.mean(before)), float(np.mean(after)), len(before)


def fit_statistics(
    model_forces: Sequence[np.ndarray],
    reference_forces: Sequence[np.ndarray],
    symbols: Sequence[Sequence[str]],
    model_energies: Sequence[float | None] | None = None,
    reference_energies: Sequence[float | None] | None = None,
    formulas: Sequence[str] | None = None,
    resamples: int = 1000,
    seed: int = 0,
    groups: Sequence[str | None] | None = None,
    group_key: str | None = None,
) -> FitStatistics:
    """Everything `driver fit` reports, from per-structure (n_atoms, 3) force arrays, evaluated once:
    the validation (held-out, one-point) and the regime (per force bin, per group) reuse them.
    `groups`: each structure's group name (None: in no group). Raises ValueError when every
    reference force is zero (nothing to fit)."""
    model_all = np.concatenate([np.ravel(f) for f in model_forces])
    reference_all = np.concatenate([np.ravel(f) for f in reference_forces])
    scale = slope_through_origin(model_all, reference_all)
    if scale is None:
        raise ValueError("every reference force is zero (structures at equilibrium): there is no slope to fit")
    residual = model_all - scale * reference_all
    r_squared = float(1 - np.dot(residual, residual) / np.sum((model_all - model_all.mean()) ** 2))
    rng = np.random.default_rng(seed)
    if len(model_forces) >= 2:
        units = [(np.ravel(m), np.ravel(r)) for m, r in zip(model_forces, reference_forces, strict=True)]
        method = f"bootstrap over structures ({resamples} resamples)"
    else:  # one structure: the paper's one-point correction; only atoms can be resampled
        m, r = np.asarray(model_forces[0]), np.asarray(reference_forces[0])
        units = [(m[i], r[i]) for i in range(len(m))]
        method = f"bootstrap over atoms of the single structure ({resamples} resamples)"
    interval = _bootstrap(units, resamples, rng)

    per_element: dict[str, dict[str, float | int | None]] = {}
    flat_symbols = np.repeat(np.concatenate([np.asarray(s) for s in symbols]), 3)
    for element in sorted(set(flat_symbols)):
        mask = flat_symbols == element
        per_element[str(element)] = {"softening_scale": slope_through_origin(model_all[mask], reference_all[mask]),
                                "n_components": int(mask.sum())}

    n = len(model_forces)
    energies = _relative_energy_mae(
        model_energies or [None] * n, reference_energies or [None] * n, formulas or [""] * n,
        [len(s) for s in symbols], scale,
    )
    stats = FitStatistics(
        softening_scale=scale, interval_95=interval, interval_method=method, r_squared=r_squared,
        n_structures=n, n_force_components=int(model_all.size),
        mean_abs_reference_force_eV_A=float(np.mean(np.abs(reference_all))),
        force_mae_before_eV_A=float(np.mean(np.abs(model_all - reference_all))),
        force_mae_after_eV_A=float(np.mean(np.abs(model_all / scale - reference_all))),
        force_rmse_before_eV_A=float(np.sqrt(np.mean((model_all - reference_all) ** 2))),
        force_rmse_after_eV_A=float(np.sqrt(np.mean((model_all / scale - reference_all) ** 2))),
        energy_mae_before_eV_atom=energies[0], energy_mae_after_eV_atom=energies[1], n_structures_energy=energies[2],
        per_element=per_element,
    )
    stats.held_out = validation.cross_validate(model_forces, reference_forces, seed=seed)
    stats.one_point = validation.one_point(model_forces, reference_forces)
    stats.per_force_bin = validation.slopes_per_force_bin(model_forces, reference_forces, resamples, seed)
    stats.per_group = validation.slopes_per_group(model_forces, reference_forces, groups or [None] * n, resamples, seed)
    stats.group_key = group_key if stats.per_group else None
    stats.fitted_force_range_eV_A = validation.fitted_force_range(reference_forces)
    stats.warnings = trust_warnings(stats)
    stats.refusal_reasons = refusal_reasons(stats)
    force_free = sum(1 for r in reference_forces if not np.any(np.asarray(r)))
    if force_free:
        stats.warnings.append(f"{force_free} of {n} structure(s) have no reference force at all (a symmetric "
                              "structure at equilibrium?): they say nothing about s; label displaced structures")
    return stats


def trust_warnings(stats: FitStatistics) -> list[str]:
    """Plain-words reasons not to trust the fit; empty when none apply."""
    found = []
    if stats.n_force_components < MIN_COMPONENTS:
        found.append(f"only {stats.n_force_components} force components: one scale from so few numbers is "
                     f"noisy; label a larger cell or more structures (>= {MIN_COMPONENTS} components)")
    if stats.r_squared < MIN_R_SQUARED:
        found.append(f"model and DFT forces agree poorly (R² = {stats.r_squared:.2f} < {MIN_R_SQUARED}): a single "
                     "scale cannot describe the error; consider fine-tuning (driver finetune) instead")
    low, high = stats.interval_95
    if (high - low) / stats.softening_scale > MAX_RELATIVE_INTERVAL:
        found.append(f"the 95% interval [{low:.3f}, {high:.3f}] is wider than {MAX_RELATIVE_INTERVAL:.0%} of s: "
                     "label more structures")
    if stats.mean_abs_reference_force_eV_A < MIN_MEAN_REFERENCE_FORCE_EV_A:
        found.append(f"the labels are near equilibrium (mean |DFT force| {stats.mean_abs_reference_force_eV_A:.2f} "
                     f"eV/Å < {MIN_MEAN_REFERENCE_FORCE_EV_A}): small forces say little about curvature; label "
                     "structures far from equilibrium (driver sample makes candidates)")
    for subsets, what in ((stats.per_force_bin, "|DFT force| bins"), (stats.per_group, f"groups ({stats.group_key})")):
        pair = validation.disagreeing(subsets)
        if pair is not None:
            low, high = pair
            found.append(f"s differs between {what} beyond their 95% intervals: {low.label} {low.softening_scale:.3f} "
                         f"[{low.interval_95[0]:.3f}, {low.interval_95[1]:.3f}] vs {high.label} "
                         f"{high.softening_scale:.3f} [{high.interval_95[0]:.3f}, {high.interval_95[1]:.3f}]: the "
                         "correction depends on which states the labels sample; label the states your run visits")
    if stats.softening_scale > 1:
        found.append(f"s = {stats.softening_scale:.3f} > 1: the model is stiffer than DFT here, and the "
                     "correction will soften it")
    return found
