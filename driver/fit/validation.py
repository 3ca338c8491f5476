"""Out-of-sample checks and the regime of a softening fit, from per-structure force arrays only.

Once the model has been evaluated on every labelled structure, cross-validation, the paper's
one-point protocol and the per-bin / per-group slopes need no further model call: each is a
least-squares slope through the origin over a subset of force components,
`s = Σ m·r / Σ r·r`, and an error of `m / s` against `r` on another subset.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

LEAVE_ONE_OUT_MAX = 20  # up to this many structures, every structure is its own fold
K_FOLDS = 10
N_FORCE_BINS = 4  # quartiles of the per-atom |DFT force|


@dataclass
class HeldOut:
    """Force errors on structures the slope was not fitted on, pooled over every held-out component (eV/Å)."""

    method: str
    n_folds: int
    force_mae_raw_eV_A: float
    force_mae_corrected_eV_A: float
    force_rmse_raw_eV_A: float
    force_rmse_corrected_eV_A: float
    n_folds_without_slope: int  # training part of a fold had no force, or fitted s <= 0: its corrected error is the raw one


@dataclass
class OnePoint:
    """The paper's protocol: s fitted on one structure, judged on all the others; spread over the choice of structure."""

    n_structures: int  # structures with any reference force (those a slope can be fitted from)
    softening_scale_median: float
    softening_scale_5_95: tuple[float, float]
    held_out_force_mae_raw_median_eV_A: float
    held_out_force_mae_corrected_median_eV_A: float
    held_out_force_mae_corrected_5_95_eV_A: tuple[float, float]
    n_positive_slopes: int


@dataclass
class SlopeSubset:
    """The slope on one part of the labels (a |DFT force| bin or a group of structures) with its bootstrap interval."""

    label: str
    softening_scale: float | None
    interval_95: tuple[float, float] | None
    n_force_components: int
    n_structures: int


def _flat(arrays: Sequence[np.ndarray]) -> list[np.ndarray]:
    return [np.ravel(np.asarray(a, dtype=np.float64)) for a in arrays]


def _errors(model: np.ndarray, reference: np.ndarray, scale: float | None) -> tuple[float, float, float, float]:
    """Sums of |raw error|, raw error², |corrected error|, corrected error² (corrected = raw where no slope)."""
    raw = model - reference
    corrected = raw if scale is None else model / scale - reference
    return float(np.abs(raw).sum()), float(raw @ raw), float(np.abs(corrected).sum()), float(corrected @ corrected)


def fold_assignment(n_structures: int, seed: int = 0) -> tuple[np.ndarray, str]:
    """Fold number of each structure: leave-one-out up to LEAVE_ONE_OUT_MAX structures, K_FOLDS shuffled folds above."""
    if n_structures <= LEAVE_ONE_OUT_MAX:
        return np.arange(n_structures), f"leave-one-out over {n_structures} structures"
    folds = np.random.default_rng(seed).permutation(np.arange(n_structures) % K_FOLDS)
    return folds, f"{K_FOLDS}-fold over {n_structures} structures"


def cross_validate(model_forces: Sequence[np.ndarray], reference_forces: Sequence[np.ndarray],
                   seed: int = 0) -> HeldOut | None:
    """Held-out force errors of raw and corrected forces, folds over structures; None for fewer than 2 structures."""
    if len(model_forces) < 2:
        return None
    model, reference = _flat(model_forces), _flat(reference_forces)
    dot_mr = np.array([m @ r for m, r in zip(model, reference, strict=True)])
    dot_rr = np.array([r @ r for r in reference])
    folds, method = fold_assignment(len(model), seed)
    totals = np.zeros(4)
    without_slope = 0
    for fold in np.unique(folds):
        train = folds != fold
        denominator = dot_rr[train].sum()
        scale = float(dot_mr[train].sum() / denominator) if denominator > 0 else None
        if scale is not None and not scale > 0:
            scale = None
        without_slope += scale is None
        for i in np.flatnonzero(~train):
            totals += _errors(model[i], reference[i], scale)
    n = sum(m.size for m in model)
    return HeldOut(method, int(len(np.unique(folds))), float(totals[0] / n), float(totals[2] / n),
                   float(np.sqrt(totals[1] / n)), float(np.sqrt(totals[3] / n)), int(without_slope))


