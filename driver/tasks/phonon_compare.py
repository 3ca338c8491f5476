"""Phonons' section of `driver compare`: each job's mean frequency (the mesh mean of
driver.tasks.phonons.mean_frequency_THz, the one the run report uses) beside raw/sqrt(s), the
per-mode ratio along the band path, and the bands and DOS overlaid."""

from __future__ import annotations

import math

import numpy as np

from driver.tasks import (
    CompareOptions,
    CompareSection,
    FinishedJob,
    markdown_table,
    softening_scale_of,
    table_number,
)
from driver.tasks.phonon_plots import plot_data, plot_phonons


def compare_section(jobs: list[FinishedJob], results: dict, options: CompareOptions) -> CompareSection:
    """`results`: job name -> its PhononResult as stored (driver.tasks.phonons reads them)."""
    rows = [[name, table_number(r.mean_frequency_THz, ".4f"), table_number(float(np.max(r.band_frequencies_THz)), ".3f"),
             ", ".join(f"{f:.2f}" for f in sorted(r.gamma_frequencies_THz))] for name, r in results.items()]
    section = CompareSection(tables=["Phonons\n" + markdown_table(
        ["job", "mean frequency (THz)", "max frequency (THz)", "Γ frequencies (THz)"], rows)])
    s = softening_scale_of(jobs)
    raw, corrected = results.get("raw"), results.get("corrected")
    if raw is not None and corrected is not None and s:
        band_raw, band_corrected = raw.band_frequencies_THz, corrected.band_frequencies_THz
        mask = band_raw > 0.5  # acoustic modes near Γ: ratios of near-zeros are noise
        same_path = band_raw.shape == band_corrected.shape and mask.any()
        per_mode = np.median(band_corrected[mask] / band_raw[mask]) if same_path else float("nan")
        section.relations.append(
            f"phonons: corrected mean frequency {corrected.mean_frequency_THz:.4f} THz vs predicted raw/sqrt(s) = "
            f"{raw.mean_frequency_THz / math.sqrt(s):.4f} THz (mean shift "
            f"{corrected.mean_frequency_THz - raw.mean_frequency_THz:+.4f} THz; median per-mode ratio "
            f"{per_mode:.4f} vs 1/sqrt(s) = {1 / math.sqrt(s):.4f})")
    if options.plots:
        path = options.out_dir / "compare_phonons.png"
        plot_phonons(path, [(name, plot_data(result)) for name, result in results.items()])
        section.plots.append(path)
    return section
