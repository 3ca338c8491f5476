"""Mean squared displacement, tracer diffusivity, Nernst-Einstein conductivity, Arrhenius fits.

Why not pymatgen-analysis-diffusion's DiffusionAnalyzer: it is not installed here, and it wants a
pymatgen Structure per frame (built from the whole trajectory in memory) before it computes
anything; our H5MD files already hold (frames, atoms, 3) arrays in Å and fs, so the same standard
estimators are a few vectorised lines on those arrays.

Units: positions Å, times fs, D in cm²/s (1 Å²/fs = 0.1 cm²/s), σ in S/cm, energies in eV.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from ase import units

A2_PER_FS_TO_CM2_PER_S = 0.1
BOLTZMANN_EV_K = units.kB
ELEMENTARY_CHARGE_C = 1.602176634e-19
BOLTZMANN_J_K = 1.380649e-23


def unwrap(positions: np.ndarray, cells: np.ndarray) -> np.ndarray:
    """Continuous trajectories from possibly wrapped ones: each frame-to-frame step is replaced by
    its minimum image (in that frame's cell), then accumulated. Right as long as no atom moves
    more than half a cell between stored frames; a no-op on already unwrapped input."""
    steps = np.diff(positions, axis=0)
    if len(steps):
        inverse = np.linalg.inv(cells[1:])  # (F-1, 3, 3): fractional = cartesian @ inv(cell)
        fractional = np.einsum("fai,fij->faj", steps, inverse)
        fractional -= np.round(fractional)
        steps = np.einsum("faj,fji->fai", fractional, cells[1:])
    return np.concatenate([positions[:1], positions[:1] + np.cumsum(steps, axis=0)], axis=0)


def msd_time_averaged(positions: np.ndarray) -> np.ndarray:
    """MSD(lag) averaged over all time origins and atoms, for lags 0..F-1 (frames).

    The FFT form of Σ_t |r(t+k) - r(t)|² / (F - k) (Calandrini et al., nMoldyn): O(F log F) per
    atom instead of O(F²), exact, so long trajectories cost little."""
    n_frames = positions.shape[0]
    if n_frames < 2:
        return np.zeros(n_frames)
    x = positions.reshape(n_frames, -1)  # (F, atoms*3)
    squared = np.sum(x**2, axis=1)
    size = 2 * n_frames
    spectrum = np.fft.rfft(x, n=size, axis=0)
    autocorrelation = np.fft.irfft(spectrum * spectrum.conj(), n=size, axis=0)[:n_frames].sum(axis=1)
    counts = n_frames - np.arange(n_frames)
    # S1(k) = Σ_{t=0}^{F-k-1} (|r(t)|² + |r(t+k)|²), built by the recursion of the FFT algorithm.
    s1 = np.empty(n_frames)
    total = 2 * squared.sum()
    s1[0] = total
    for k in range(1, n_frames):
        total -= squared[k - 1] + squared[n_frames - k]
        s1[k] = total
    n_atoms = positions.shape[1]
    return (s1 - 2 * autocorrelation) / counts / n_atoms


def remove_drift(positions: np.ndarray, masses: np.ndarray) -> np.ndarray:
    """Positions relative to the centre of mass, so a drifting box does not count as diffusion."""
    centre = np.einsum("fai,a->fi", positions, masses) / masses.sum()
    return positions - (centre - centre[0])[:, None, :]


@dataclass
class DiffusionFit:
    """D from the MSD slope over a window of lag times, with its uncertainty and how it was got."""

    diffusivity_cm2_s: float
    error_cm2_s: float
    error_method: str
    window_fs: tuple[float, float]
    slope_A2_fs: float
    intercept_A2: float


def _window(n_frames: int, window: tuple[float, float]) -> slice:
    start = max(1, int(round(window[0] * (n_frames - 1))))
    stop = max(start + 2, int(round(window[1] * (n_frames - 1))) + 1)
    return slice(start, min(stop, n_frames))


def fit_slope(times_fs: np.ndarray, msd: np.ndarray, window: tuple[float, float]) -> tuple[float, float, float, slice]:
    """Least-squares line through the window; returns (slope, its standard error, intercept, window)."""
    part = _window(len(times_fs), window)
    t, y = times_fs[part], msd[part]
    if len(t) < 2:
        return float("nan"), float("nan"), float("nan"), part
    design = np.vstack([t, np.ones_like(t)]).T
    (slope, intercept), *_ = np.linalg.lstsq(design, y, rcond=None)
    if len(t) > 2:
        residual = y - design @ np.array([slope, intercept])
        variance = residual @ residual / (len(t) - 2)
        error = math.sqrt(variance / np.sum((t - t.mean()) ** 2))
    else:
        error = float("nan")
    return float(slope), float(error), float(intercept), part


def diffusivity(times_fs: np.ndarray, positions: np.ndarray, window: tuple[float, float] = (0.1, 0.5),
                n_blocks: int = 5, min_block_frames: int = 20) -> tuple[np.ndarray, DiffusionFit]:
    """Time-origin-averaged MSD of unwrapped `positions` (F, atoms, 3) and D = slope/6.

    The window is in fractions of the run: the start skips the ballistic/vibrational regime, the
    end stops before lags with few time origins. Uncertainty by block averaging when the run cuts
    into `n_blocks` contiguous blocks of at least `min_block_frames` frames: D is fitted in each
    block with the same fractional window, and the error is the standard deviation of those D's.
    (The MSD at a fixed fraction of a run has the same relative scatter for a block as for the
    whole run, so the blocks' spread, not its /sqrt(n), estimates the whole run's error; MSD points
    at neighbouring lags are strongly correlated, which makes the fit's own standard error too
    small.) Shorter runs fall back to the fit's standard error, and `error_method` says which.
    Checked on Brownian walkers: the spread of D over 40 seeds matches the block estimate."""
    times = np.asarray(times_fs, dtype=float) - float(times_fs[0])
    msd = msd_time_averaged(positions)
    slope, slope_error, intercept, part = fit_slope(times, msd, window)
    method = "standard error of the MSD-slope fit (too few frames for block averaging)"
    block = len(times) // n_blocks
    if block >= min_block_frames:
        slopes = [fit_slope(times[:block], msd_time_averaged(positions[i * block:(i + 1) * block]), window)[0]
                  for i in range(n_blocks)]
        slope_error = float(np.std(slopes, ddof=1))
        method = f"block averaging (spread of D over {n_blocks} blocks of {block} frames)"
    window_fs = (float(times[part.start]), float(times[part.stop - 1])) if part.start < len(times) else (0.0, 0.0)
    fit = DiffusionFit(slope / 6 * A2_PER_FS_TO_CM2_PER_S, slope_error / 6 * A2_PER_FS_TO_CM2_PER_S, method,
                       window_fs, slope, intercept)
    return msd, fit


def nernst_einstein(diffusivity_cm2_s: float, n_atoms: int, volume_A3: float, charge_e: float,
                    temperature_K: float) -> float:
    """σ = n q² D / (k T) in S/cm, for one species: uncorrelated ions (Haven ratio 1)."""
    number_density_cm3 = n_atoms / (volume_A3 * 1e-24)
    q = charge_e * ELEMENTARY_CHARGE_C
    return number_density_cm3 * q**2 * diffusivity_cm2_s / (BOLTZMANN_J_K * temperature_K)


@dataclass
class ArrheniusFit:
    """D(T) = D0 exp(-Ea / kT) from a line through ln D against 1/T; errors need ≥ 3 points."""

    activation_energy_eV: float
    activation_energy_error_eV: float | None
    prefactor_cm2_s: float
    prefactor_error_cm2_s: float | None
    temperatures_K: list[float]

    def diffusivity_at(self, temperature_K: float) -> float:
        return self.prefactor_cm2_s * math.exp(-self.activation_energy_eV / (BOLTZMANN_EV_K * temperature_K))


def arrhenius_fit(temperatures_K: list[float], diffusivities_cm2_s: list[float]) -> ArrheniusFit | None:
    """Unweighted least squares of ln D on 1/T; None with fewer than 2 usable (D > 0) points."""
    pairs = [(t, d) for t, d in zip(temperatures_K, diffusivities_cm2_s, strict=True)
             if d is not None and math.isfinite(d) and d > 0 and t > 0]
    if len(pairs) < 2 or len({t for t, _ in pairs}) < 2:
        return None
    x = np.array([1.0 / t for t, _ in pairs])
    y = np.log([d for _, d in pairs])
    design = np.vstack([x, np.ones_like(x)]).T
    (slope, intercept), *_ = np.linalg.lstsq(design, y, rcond=None)
    ea_error = d0_error = None
    if len(pairs) >= 3:
        residual = y - design @ np.array([slope, intercept])
        covariance = (residual @ residual / (len(pairs) - 2)) * np.linalg.inv(design.T @ design)
        ea_error = float(math.sqrt(covariance[0, 0]) * BOLTZMANN_EV_K)
        d0_error = float(math.exp(intercept) * math.sqrt(covariance[1, 1]))
    return ArrheniusFit(float(-slope * BOLTZMANN_EV_K), ea_error, float(math.exp(intercept)), d0_error,
                        sorted(t for t, _ in pairs))