def one_point(model_forces: Sequence[np.ndarray], reference_forces: Sequence[np.ndarray]) -> OnePoint | None:
    """Fit s from each single structure in turn and judge it on all the others; None for fewer than 2 structures."""
    if len(model_forces) < 2:
        return None
    model, reference = _flat(model_forces), _flat(reference_forces)
    model_all, reference_all = np.concatenate(model), np.concatenate(reference)
    ends = np.cumsum([m.size for m in model])
    starts = ends - np.array([m.size for m in model])
    raw_total = float(np.abs(model_all - reference_all).sum())
    scales, raw_mae, corrected_mae = [], [], []
    for i, (m, r) in enumerate(zip(model, reference, strict=True)):
        denominator = float(r @ r)
        if denominator == 0:
            continue  # a force-free structure fits no slope
        scale = float(m @ r) / denominator
        scales.append(scale)
        n_others = model_all.size - m.size
        raw_mae.append((raw_total - float(np.abs(m - r).sum())) / n_others)
        if scale > 0:
            corrected = np.abs(model_all / scale - reference_all)
            corrected_mae.append((float(corrected.sum()) - float(corrected[starts[i]:ends[i]].sum())) / n_others)
        else:  # the recipe could not use it: the one-point correction fails for this choice
            corrected_mae.append(np.inf)
    if not scales:
        return None
    corrected_array = np.array(corrected_mae)
    return OnePoint(
        n_structures=len(scales), softening_scale_median=float(np.median(scales)),
        softening_scale_5_95=tuple(float(x) for x in np.percentile(scales, [5, 95])),
        held_out_force_mae_raw_median_eV_A=float(np.median(raw_mae)),
        held_out_force_mae_corrected_median_eV_A=float(np.median(corrected_array)),
        held_out_force_mae_corrected_5_95_eV_A=tuple(float(x) for x in np.percentile(
            corrected_array, [5, 95], method="linear" if np.isfinite(corrected_array).all() else "nearest")),
        n_positive_slopes=int(sum(s > 0 for s in scales)),
    )


