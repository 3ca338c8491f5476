"""Equilibration detection: a transient is cut, a stationary series is kept.

The stationary case is the one that mattered in practice: pymbar's own `detect_equilibration`
searches every start, and on a short series with slow fluctuations (a diffusing crystal's
energy over 5 ps) it chose starts past half the run, so half of every job was discarded."""

from __future__ import annotations

import logging

import numpy as np

from driver.analysis.equilibration import equilibrated_from


def _correlated(n: int, tau: float, rng: np.random.Generator) -> np.ndarray:
    """An AR(1) series of unit variance and correlation time `tau` samples: stationary from 0."""
    decay = np.exp(-1 / tau)
    series = np.empty(n)
    series[0] = rng.normal()
    for i in range(1, n):
        series[i] = decay * series[i - 1] + np.sqrt(1 - decay**2) * rng.normal()
    return series


def test_a_stationary_series_keeps_most_of_its_samples():
    """250 samples with a correlation time of 30: nothing to discard. Across 40 series the median
    cut stays under 10% of the run, where an unrestricted pymbar search cuts more than half."""
    logging.getLogger("pymbar").setLevel(logging.ERROR)
    from pymbar import timeseries

    series = [_correlated(250, 30.0, np.random.default_rng(seed)) for seed in range(40)]
    cuts = np.array([equilibrated_from(s) for s in series])
    unrestricted = np.array([timeseries.detect_equilibration(s, fast=True)[0] for s in series])
    assert cuts.max() <= 125
    assert np.median(cuts) < 25, np.median(cuts)
    assert np.median(unrestricted) > 125  # the behaviour this module exists to avoid


def test_a_transient_is_cut():
    """An exponential relaxation (5 standard deviations, decay 10 samples) ahead of stationary
    noise: the cut lands past the first decay time and well before the end of the transient's tail."""
    for seed in range(5):
        rng = np.random.default_rng(seed)
        series = _correlated(250, 5.0, rng) + 5.0 * np.exp(-np.arange(250) / 10.0)
        assert 5 <= equilibrated_from(series) <= 60


def test_short_or_constant_series_are_not_cut():
    assert equilibrated_from(np.ones(100)) == 0
    assert equilibrated_from(np.arange(5.0)) == 0
    assert equilibrated_from(np.array([0.0, np.nan] * 20)) == 0


def test_the_cut_never_exceeds_the_given_fraction():
    rising = np.linspace(0.0, 1.0, 200) + np.random.default_rng(1).normal(0, 0.01, 200)  # never stationary
    assert equilibrated_from(rising, max_fraction=0.25) <= 50
