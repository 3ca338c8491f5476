"""One estimator of tracer diffusivity for the whole product (the diffusion study and the MD
section of `driver compare`): equilibration cut, diffusive window, Bayesian D with an interval,
and the gates that refuse to call a number a diffusivity when it is not one.

The steps, each recorded in the estimate:
1. equilibration: the start of the energy (and volume) series that pymbar finds equilibrated,
   or a given time; at most half the run is discarded;
2. the diffusive regime: the first lag t0 at which the MSD's log-log slope over [t, 4t] is 1 within
   SLOPE_TOLERANCE (ballistic motion gives 2, caging and vibration ~0, diffusion 1) and the MSD
   has reached (half the site spacing)², past a crystal's vibrational crossover; the fit window
   is [t0, min(10 t0, half the run)]: a window fixed in physical time, so that a longer run narrows
   the interval (a window growing with the run would keep the relative error constant);
3. D's posterior from kinisi over that window (driver.analysis.kinisi_adapter);
4. gates (driver.analysis.sites): hops per mobile ion among the starting sites, and the fraction
   of host atoms still near a host site. Too few hops, or an MSD that never becomes linear, reads
   "not diffusive" with an upper bound on D instead of a value; a host that lost its sites reads
   "host disordered" (melted or amorphised), and a study leaves it out of the Arrhenius fit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import StrEnum

import numpy as np

from driver.analysis.diffusion import msd_time_averaged, unwrap
from driver.analysis.equilibration import MAX_FRACTION, equilibrated_from
from driver.analysis.kinisi_adapter import diffusivity_posterior
from driver.analysis.sites import HOST_ORDERED_FRACTION, count_hops, host_site_fraction

SLOPE_TOLERANCE = 0.1  # a log-log MSD slope within 1 ± this is "linear" (ballistic is 2, caged ~0)
WINDOW_FACTOR = 10  # the fit window ends at this multiple of its start
MIN_FRAMES = 40  # production frames below which nothing is estimated
MIN_HOPS = 5  # total hops below which no run is diffusive, however few its mobile ions
HAVEN_MAX_HALF_WIDTH = 0.5  # D_σ's relative half-width above which the Haven ratio is not estimated


class Verdict(StrEnum):
    DIFFUSIVE = "diffusive"
    NOT_DIFFUSIVE = "not diffusive"
    HOST_DISORDERED = "host disordered"


@dataclass
class HavenRatio:
    """H = D*/D_σ from the collective MSD of the mobile ions over the same window as D*; its
    samples (one per pair of posterior samples) only where D_σ is known to HAVEN_MAX_HALF_WIDTH."""

    collective_cm2_s: float  # D_σ, posterior median
    collective_relative_half_width: float
    samples: np.ndarray | None = field(repr=False, default=None)  # None: not estimated (`reason`)
    reason: str = ""

    def quantiles(self, confidence: float) -> tuple[float, float, float] | None:
        from driver.analysis.arrhenius import interval

        return interval(self.samples, confidence) if self.samples is not None else None


@dataclass
class DiffusionEstimate:
    verdict: Verdict
    reason: str  # why, in words (empty for a diffusive run)
    confidence: float
    diffusivity_cm2_s: float | None  # posterior median; None unless diffusive or host disordered
    interval_cm2_s: tuple[float, float] | None  # central `confidence` interval
    upper_bound_cm2_s: float | None  # not diffusive: D below this at `confidence`
    hops: int
    hops_per_ion: float
    site_spacing_A: float
    host_site_fraction: float
    equilibration_fs: float  # discarded from the start
    window_fs: tuple[float, float] | None  # the lags fitted
    lags_fs: np.ndarray = field(repr=False, default_factory=lambda: np.zeros(0))  # production MSD, for plots
    msd_A2: np.ndarray = field(repr=False, default_factory=lambda: np.zeros(0))
    samples_cm2_s: np.ndarray | None = field(repr=False, default=None)
    haven: HavenRatio | None = None  # diffusive runs only

    @property
    def relative_half_width(self) -> float | None:
        """Half the interval's width over the median: what a study's target bounds."""
        if self.interval_cm2_s is None or not self.diffusivity_cm2_s:
            return None
        return (self.interval_cm2_s[1] - self.interval_cm2_s[0]) / 2 / self.diffusivity_cm2_s

    @property
    def usable(self) -> bool:
        return self.verdict is Verdict.DIFFUSIVE


def diffusivity_cell(median: float | None, interval: tuple[float, float] | None, verdict: str,
                     upper_bound: float | None) -> str:
    """D with its interval, or what stands in for it (a verdict, with its bound): how every table
    and report line of the product writes one diffusivity."""
    if median is not None and interval is not None:
        return f"{median:.3g} [{interval[0]:.3g}, {interval[1]:.3g}]"
    return f"{verdict} (< {upper_bound:.2g})" if upper_bound is not None else str(verdict)


def diffusive_start(lags: np.ndarray, msd: np.ndarray, min_msd_A2: float = 0.0) -> int | None:
    """The first lag index i (lags[i] ≥ 1 frame) whose log-log MSD slope over [t, 4t] is 1 within
    SLOPE_TOLERANCE and whose MSD is at least `min_msd_A2`, or None where the MSD never becomes
    linear within the lags given. The floor keeps out the crossover from ballistic motion (slope
    2) to the vibrational plateau (slope ~0) of a crystal, which passes through slope 1 at lags
    of tens of fs: diffusion among sites starts once atoms have moved a good part of a spacing."""
    last = len(lags) - 1
    candidates = np.unique(np.geomspace(1, max(1, last // 4), 40).astype(int))
    for i in candidates:
        j = min(4 * i, last)
        if j <= i or msd[i] <= 0 or msd[j] <= 0 or msd[i] < min_msd_A2:
            continue
        if abs(math.log(msd[j] / msd[i]) / math.log(lags[j] / lags[i]) - 1) <= SLOPE_TOLERANCE:
            return int(i)
    return None


def _equilibration_index(times_fs: np.ndarray, series: list[np.ndarray], equilibration_fs: float | None) -> int:
    """Frames to discard: a given time, or pymbar's cut of each series (the latest); ≤ half."""
    if equilibration_fs is not None:
        index = int(np.searchsorted(times_fs - times_fs[0], equilibration_fs))
    else:
        index = max([equilibrated_from(s) for s in series if s is not None and len(s) == len(times_fs)] + [0])
    return min(index, int(len(times_fs) * MAX_FRACTION))  # a given time obeys the same cap as detection


