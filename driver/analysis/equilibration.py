"""The one module that talks to pymbar: where a series (energy, volume) stops drifting.

pymbar's `detect_equilibration` (Chodera, JCTC 2016) picks the start that maximises the number of
effectively independent samples left: what is discarded is what biases the mean, no more.
"""

from __future__ import annotations

import logging

import numpy as np

MAX_CANDIDATES = 200  # starts tried: pymbar's cost grows with (candidates x series length)


def equilibrated_from(series: np.ndarray) -> int:
    """The index of the first equilibrated sample of `series` (0 for a constant or short one)."""
    values = np.asarray(series, dtype=float)
    if len(values) < 10 or not np.all(np.isfinite(values)) or np.ptp(values) == 0:
        return 0
    # pymbar logs advice at import (JAX) and per call; a study's log is not the place for it
    logging.getLogger("pymbar").setLevel(logging.ERROR)
    from pymbar import timeseries

    start, _, _ = timeseries.detect_equilibration(values, fast=True, nskip=max(1, len(values) // MAX_CANDIDATES))
    return int(start)
