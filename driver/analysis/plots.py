"""PNG figures of a comparison, raw solid and corrected dashed, one colour per temperature (MD);
`pyplot`, `save_figure` and `STYLE` serve every task's comparison figures."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from driver.analysis.diffusion import ArrheniusFit
from driver.analysis.md import MDAnalysis

STYLE = {"raw": "-", "corrected": "--"}


def pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _colour(runs: list[MDAnalysis], run: MDAnalysis):
    import matplotlib

    temperatures = sorted({r.temperature_K or 0 for r in runs})
    palette = matplotlib.colormaps["viridis"]
    position = temperatures.index(run.temperature_K or 0) / max(1, len(temperatures) - 1)
    return palette(0.85 * position)


def save_figure(figure, path: Path) -> Path:
    figure.tight_layout()
    figure.savefig(path)
    pyplot().close(figure)
    return path


def plot_msd(path: Path, runs: list[MDAnalysis]) -> Path:
    plt = pyplot()
    symbols = sorted({s for run in runs for s in run.species})
    figure, axes = plt.subplots(1, len(symbols), figsize=(4.5 * len(symbols), 3.8), dpi=110, squeeze=False)
    for axis, symbol in zip(axes[0], symbols, strict=True):
        for run in runs:
            if symbol in run.species:
                axis.plot(run.times_fs / 1000, run.species[symbol].msd_A2, STYLE.get(run.variant, ":"),
                          color=_colour(runs, run), label=run.job)
        axis.set(title=f"{symbol}: MSD (time-origin averaged)", xlabel="lag time (ps)", ylabel="MSD (Å²)")
        axis.legend(fontsize=7)
    return save_figure(figure, path)


def plot_rdf(path: Path, runs: list[MDAnalysis]) -> Path:
    plt = pyplot()
    figure, axis = plt.subplots(figsize=(5.5, 3.8), dpi=110)
    for run in runs:
        if run.rdf is not None:
            axis.plot(run.rdf[0], run.rdf[1], STYLE.get(run.variant, ":"), color=_colour(runs, run), label=run.job)
    axis.set(title="total g(r), second half of each run", xlabel="r (Å)", ylabel="g(r)")
    axis.legend(fontsize=7)
    return save_figure(figure, path)


def plot_traces(path: Path, runs: list[MDAnalysis]) -> Path:
    plt = pyplot()
    figure, (temperature, energy) = plt.subplots(2, 1, figsize=(6, 5.5), dpi=110, sharex=True)
    for run in runs:
        colour, style = _colour(runs, run), STYLE.get(run.variant, ":")
        if "temperature" in run.traces:
            t, value = run.traces["temperature"]
            temperature.plot(t / 1000, value, style, color=colour, label=run.job)
        if "potential_energy" in run.traces:
            t, value = run.traces["potential_energy"]
            energy.plot(t / 1000, (value - value[0]) / max(1, sum(s.count for s in run.species.values())),
                        style, color=colour, label=run.job)
    temperature.set(ylabel="T (K)")
    temperature.legend(fontsize=7)
    energy.set(xlabel="time (ps)", ylabel="E_pot − E_pot(0) (eV/atom)")
    return save_figure(figure, path)


def plot_arrhenius(path: Path, runs: list[MDAnalysis], fits: dict[tuple[str, str], ArrheniusFit]) -> Path:
    plt = pyplot()
    figure, axis = plt.subplots(figsize=(5.5, 4), dpi=110)
    markers = {"raw": "o", "corrected": "s"}
    for (variant, symbol) in sorted({(r.variant, s) for r in runs for s in r.species}):
        points = [(r.temperature_K, r.species[symbol].fit) for r in runs
                  if r.variant == variant and symbol in r.species and r.temperature_K
                  and r.species[symbol].fit.diffusivity_cm2_s > 0]
        if not points:
            continue
        x = np.array([1000 / t for t, _ in points])
        d = np.array([f.diffusivity_cm2_s for _, f in points])
        err = np.array([f.error_cm2_s if np.isfinite(f.error_cm2_s) else 0 for _, f in points])
        line = axis.errorbar(x, d, yerr=np.minimum(err, 0.99 * d), fmt=markers.get(variant, "^"), label=f"{variant} {symbol}")
        fit = fits.get((variant, symbol))
        if fit is not None:
            grid = np.linspace(x.min(), x.max(), 50)
            axis.plot(grid, [fit.diffusivity_at(1000 / g) for g in grid], STYLE.get(variant, ":"),
                      color=line[0].get_color())
    axis.set(yscale="log", xlabel="1000 / T (1/K)", ylabel="D (cm²/s)", title="Arrhenius")
    axis.legend(fontsize=7)
    return save_figure(figure, path)
