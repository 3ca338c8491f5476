"""Trajectory arithmetic the diffusivity estimator builds on: unwrapping, and the time-origin
averaged MSD (for choosing the diffusive window and for plots; D and its interval come from
kinisi, driver.analysis.kinisi_adapter).

Units: positions Å, times fs, D in cm²/s (1 Å²/fs = 0.1 cm²/s).
"""

from __future__ import annotations

import numpy as np

A2_PER_FS_TO_CM2_PER_S = 0.1


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
