"""PNG figures of a comparison, raw solid and corrected dashed, one colour per temperature (MD);
`pyplot`, `save_figure` and `STYLE` serve every task's comparison figures."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from driver.analysis.arrhenius import ArrheniusPosterior, interval
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


@dataclass
class MSDCurve:
    """One MSD for plot_msd: the panel it goes in (a species), its label, variant and temperature
    (style and colour), lags and MSD, and the fit window (None: no D was fitted)."""

    panel: str
    label: str
    variant: str
    temperature_K: float
    lags_ps: np.ndarray
    msd_A2: np.ndarray
    window_ps: tuple[float, float] | None


def _palette(temperatures: list[float]):
    import matplotlib

    ordered = sorted(set(temperatures))
    palette = matplotlib.colormaps["viridis"]
    return {t: palette(0.85 * i / max(1, len(ordered) - 1)) for i, t in enumerate(ordered)}


def plot_msd(path: Path, curves: list[MSDCurve]) -> Path:
    """MSD against lag, one panel per species, the fit window drawn thick over the thin curve."""
    plt = pyplot()
    panels = sorted({c.panel for c in curves})
    colours = _palette([c.temperature_K for c in curves])
    figure, axes = plt.subplots(1, len(panels), figsize=(4.5 * len(panels), 3.8), dpi=110, squeeze=False)
    for axis, panel in zip(axes[0], panels, strict=True):
        for curve in (c for c in curves if c.panel == panel):
            colour, style = colours[curve.temperature_K], STYLE.get(curve.variant, ":")
            axis.plot(curve.lags_ps, curve.msd_A2, style, color=colour, linewidth=0.8, label=curve.label)
            if curve.window_ps is not None:
                inside = (curve.lags_ps >= curve.window_ps[0]) & (curve.lags_ps <= curve.window_ps[1])
                axis.plot(curve.lags_ps[inside], curve.msd_A2[inside], style, color=colour, linewidth=2.5)
        axis.set(title=f"{panel}: MSD (thick: fit window)", xlabel="lag time (ps)", ylabel="MSD (Å²)")
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


@dataclass
class ArrheniusPoint:
    series: str  # e.g. "raw Li"
    temperature_K: float
    low: float
    median: float
    high: float


def plot_arrhenius(path: Path, points: list[ArrheniusPoint], fits: dict[str, ArrheniusPosterior],
                   confidence: float, extend_to_K: float | None = None,
                   upper_bounds: list[tuple[str, float, float]] = ()) -> Path:
    """D against 1000/T with each point's interval, each series' fit with its band (out to
    `extend_to_K`, e.g. room temperature, where given), and the upper bounds of temperatures that
    were not diffusive ((series, T, bound) as open downward triangles: D is below them, not at them)."""
    plt = pyplot()
    figure, axis = plt.subplots(figsize=(5.8, 4.2), dpi=110)
    markers = {"raw": "o", "corrected": "s"}
    every = sorted({p.series for p in points} | {s for s, _, _ in upper_bounds})
    colours = {series: f"C{i}" for i, series in enumerate(every)}  # a series' points and bounds alike
    for series in sorted({s for s, _, _ in upper_bounds}):
        mine = [(t, bound) for s, t, bound in upper_bounds if s == series]
        axis.plot([1000 / t for t, _ in mine], [bound for _, bound in mine], "v", color=colours[series],
                  markerfacecolor="none", markersize=8, label=f"{series}: not diffusive, D below")
    for series in sorted({p.series for p in points}):
        mine = sorted((p for p in points if p.series == series), key=lambda p: p.temperature_K)
        x = np.array([1000 / p.temperature_K for p in mine])
        median = np.array([p.median for p in mine])
        errors = [median - np.array([p.low for p in mine]), np.array([p.high for p in mine]) - median]
        line = axis.errorbar(x, median, yerr=errors, fmt=markers.get(series.split()[0], "^"), capsize=3, label=series,
                             color=colours[series])
        fit = fits.get(series)
        if fit is not None:
            top = 1000 / extend_to_K if extend_to_K else x.max()
            grid = np.linspace(x.min(), max(x.max(), top), 60)
            bands = np.array([interval(fit.diffusivity_samples(1000 / g), confidence) for g in grid])
            colour = line[0].get_color()
            axis.plot(grid, bands[:, 1], STYLE.get(series.split()[0], ":"), color=colour)
            axis.fill_between(grid, bands[:, 0], bands[:, 2], color=colour, alpha=0.2)
    axis.set(yscale="log", xlabel="1000 / T (1/K)", ylabel="D (cm²/s)",
             title=f"Arrhenius ({confidence:.0%} intervals and bands)")
    axis.legend(fontsize=7)
    return save_figure(figure, path)


def plot_convergence(path: Path, traces: list[tuple[str, str, float, np.ndarray, np.ndarray]], target: float) -> Path:
    """Each job's relative half-width of D's interval against simulated time (gaps: not yet
    diffusive), with the target: how the study's run lengths were decided."""
    plt = pyplot()
    colours = _palette([t for _, _, t, _, _ in traces])
    figure, axis = plt.subplots(figsize=(5.8, 4), dpi=110)
    for label, variant, temperature, times, widths in traces:
        if times is not None and len(times):
            axis.plot(times, widths, STYLE.get(variant, ":") + "o", color=colours[temperature], markersize=3, label=label)
    axis.axhline(target, color="grey", linewidth=1, label=f"target {target:.0%}")
    axis.set(xlabel="simulated time (ps)", ylabel="half-width / D", title="interval of D against run length")
    axis.legend(fontsize=7)
    return save_figure(figure, path)


def plot_hops(path: Path, hops: list[tuple[str, str, float, float]]) -> Path:
    """Site-to-site hops per mobile ion of each job (a run below ~1 is not diffusive)."""
    plt = pyplot()
    colours = _palette([t for _, _, t, _ in hops])
    figure, axis = plt.subplots(figsize=(max(4.0, 0.6 * len(hops) + 2), 3.6), dpi=110)
    labels = [label for label, _, _, _ in hops]
    axis.bar(range(len(hops)), [value for _, _, _, value in hops], color=[colours[t] for _, _, t, _ in hops],
             hatch=None)
    axis.set_xticks(range(len(hops)), labels, rotation=45, ha="right", fontsize=7)
    axis.set(ylabel="hops per mobile ion", title="site-to-site hops")
    return save_figure(figure, path)
