"""The one module that talks to pymbar: where a series (energy, volume) stops drifting.

pymbar's criterion (Chodera, JCTC 2016): the start that maximises the number of effectively
independent samples left, (T - t) / g(t), with g pymbar's statistical inefficiency of the rest.
What is discarded is what biases the mean, no more.

The search runs over the first half only. pymbar's own `detect_equilibration` tries every start,
and near the end of a short series g is estimated from a few dozen samples, comes out near 1
and wins: on 5 ps diffusion runs (250 frames) it chose starts at 60-90% of the run (measured on
CHGNet Li3N), so half of every run was thrown away. A transient longer than half a run is not
one a run can be cut out of anyway.
"""

from __future__ import annotations

import logging

import numpy as np

MAX_CANDIDATES = 100  # starts tried: pymbar's cost grows with (candidates x series length)
MAX_FRACTION = 0.5  # never discard more than this share of a series


def equilibrated_from(series: np.ndarray, max_fraction: float = MAX_FRACTION) -> int:
    """The index of the first equilibrated sample of `series` (0 for a constant or short one),
    at most `max_fraction` of its length."""
    values = np.asarray(series, dtype=float)
    if len(values) < 10 or not np.all(np.isfinite(values)) or np.ptp(values) == 0:
        return 0
    # pymbar logs advice at import (JAX) and per call; a study's log is not the place for it
    logging.getLogger("pymbar").setLevel(logging.ERROR)
    from pymbar import timeseries
    from pymbar.utils import ParameterError

    last = int(len(values) * max_fraction)
    best_start, best_samples = 0, -1.0
    for start in range(0, last + 1, max(1, last // MAX_CANDIDATES)):
        try:
            inefficiency = timeseries.statistical_inefficiency(values[start:], fast=True)
        except ParameterError:  # a constant tail: as pymbar does, no independent samples in it
            inefficiency = len(values) - start + 1
        samples = (len(values) - start) / inefficiency
        if samples > best_samples:
            best_start, best_samples = start, samples
    return best_start