def _subset_slopes(units_mr: np.ndarray, units_rr: np.ndarray, resamples: int,
                   rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Slopes of each column (a subset) of per-unit sums, on the data and on bootstrap resamples of the units.
    Returns (slopes, (2, n_subsets) 2.5/97.5 percentiles); NaN where a subset has no force."""
    with np.errstate(invalid="ignore", divide="ignore"):
        slopes = units_mr.sum(axis=0) / units_rr.sum(axis=0)
        picks = rng.integers(0, len(units_mr), size=(resamples, len(units_mr)))
        resampled = units_mr[picks].sum(axis=1) / units_rr[picks].sum(axis=1)
    resampled[~np.isfinite(resampled)] = np.nan
    with np.errstate(invalid="ignore"):
        bounds = np.full((2, units_mr.shape[1]), np.nan)
        for column in range(units_mr.shape[1]):
            finite = resampled[:, column][np.isfinite(resampled[:, column])]
            if finite.size:
                bounds[:, column] = np.percentile(finite, [2.5, 97.5])
    return slopes, bounds


def _units(model_forces, reference_forces):
    """Bootstrap units: structures, or the atoms of a single structure (as the overall interval does)."""
    if len(model_forces) >= 2:
        return [np.asarray(m, dtype=np.float64).reshape(-1, 3) for m in model_forces], \
               [np.asarray(r, dtype=np.float64).reshape(-1, 3) for r in reference_forces]
    m, r = np.asarray(model_forces[0], dtype=np.float64), np.asarray(reference_forces[0], dtype=np.float64)
    return [row[None] for row in m], [row[None] for row in r]


def force_bin_edges(reference_forces: Sequence[np.ndarray], n_bins: int = N_FORCE_BINS) -> np.ndarray:
    """Quantile edges of the per-atom |DFT force| (eV/Å), first edge 0 and last the largest force."""
    norms = np.concatenate([np.linalg.norm(np.asarray(r).reshape(-1, 3), axis=1) for r in reference_forces])
    edges = np.quantile(norms, np.linspace(0, 1, n_bins + 1))
    edges[0] = 0.0
    return edges


def slopes_per_force_bin(model_forces, reference_forces, resamples: int = 1000, seed: int = 0,
                         n_bins: int = N_FORCE_BINS) -> list[SlopeSubset]:
    """The slope on the atoms in each quantile bin of |DFT force|: does s hold over the force range?"""
    edges = force_bin_edges(reference_forces, n_bins)
    models, references = _units(model_forces, reference_forces)
    mr = np.zeros((len(models), n_bins))
    rr = np.zeros((len(models), n_bins))
    counts = np.zeros((len(models), n_bins), dtype=int)
    for u, (m, r) in enumerate(zip(models, references, strict=True)):
        which = np.clip(np.searchsorted(edges, np.linalg.norm(r, axis=1), side="right") - 1, 0, n_bins - 1)
        for b in range(n_bins):
            chosen = which == b
            mr[u, b] = float(np.sum(m[chosen] * r[chosen]))
            rr[u, b] = float(np.sum(r[chosen] * r[chosen]))
            counts[u, b] = int(chosen.sum())
    slopes, bounds = _subset_slopes(mr, rr, resamples, np.random.default_rng(seed))
    n_structures = len(model_forces)
    return [SlopeSubset(f"|F| {edges[b]:.3g}–{edges[b + 1]:.3g} eV/Å",
                        float(slopes[b]) if np.isfinite(slopes[b]) else None,
                        tuple(float(x) for x in bounds[:, b]) if np.isfinite(bounds[:, b]).all() else None,
                        int(3 * counts[:, b].sum()),
                        int(np.count_nonzero(counts[:, b])) if n_structures >= 2 else 1)
            for b in range(n_bins)]


def slopes_per_group(model_forces, reference_forces, groups: Sequence[str | None], resamples: int = 1000,
                     seed: int = 0) -> list[SlopeSubset]:
    """The slope on each group of structures (e.g. their `config_type`), each with a bootstrap over its own
    structures; empty when fewer than two groups are named."""
    names = sorted({g for g in groups if g is not None})
    if len(names) < 2:
        return []
    rng = np.random.default_rng(seed)
    found = []
    for name in names:
        members = [i for i, g in enumerate(groups) if g == name]
        m = [model_forces[i] for i in members]
        r = [reference_forces[i] for i in members]
        models, references = _units(m, r)
        mr = np.array([[float(np.sum(a * b))] for a, b in zip(models, references, strict=True)])
        rr = np.array([[float(np.sum(b * b))] for b in references])
        slopes, bounds = _subset_slopes(mr, rr, resamples, rng)
        found.append(SlopeSubset(str(name), float(slopes[0]) if np.isfinite(slopes[0]) else None,
                                 tuple(float(x) for x in bounds[:, 0]) if np.isfinite(bounds[:, 0]).all() else None,
                                 int(sum(np.size(a) for a in r)), len(members)))
    return found


def disagreeing(subsets: Sequence[SlopeSubset]) -> tuple[SlopeSubset, SlopeSubset] | None:
    """The lowest- and highest-slope subsets when their 95% intervals do not overlap, else None."""
    usable = [s for s in subsets if s.softening_scale is not None and s.interval_95 is not None]
    if len(usable) < 2:
        return None
    low = min(usable, key=lambda s: s.interval_95[1])
    high = max(usable, key=lambda s: s.interval_95[0])
    gap = high.interval_95[0] - low.interval_95[1]
    return (low, high) if gap > 1e-9 * max(abs(high.interval_95[0]), abs(low.interval_95[1])) else None


def fitted_force_range(reference_forces: Sequence[np.ndarray]) -> dict[str, float]:
    """Per-atom |DFT force| the fit saw (eV/Å): where the correction has been tested."""
    norms = np.concatenate([np.linalg.norm(np.asarray(r).reshape(-1, 3), axis=1) for r in reference_forces])
    p5, median, p95 = np.percentile(norms, [5, 50, 95])
    return {"min": float(norms.min()), "p5": float(p5), "median": float(median), "p95": float(p95),
            "max": float(norms.max())}
