"""MD's section of `driver compare`: each job's tracer diffusivity per species (MSD slope over a
window of lags) and Nernst–Einstein conductivity, Arrhenius fits per variant and species, and the
scalar correction's prediction D'(T) = D_raw(s·T)/sqrt(s), evaluated on the raw Arrhenius fit."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field

import h5py

from driver.analysis import plots as figures
from driver.analysis.diffusion import ArrheniusFit, arrhenius_fit
from driver.analysis.md import MDAnalysis, analyze_md, default_charges
from driver.correction import expected_ratio, raw_temperature_equivalent
from driver.tasks import CompareOptions, CompareSection, FinishedJob, markdown_table, table_number


@dataclass
class MDCompareSection(CompareSection):
    runs: list[MDAnalysis] = field(default_factory=list)
    arrhenius: dict[tuple[str, str], ArrheniusFit] = field(default_factory=dict)  # (variant, species) -> fit


def compare_section(jobs: list[FinishedJob], options: CompareOptions) -> MDCompareSection:
    charges = options.charges
    if charges is None:
        with h5py.File(jobs[0].path, "r") as handle:
            charges = default_charges(json.loads(handle["particles/all/species"].attrs["symbols"]))
    section = MDCompareSection()
    for job in jobs:
        entry = job.entry
        run = analyze_md(job.path, entry["job"], entry.get("variant", "raw"), entry.get("temperature_K"),
                         entry.get("softening_scale"), charges, options.window)
        section.runs.append(run)
        section.notes += run.notes
    _tables(section, options.window)
    section.relations += md_relations(section)
    if options.plots:
        section.plots = _plots(section, options)
    return section


def _tables(section: MDCompareSection, window: tuple[float, float]) -> None:
    runs = section.runs
    rows = []
    for run in runs:
        for sp in run.species.values():
            rows.append([run.job, run.variant, table_number(run.temperature_K, ".0f"), table_number(run.mean_temperature_K, ".0f"),
                         f"{sp.symbol} ({sp.count})", table_number(sp.fit.diffusivity_cm2_s), table_number(sp.fit.error_cm2_s, ".2g"),
                         f"{sp.charge_e:+g}", table_number(sp.conductivity_S_cm)])
    section.tables.append("MD: tracer diffusivity (MSD slope/6 over lags "
                          f"{window[0]:.0%}–{window[1]:.0%} of the run) and Nernst–Einstein conductivity\n"
                          + markdown_table(["job", "variant", "T (K)", "<T> (K)", "species", "D (cm²/s)", "± D",
                                            "charge (e)", "σ (S/cm)"], rows))
    methods = sorted({sp.fit.error_method for run in runs for sp in run.species.values()})
    section.notes.append("D uncertainty: " + "; ".join(methods))
    section.notes.append("σ = n q² D / kT per species (Nernst–Einstein: uncorrelated ions, Haven ratio 1), "
                         "T the job's target temperature, n from the mean cell volume; charges (from --charge, else "
                         "pymatgen's charge-balanced oxidation-state guess, 0 for an elemental solid: no σ) "
                         + ", ".join(f"{s}={sp.charge_e:+g}" for s, sp in runs[0].species.items()))
    for variant in ("raw", "corrected"):
        for symbol in sorted({s for r in runs for s in r.species}):
            points = [(r.temperature_K, r.species[symbol].fit.diffusivity_cm2_s) for r in runs
                      if r.variant == variant and symbol in r.species and r.temperature_K]
            fit = arrhenius_fit([t for t, _ in points], [d for _, d in points])
            if fit is not None:
                section.arrhenius[(variant, symbol)] = fit
    if section.arrhenius:
        rows = [[variant, symbol, ", ".join(f"{t:g}" for t in fit.temperatures_K),
                 table_number(fit.activation_energy_eV, ".4f"), table_number(fit.activation_energy_error_eV, ".2g"),
                 table_number(fit.prefactor_cm2_s), table_number(fit.prefactor_error_cm2_s, ".2g")]
                for (variant, symbol), fit in sorted(section.arrhenius.items())]
        section.tables.append("Arrhenius fits, D = D0 exp(−Ea/kT) (uncertainties need ≥ 3 temperatures)\n"
                              + markdown_table(["variant", "species", "T (K)", "Ea (eV)", "± Ea", "D0 (cm²/s)",
                                                "± D0"], rows))


def _raw_temperatures_with_positive_d(section: MDCompareSection, symbol: str) -> list[float]:
    """The raw temperatures `arrhenius_fit` can use for this species: D finite and > 0."""
    return sorted({r.temperature_K for r in section.runs if r.variant == "raw" and r.temperature_K
                   and symbol in r.species and (d := r.species[symbol].fit.diffusivity_cm2_s) is not None
                   and math.isfinite(d) and d > 0})


def md_relations(section: MDCompareSection) -> list[str]:
    lines = []
    for run in section.runs:
        if run.variant != "corrected" or not run.softening_scale or not run.temperature_K:
            continue
        s, t = run.softening_scale, run.temperature_K
        for symbol, sp in run.species.items():
            fit = section.arrhenius.get(("raw", symbol))
            head = f"MD {symbol} at {t:g} K: corrected D = {table_number(sp.fit.diffusivity_cm2_s)} cm²/s"
            if fit is None:
                usable = _raw_temperatures_with_positive_d(section, symbol)
                lines.append(f"{head}; predicted D_raw(s·T = {s * t:g} K)/sqrt(s) cannot be predicted: raw MD has "
                             f"{len(usable)} temperature(s) with D > 0, an Arrhenius fit needs ≥ 2")
                continue
            predicted = fit.diffusivity_at(raw_temperature_equivalent(t, s)) * expected_ratio("frequency", s)
            outside = "" if min(fit.temperatures_K) <= s * t <= max(fit.temperatures_K) else " (extrapolated)"
            lines.append(f"{head} vs predicted D_raw(s·T = {s * t:g} K)/sqrt(s) = {predicted:.3g} cm²/s{outside} "
                         f"from the raw Arrhenius fit (ratio {sp.fit.diffusivity_cm2_s / predicted:.3g})")
    scale = next((r.softening_scale for r in section.runs if r.softening_scale), None)
    for (variant, symbol), fit in sorted(section.arrhenius.items()):
        raw = section.arrhenius.get(("raw", symbol))
        if variant == "corrected" and raw is not None and scale:
            lines.append(f"MD {symbol} Arrhenius: corrected Ea = {fit.activation_energy_eV:.4f} eV vs predicted "
                         f"raw Ea/s = {raw.activation_energy_eV * expected_ratio('energy', scale):.4f} eV; corrected D0 = "
                         f"{fit.prefactor_cm2_s:.3g} vs raw D0/sqrt(s) = "
                         f"{raw.prefactor_cm2_s * expected_ratio('frequency', scale):.3g} cm²/s")
    return lines


def _plots(section: MDCompareSection, options: CompareOptions) -> list:
    out, runs = options.out_dir, section.runs
    made = [figures.plot_msd(out / "compare_msd.png", runs), figures.plot_traces(out / "compare_traces.png", runs)]
    if any(run.rdf is not None for run in runs):
        made.append(figures.plot_rdf(out / "compare_rdf.png", runs))
    if len({r.temperature_K for r in runs}) >= 2:
        made.append(figures.plot_arrhenius(out / "compare_arrhenius.png", runs, section.arrhenius))
    return made