def estimate_diffusion(times_fs: np.ndarray, positions_A: np.ndarray, cells_A: np.ndarray, mobile: np.ndarray,
                       *, energy: np.ndarray | None = None, volume: np.ndarray | None = None,
                       equilibration_fs: float | None = None, confidence: float = 0.95,
                       min_hops_per_ion: float = 1.0, seed: int = 0) -> DiffusionEstimate:
    """The tracer diffusivity of the atoms in `mobile` (boolean mask) from a stored trajectory:
    `times_fs` (F,), `positions_A` (F, N, 3) wrapped or not, `cells_A` (F, 3, 3); `energy` and
    `volume` (F,) for equilibration detection; `equilibration_fs` instead of detection."""
    times = np.asarray(times_fs, dtype=float)
    unwrapped = unwrap(np.asarray(positions_A, dtype=float), np.asarray(cells_A, dtype=float))
    host = ~mobile if (~mobile).any() else np.ones_like(mobile)
    frame_fs = float(np.median(np.diff(times))) if len(times) > 1 else None
    hops = count_hops(unwrapped[:, mobile], cells_A, frame_fs)
    host_fraction = host_site_fraction(unwrapped[:, host], cells_A)
    cut = _equilibration_index(times, [energy, volume], equilibration_fs)
    production, cells, t = unwrapped[cut:], np.asarray(cells_A)[cut:], times[cut:]
    base = dict(confidence=confidence, hops=hops.total, hops_per_ion=hops.per_ion, site_spacing_A=hops.spacing_A,
                host_site_fraction=host_fraction, equilibration_fs=float(times[cut] - times[0]))
    if len(t) < MIN_FRAMES:
        return DiffusionEstimate(Verdict.NOT_DIFFUSIVE, f"only {len(t)} frames after equilibration (< {MIN_FRAMES})",
                                 diffusivity_cm2_s=None, interval_cm2_s=None, upper_bound_cm2_s=None,
                                 window_fs=None, **base)
    frame_fs = float(np.median(np.diff(t)))
    # MSD of the mobile atoms in the host's frame (a drifting host is not diffusion)
    host_drift = production[:, host].mean(axis=1) - production[0, host].mean(axis=0)
    half = len(t) // 2
    msd = msd_time_averaged((production[:, mobile] - host_drift[:, None, :])[: 2 * half])[: half + 1]
    lags_fs = np.arange(half + 1) * frame_fs
    base.update(lags_fs=lags_fs, msd_A2=msd)
    # diffusion among sites: from where atoms have moved half a site spacing (MSD ≥ (a/2)²)
    start = diffusive_start(lags_fs, msd, (hops.spacing_A / 2) ** 2 if np.isfinite(hops.spacing_A) else 0.0)
    reasons = []
    if hops.total < max(MIN_HOPS, min_hops_per_ion * int(mobile.sum())):
        reasons.append(f"{hops.total} site-to-site hops among {int(mobile.sum())} mobile ions "
                       f"(needs ≥ {max(MIN_HOPS, math.ceil(min_hops_per_ion * int(mobile.sum())))})")
    if start is None:
        reasons.append(f"the MSD never grows linearly in time (log-log slope never 1 ± {SLOPE_TOLERANCE:g})")
    host_is_mobile = bool(np.any(host & mobile))  # every species mobile: the lattice itself is the host
    if reasons and not (host_is_mobile and host_fraction < HOST_ORDERED_FRACTION):
        # atoms that do not diffuse are not diffusive, whatever their surroundings do (a still
        # species in a molten sublattice); a melt of the mobile atoms themselves is a melt
        verdict, reason = Verdict.NOT_DIFFUSIVE, "; ".join(reasons)
    elif host_fraction < HOST_ORDERED_FRACTION:
        verdict = Verdict.HOST_DISORDERED
        reason = (f"only {host_fraction:.0%} of host atoms remain near a starting site (a crystal keeps "
                  f"≥ {HOST_ORDERED_FRACTION:.0%}): melted or amorphised")
    else:
        verdict, reason = Verdict.DIFFUSIVE, ""
    if verdict is Verdict.NOT_DIFFUSIVE or start is None:
        # an upper bound from the slope over the second half of the lags: D is below it at `confidence`
        posterior = diffusivity_posterior(production, cells, frame_fs, mobile, max(1, half // 2), half, seed)
        bound = float(np.percentile(posterior.samples_cm2_s, 100 * confidence))
        return DiffusionEstimate(verdict, reason, diffusivity_cm2_s=None, interval_cm2_s=None,
                                 upper_bound_cm2_s=bound, window_fs=None, **base)
    stop = min(half, max(WINDOW_FACTOR * start, start + 10))
    posterior = diffusivity_posterior(production, cells, frame_fs, mobile, start, stop, seed)
    low, median, high = posterior.quantiles(confidence)
    haven = None
    if verdict is Verdict.DIFFUSIVE:
        collective = diffusivity_posterior(production, cells, frame_fs, mobile, start, stop, seed, collective=True)
        haven = haven_ratio(posterior.samples_cm2_s, collective.samples_cm2_s, confidence)
    return DiffusionEstimate(verdict, reason, diffusivity_cm2_s=median, interval_cm2_s=(low, high),
                             upper_bound_cm2_s=None, window_fs=(start * frame_fs, stop * frame_fs),
                             samples_cm2_s=posterior.samples_cm2_s, haven=haven, **base)


def haven_ratio(tracer_samples: np.ndarray, collective_samples: np.ndarray, confidence: float) -> HavenRatio:
    """H = D*/D_σ sample by sample (the two posteriors are independent), where D_σ is resolved:
    the collective MSD of N ions is one walk, not N, so it needs a long run to pin down."""
    from driver.analysis.arrhenius import interval

    low, median, high = interval(collective_samples, confidence)
    width = (high - low) / 2 / median if median > 0 else math.inf
    if width > HAVEN_MAX_HALF_WIDTH or low <= 0:
        return HavenRatio(median, width, None, f"D_σ from the collective MSD known to ±{width:.0%} only "
                                               f"(needs ±{HAVEN_MAX_HALF_WIDTH:.0%})")
    n = min(len(tracer_samples), len(collective_samples))
    return HavenRatio(median, width, np.asarray(tracer_samples[:n]) / np.asarray(collective_samples[:n]))
