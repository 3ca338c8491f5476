"""Arrhenius fits with intervals: D(T) = D0 exp(-Ea / kT) through each temperature's D posterior,
and extrapolation (D at room temperature) with its interval.

Why not kinisi's Arrhenius class: its default priors are uniform within ±50% of the best fit,
which truncates exactly the tails an extrapolation to 300 K depends on, and its likelihood is
Gaussian in D, while D's posteriors are skewed and span decades. Here ln D at each temperature is
summarised by the mean and variance of ln(samples), and ln D = ln D0 - Ea/(k T) is a linear model
with known variances: its posterior under flat priors is exactly Gaussian (generalised least
squares), sampled to propagate into D(T'), σ(T') and ratios. χ² of the fit tests the line: a
small p-value means ln D is curved in 1/T (another mechanism, or a phase change, between the
temperatures), and the extrapolation is flagged.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from ase import units
from scipy import stats

BOLTZMANN_EV_K = units.kB
CURVATURE_P_VALUE = 0.05
N_SAMPLES = 4000


@dataclass
class ArrheniusPosterior:
    temperatures_K: list[float]
    ln_d_mean: np.ndarray  # per temperature, the data the line went through
    ln_d_sd: np.ndarray
    activation_energy_samples_eV: np.ndarray
    ln_prefactor_samples: np.ndarray  # ln(D0 / (cm²/s))
    chi_square: float
    degrees_of_freedom: int

    @property
    def p_value(self) -> float | None:
        """Probability of a χ² this large if ln D were linear in 1/T (None with 2 temperatures)."""
        if self.degrees_of_freedom < 1:
            return None
        return float(stats.chi2.sf(self.chi_square, self.degrees_of_freedom))

    @property
    def curved(self) -> bool:
        return self.p_value is not None and self.p_value < CURVATURE_P_VALUE

    def diffusivity_samples(self, temperature_K: float) -> np.ndarray:
        return np.exp(self.ln_prefactor_samples - self.activation_energy_samples_eV / (BOLTZMANN_EV_K * temperature_K))

    def prefactor_samples(self) -> np.ndarray:
        return np.exp(self.ln_prefactor_samples)


def interval(samples: np.ndarray, confidence: float) -> tuple[float, float, float]:
    """(lower, median, upper) of the central `confidence` interval of samples."""
    tail = (1 - confidence) / 2 * 100
    low, median, high = np.percentile(samples, [tail, 50, 100 - tail])
    return float(low), float(median), float(high)


def fit_arrhenius(temperatures_K: list[float], diffusivity_samples: list[np.ndarray],
                  seed: int = 0) -> ArrheniusPosterior | None:
    """The line through ln D vs 1/T weighted by each temperature's posterior spread; None with
    fewer than two temperatures."""
    if len(temperatures_K) < 2 or len(set(temperatures_K)) < 2:
        return None
    logs = [np.log(np.asarray(s)[np.asarray(s) > 0]) for s in diffusivity_samples]
    mean = np.array([np.mean(x) for x in logs])
    sd = np.array([max(np.std(x, ddof=1), 1e-6) for x in logs])
    inverse_t = 1.0 / np.asarray(temperatures_K, dtype=float)
    design = np.vstack([np.ones_like(inverse_t), -inverse_t / BOLTZMANN_EV_K]).T  # [ln D0, Ea]
    weights = 1.0 / sd**2
    normal = design.T @ (design * weights[:, None])
    covariance = np.linalg.inv(normal)
    best = covariance @ design.T @ (weights * mean)
    residual = mean - design @ best
    chi_square = float(np.sum(weights * residual**2))
    draws = np.random.default_rng(seed).multivariate_normal(best, covariance, size=N_SAMPLES)
    return ArrheniusPosterior([float(t) for t in temperatures_K], mean, sd, draws[:, 1], draws[:, 0],
                              chi_square, len(temperatures_K) - 2)


def ratio_samples(numerator: np.ndarray, denominator: np.ndarray, seed: int = 0) -> np.ndarray:
    """Samples of a/b for independent posteriors a and b (each resampled to a common length)."""
    rng = np.random.default_rng(seed)
    n = max(len(numerator), len(denominator))
    return rng.choice(numerator, n) / rng.choice(denominator, n)


def nernst_einstein_S_cm(diffusivity_cm2_s: np.ndarray | float, n_ions: int, volume_A3: float, charge_e: float,
                         temperature_K: float, haven_ratio: float = 1.0) -> np.ndarray | float:
    """σ = n q² D / (H_R k T) in S/cm (D in cm²/s)."""
    number_density_cm3 = n_ions / (volume_A3 * 1e-24)
    q = charge_e * 1.602176634e-19
    return number_density_cm3 * q**2 * np.asarray(diffusivity_cm2_s) / (haven_ratio * 1.380649e-23 * temperature_K)


