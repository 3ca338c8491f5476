"""The one module that talks to kinisi: the posterior of a tracer diffusivity D* from a trajectory.

Why kinisi (McCluskey et al., JCTC 2024): MSD points at neighbouring lags share most of their
displacements, so a least-squares slope (or its standard error) claims far more precision than the
data hold. kinisi models the MSD's covariance between lags and samples the posterior of the slope,
so an interval from it means what it says; the known-answer test (Brownian walkers under Langevin
dynamics) checks that 95% of such intervals contain the true D.

The driver's arrays go in (Å, fs, fractional coordinates are made here); samples of D in cm²/s
come out. kinisi is given at most `max_lags` lags inside the fit window: its likelihood inverts a
lags × lags covariance matrix at every MCMC step, and 60 well-spaced lags carry the information.

One step is done here rather than by kinisi's `calculate_msd`: that function counts the
independent samples at lag k as (particles x longest lag given / k), which is the run length only
when the lags reach the end of the run. A study's fit window stops well before the end (so that a
longer run narrows the interval), so the MSD, its variance and the sample count N x frames / k
are computed here in the same form, and kinisi's Bayesian regression runs on them unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

DEFAULT_MAX_LAGS = 60


@dataclass
class DiffusivityPosterior:
    samples_cm2_s: np.ndarray  # posterior samples of D*
    lags_fs: np.ndarray  # the lags fitted
    msd_A2: np.ndarray  # kinisi's MSD at those lags

    def quantiles(self, confidence: float) -> tuple[float, float, float]:
        """(lower, median, upper) of the central `confidence` interval."""
        from driver.analysis.arrhenius import interval

        return interval(self.samples_cm2_s, confidence)


def diffusivity_posterior(positions_A: np.ndarray, cells_A: np.ndarray, frame_interval_fs: float,
                          mobile: np.ndarray, start_frames: int, stop_frames: int, seed: int,
                          max_lags: int = DEFAULT_MAX_LAGS, collective: bool = False) -> DiffusivityPosterior:
    """D* of the atoms in `mobile` (a boolean mask) from frames (F, N, 3) and cells (F, 3, 3),
    fitted over lags start_frames..stop_frames (in frame intervals); the other atoms (if any)
    define the frame whose drift is removed. Seeded: the same data give the same samples.
    `collective`: D_σ instead, from the MSD of the mobile atoms' summed displacement over their
    number (kinisi's mean-squared total displacement): D*/D_σ is the Haven ratio."""
    import scipp as sc
    from kinisi.diffusion_analyzer import DiffusionAnalyzer
    from kinisi.parser import Parser

    n_frames = positions_A.shape[0]
    stop_frames = min(stop_frames, n_frames - 1)
    start_frames = max(1, min(start_frames, stop_frames - 1))
    fractional = np.einsum("fai,fij->faj", positions_A, np.linalg.inv(cells_A))
    # kinisi's parsers repeat the first frame (its displacements are cumulative from there)
    fractional = np.concatenate([fractional[:1], fractional])
    cells = np.concatenate([cells_A[:1], cells_A])
    lags = np.unique(np.linspace(start_frames, stop_frames, min(max_lags, stop_frames - start_frames + 1))
                     .round().astype(int))
    parser = Parser(
        coords=sc.array(dims=["time", "particle", "dimension"], values=fractional, unit=sc.units.dimensionless),
        latt=sc.array(dims=["time", "dimension1", "dimension2"], values=cells, unit="angstrom"),
        time_step=sc.scalar(float(frame_interval_fs), unit="fs"),
        step_skip=sc.scalar(1),
        dt=sc.array(dims=["time interval"], values=lags * float(frame_interval_fs), unit="fs"),
        specie_indices=sc.array(dims=["particle"], values=np.flatnonzero(mobile)),
        drift_indices=sc.array(dims=["particle"], values=np.flatnonzero(~mobile)),
    )
    analyzer = DiffusionAnalyzer(parser)
    analyzer._dg = _msd_statistics(parser, lags, collective)
    analyzer.diffusion(sc.scalar(float(lags[0] * frame_interval_fs), unit="fs"), progress=False,
                       random_state=np.random.RandomState(seed))
    msd = analyzer.msd
    return DiffusivityPosterior(np.asarray(analyzer.D.values, dtype=float),
                                np.asarray(analyzer.dt.values, dtype=float), np.asarray(msd.values, dtype=float))


def _msd_statistics(parser, lags: np.ndarray, collective: bool = False):
    """kinisi's MSD data group (as `kinisi.displacement.calculate_msd` builds it) with the number
    of independent samples at lag k counted from the whole run: particles x frames / k. With
    `collective`, the squared summed displacement over the particle count (kinisi's
    `calculate_mstd` with one system particle): one sample per k frames."""
    import scipp as sc

    displacements = parser.displacements  # (obs, particle, dimension), cumulative from the start
    values = displacements.values
    n_obs, n_particles = values.shape[0], values.shape[1]
    msd, variance, samples = [], [], []
    for lag in lags:
        steps = np.concatenate([values[lag - 1:lag], values[lag:] - values[:-lag]])
        if collective:
            squared = np.sum(steps.sum(axis=1) ** 2, axis=-1) / n_particles
            count = n_obs / lag
        else:
            squared = np.sum(steps**2, axis=-1).ravel()
            count = n_particles * n_obs / lag
        msd.append(squared.mean())
        variance.append(squared.var(ddof=1) / count)
        samples.append(count)
    data = sc.DataArray(
        data=sc.Variable(dims=["time interval"], values=np.array(msd), variances=np.array(variance),
                         unit=displacements.unit**2),
        coords={"time interval": parser.dt["time interval", :len(msd)],
                "n_samples": sc.array(dims=["time interval"], values=np.array(samples))})
    return sc.DataGroup({"da": data, "dimensionality": parser.dimensionality})
