"""MD's section of `driver compare`: each job's tracer diffusivity per species through the
product's one estimator (driver.analysis.diffusivity: equilibration cut, diffusive window, Bayesian
interval, hop and host-order gates), Nernst–Einstein conductivity, Arrhenius fits per variant and
species, and the scalar correction's prediction D'(T) = D_raw(s·T)/sqrt(s) from the raw fit. A job
whose MSD is not diffusion reads "not diffusive" with an upper bound, never a D."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field

from driver.analysis import plots as figures
from driver.analysis.arrhenius import ArrheniusPosterior, fit_arrhenius, interval
from driver.analysis.diffusivity import DiffusionEstimate, Verdict, diffusivity_cell
from driver.analysis.md import MDAnalysis, analyze_md, default_charges
from driver.correction import raw_temperature_equivalent
from driver.h5read import reading
from driver.tasks import CompareOptions, CompareSection, FinishedJob, markdown_table, table_number

CONFIDENCE = 0.95


@dataclass
class MDCompareSection(CompareSection):
    runs: list[MDAnalysis] = field(default_factory=list)
    arrhenius: dict[tuple[str, str], ArrheniusPosterior] = field(default_factory=dict)  # (variant, species) -> fit


def diffusivity_text(estimate: DiffusionEstimate) -> str:
    """D with its interval, or what stands in for it: a table cell."""
    return diffusivity_cell(estimate.diffusivity_cm2_s if estimate.usable else None, estimate.interval_cm2_s,
                            estimate.verdict,
                            estimate.upper_bound_cm2_s if estimate.verdict is Verdict.NOT_DIFFUSIVE else None)


def compare_section(jobs: list[FinishedJob], options: CompareOptions) -> MDCompareSection:
    charges = options.charges
    if charges is None:
        with reading(jobs[0].path) as handle:
            charges = default_charges(json.loads(handle["particles/all/species"].attrs["symbols"]))
    section = MDCompareSection()
    for job in jobs:
        entry = job.entry
        run = analyze_md(job.path, entry["job"], entry.get("variant", "raw"), entry.get("temperature_K"),
                         entry.get("softening_scale"), charges, CONFIDENCE)
        section.runs.append(run)
        section.notes += run.notes
    _tables(section)
    section.relations += md_relations(section)
    if options.plots:
        section.plots = _plots(section, options)
    return section


def _tables(section: MDCompareSection) -> None:
    runs = section.runs
    rows = []
    for run in runs:
        for sp in run.species.values():
            e = sp.estimate
            sigma = (f"{sp.conductivity_S_cm[1]:.3g} [{sp.conductivity_S_cm[0]:.3g}, {sp.conductivity_S_cm[2]:.3g}]"
                     if sp.conductivity_S_cm else "–")
            rows.append([run.job, run.variant, table_number(run.temperature_K, ".0f"),
                         table_number(run.mean_temperature_K, ".0f"), f"{sp.symbol} ({sp.count})",
                         diffusivity_text(e), f"{e.hops} ({e.hops_per_ion:.2g}/ion)", f"{sp.charge_e:+g}", sigma])
            if not e.usable and e.reason:
                section.notes.append(f"{run.job} {sp.symbol}: {e.verdict}: {e.reason}")
    section.tables.append(
        f"MD: tracer diffusivity ({CONFIDENCE:.0%} interval; window and equilibration chosen per job) and "
        "Nernst–Einstein conductivity\n"
        + markdown_table(["job", "variant", "T (K)", "<T> (K)", "species", "D (cm²/s)", "hops", "charge (e)",
                          "σ (S/cm)"], rows))
    section.notes.append("D: kinisi's Bayesian regression of the MSD over the diffusive window (from where its "
                         "log-log slope is 1), after pymbar's equilibration cut; a run without site-to-site hops "
                         "or a linear MSD is not diffusive and gets an upper bound instead")
    section.notes.append("σ = n q² D / kT per species (Nernst–Einstein: uncorrelated ions, Haven ratio 1), "
                         "T the job's target temperature, n from the mean cell volume; charges (from --charge, else "
                         "pymatgen's charge-balanced oxidation-state guess, 0 for an elemental solid: no σ) "
                         + ", ".join(f"{s}={sp.charge_e:+g}" for s, sp in runs[0].species.items()))
    for variant in ("raw", "corrected"):
        for symbol in sorted({s for r in runs for s in r.species}):
            points = [(r.temperature_K, r.species[symbol].estimate) for r in runs
                      if r.variant == variant and symbol in r.species and r.temperature_K
                      and r.species[symbol].estimate.usable]
            fit = fit_arrhenius([t for t, _ in points], [e.samples_cm2_s for _, e in points])
            if fit is not None:
                section.arrhenius[(variant, symbol)] = fit
    if section.arrhenius:
        rows = []
        for (variant, symbol), fit in sorted(section.arrhenius.items()):
            ea, d0 = interval(fit.activation_energy_samples_eV, CONFIDENCE), interval(fit.prefactor_samples(), CONFIDENCE)
            rows.append([variant, symbol, ", ".join(f"{t:g}" for t in fit.temperatures_K),
                         f"{ea[1]:.4f} [{ea[0]:.4f}, {ea[2]:.4f}]", f"{d0[1]:.3g} [{d0[0]:.3g}, {d0[2]:.3g}]",
                         "yes" if fit.curved else "no" if fit.p_value is not None else "–"])
        section.tables.append(f"Arrhenius fits, D = D0 exp(−Ea/kT), diffusive temperatures only ({CONFIDENCE:.0%} "
                              "intervals)\n" + markdown_table(["variant", "species", "T (K)", "Ea (eV)", "D0 (cm²/s)",
                                                               "ln D curved"], rows))


def md_relations(section: MDCompareSection) -> list[str]:
    lines = []
    for run in section.runs:
        if run.variant != "corrected" or not run.softening_scale or not run.temperature_K:
            continue
        s, t = run.softening_scale, run.temperature_K
        for symbol, sp in run.species.items():
            fit = section.arrhenius.get(("raw", symbol))
            if not sp.estimate.usable:
                lines.append(f"MD {symbol} at {t:g} K: corrected {diffusivity_text(sp.estimate)}; no D to compare "
                             "with the correction's prediction")
                continue
            head = f"MD {symbol} at {t:g} K: corrected D = {diffusivity_text(sp.estimate)} cm²/s"
            if fit is None:
                usable = sorted({r.temperature_K for r in section.runs if r.variant == "raw" and symbol in r.species
                                 and r.species[symbol].estimate.usable and r.temperature_K})
                lines.append(f"{head}; predicted D_raw(s·T = {s * t:g} K)/sqrt(s) cannot be predicted: raw MD is "
                             f"diffusive at {len(usable)} temperature(s), an Arrhenius fit needs ≥ 2")
                continue
            predicted = fit.diffusivity_samples(raw_temperature_equivalent(t, s)) / math.sqrt(s)
            low, median, high = interval(predicted, CONFIDENCE)
            outside = "" if min(fit.temperatures_K) <= s * t <= max(fit.temperatures_K) else " (extrapolated)"
            lines.append(f"{head} vs predicted D_raw(s·T = {s * t:g} K)/sqrt(s) = {median:.3g} [{low:.3g}, {high:.3g}] "
                         f"cm²/s{outside} from the raw Arrhenius fit (ratio {sp.estimate.diffusivity_cm2_s / median:.3g})")
    scale = next((r.softening_scale for r in section.runs if r.softening_scale), None)
    for (variant, symbol), fit in sorted(section.arrhenius.items()):
        raw = section.arrhenius.get(("raw", symbol))
        if variant == "corrected" and raw is not None and scale:
            ea = interval(fit.activation_energy_samples_eV, CONFIDENCE)
            predicted = interval(raw.activation_energy_samples_eV / scale, CONFIDENCE)
            lines.append(f"MD {symbol} Arrhenius: corrected Ea = {ea[1]:.4f} [{ea[0]:.4f}, {ea[2]:.4f}] eV vs "
                         f"predicted raw Ea/s = {predicted[1]:.4f} [{predicted[0]:.4f}, {predicted[2]:.4f}] eV")
    return lines


def _plots(section: MDCompareSection, options: CompareOptions) -> list:
    out, runs = options.out_dir, section.runs
    curves = [figures.MSDCurve(f"{symbol}", run.job, run.variant, run.temperature_K or 0.0, sp.estimate.lags_fs / 1000,
                               sp.estimate.msd_A2, None if sp.estimate.window_fs is None
                               else (sp.estimate.window_fs[0] / 1000, sp.estimate.window_fs[1] / 1000))
              for run in runs for symbol, sp in run.species.items()]
    made = [figures.plot_msd(out / "compare_msd.png", curves), figures.plot_traces(out / "compare_traces.png", runs)]
    if any(run.rdf is not None for run in runs):
        made.append(figures.plot_rdf(out / "compare_rdf.png", runs))
    points = [figures.ArrheniusPoint(f"{run.variant} {symbol}", run.temperature_K, *_triple(sp.estimate))
              for run in runs for symbol, sp in run.species.items() if run.temperature_K and sp.estimate.usable]
    if len({p.temperature_K for p in points}) >= 2:
        fits = {f"{variant} {symbol}": fit for (variant, symbol), fit in section.arrhenius.items()}
        made.append(figures.plot_arrhenius(out / "compare_arrhenius.png", points, fits, CONFIDENCE))
    return made


def _triple(estimate: DiffusionEstimate) -> tuple[float, float, float]:
    return estimate.interval_cm2_s[0], estimate.diffusivity_cm2_s, estimate.interval_cm2_s[1]
