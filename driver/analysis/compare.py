"""`driver compare OUT_DIR`: read a finished run's jobs, put raw beside corrected, and set the
measured corrected/raw relations beside what the scalar correction predicts.

Predictions (DESIGN.md): barriers /s; harmonic frequencies /sqrt(s); MD on E' at T with time step
dt retraces raw NVE at s·T with dt/sqrt(s), so D'(T) = D_raw(s·T)/sqrt(s) (exact for NVE, close
for weakly coupled thermostats), evaluated on the raw Arrhenius fit.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from driver.analysis.diffusion import ArrheniusFit, arrhenius_fit
from driver.analysis.md import MDAnalysis, analyze_md, default_charges
from driver.correction import expected_ratio, raw_temperature_equivalent
from driver.errors import InputError, first_line
from driver.results import SUMMARY_NAME, WITH_RESULTS

REPORT_NAME = "report.md"


@dataclass
class Comparison:
    out_dir: Path
    md: list[MDAnalysis] = field(default_factory=list)
    arrhenius: dict[tuple[str, str], ArrheniusFit] = field(default_factory=dict)
    neb: dict[str, dict] = field(default_factory=dict)
    phonons: dict[str, dict] = field(default_factory=dict)
    tables: list[str] = field(default_factory=list)
    correction_trust: list[str] = field(default_factory=list)  # the fit's verdict, first in the report
    relations: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    plots: list[Path] = field(default_factory=list)
    report: Path | None = None

    def format(self) -> str:
        parts = [*self.correction_trust, ""] if self.correction_trust else []
        parts += [f"{table}\n" for table in self.tables] + ["Predicted (scalar correction) vs measured:",
                 *(f"  {line}" for line in self.relations or ["nothing to compare (no raw/corrected pair)"])]
        parts += [f"note: {note}" for note in self.notes]
        parts.append(f"plots: {', '.join(p.name for p in self.plots) or 'none'}; report: {self.report}")
        return "\n".join(parts)


def _load_summary(out_dir: Path) -> list[dict]:
    if not out_dir.is_dir():
        raise InputError(f"{out_dir}: no such directory")
    path = out_dir / SUMMARY_NAME
    if not path.is_file():
        raise InputError(f"{path}: not found; is {out_dir} the output folder of `driver run`?")
    try:
        jobs = json.loads(path.read_text())["jobs"]
    except (json.JSONDecodeError, KeyError, TypeError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: not a driver summary ({type(exc).__name__}: {exc})") from None
    if not isinstance(jobs, list) or not all(isinstance(job, dict) for job in jobs):
        raise InputError(f"{path}: not a driver summary (its 'jobs' must be a list of job entries)")
    return jobs


def _task_of(path: Path) -> str | None:
    """The task whose results the file holds; a trajectory without results is read as MD."""
    try:
        handle = h5py.File(path, "r")
    except OSError as exc:
        raise InputError(f"{path}: not a readable HDF5 file ({first_line(exc)}); is it a job file of `driver run`?") from None
    with handle:
        from driver.tasks import task_kinds

        task = next((task for task in task_kinds() if f"results/{task}" in handle), None)
        if task is None and handle.get("particles/all/position/value", np.empty((0,))).shape[0] > 1:
            task = "md"
        return task


def _read_group(path: Path, task: str) -> dict:
    with h5py.File(path, "r") as handle:
        group = handle[f"results/{task}"]
        return {**dict(group.attrs), **{key: group[key][()] for key in group}}


def _fmt(value: float | None, spec: str = ".3g") -> str:
    return "–" if value is None or not math.isfinite(value) else format(value, spec)


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def _scale(comparison_jobs: list[dict]) -> float | None:
    return next((j["softening_scale"] for j in comparison_jobs if j.get("softening_scale")), None)


def _md_section(comparison: Comparison, window: tuple[float, float]) -> None:
    runs = comparison.md
    rows = []
    for run in runs:
        for sp in run.species.values():
            rows.append([run.job, run.variant, _fmt(run.temperature_K, ".0f"), _fmt(run.mean_temperature_K, ".0f"),
                         f"{sp.symbol} ({sp.count})", _fmt(sp.fit.diffusivity_cm2_s), _fmt(sp.fit.error_cm2_s, ".2g"),
                         f"{sp.charge_e:+g}", _fmt(sp.conductivity_S_cm)])
    comparison.tables.append("MD: tracer diffusivity (MSD slope/6 over lags "
                             f"{window[0]:.0%}–{window[1]:.0%} of the run) and Nernst–Einstein conductivity\n"
                             + _table(["job", "variant", "T (K)", "<T> (K)", "species", "D (cm²/s)", "± D",
                                       "charge (e)", "σ (S/cm)"], rows))
    methods = sorted({sp.fit.error_method for run in runs for sp in run.species.values()})
    comparison.notes.append("D uncertainty: " + "; ".join(methods))
    comparison.notes.append("σ = n q² D / kT per species (Nernst–Einstein: uncorrelated ions, Haven ratio 1), "
                            "T the job's target temperature, n from the mean cell volume; charges (from --charge, else "
                            "pymatgen's charge-balanced oxidation-state guess, 0 for an elemental solid: no σ) "
                            + ", ".join(f"{s}={sp.charge_e:+g}" for s, sp in runs[0].species.items()))
    for variant in ("raw", "corrected"):
        for symbol in sorted({s for r in runs for s in r.species}):
            points = [(r.temperature_K, r.species[symbol].fit.diffusivity_cm2_s) for r in runs
                      if r.variant == variant and symbol in r.species and r.temperature_K]
            fit = arrhenius_fit([t for t, _ in points], [d for _, d in points])
            if fit is not None:
                comparison.arrhenius[(variant, symbol)] = fit
    if comparison.arrhenius:
        rows = [[variant, symbol, ", ".join(f"{t:g}" for t in fit.temperatures_K),
                 _fmt(fit.activation_energy_eV, ".4f"), _fmt(fit.activation_energy_error_eV, ".2g"),
                 _fmt(fit.prefactor_cm2_s), _fmt(fit.prefactor_error_cm2_s, ".2g")]
                for (variant, symbol), fit in sorted(comparison.arrhenius.items())]
        comparison.tables.append("Arrhenius fits, D = D0 exp(−Ea/kT) (uncertainties need ≥ 3 temperatures)\n"
                                 + _table(["variant", "species", "T (K)", "Ea (eV)", "± Ea", "D0 (cm²/s)", "± D0"], rows))
    comparison.relations += _md_relations(comparison)


def _raw_temperatures_with_positive_d(comparison: Comparison, symbol: str) -> list[float]:
    """The raw temperatures `arrhenius_fit` can use for this species: D finite and > 0."""
    return sorted({r.temperature_K for r in comparison.md if r.variant == "raw" and r.temperature_K
                   and symbol in r.species and (d := r.species[symbol].fit.diffusivity_cm2_s) is not None
                   and math.isfinite(d) and d > 0})


def _md_relations(comparison: Comparison) -> list[str]:
    lines = []
    for run in comparison.md:
        if run.variant != "corrected" or not run.softening_scale or not run.temperature_K:
            continue
        s, t = run.softening_scale, run.temperature_K
        for symbol, sp in run.species.items():
            fit = comparison.arrhenius.get(("raw", symbol))
            head = f"MD {symbol} at {t:g} K: corrected D = {_fmt(sp.fit.diffusivity_cm2_s)} cm²/s"
            if fit is None:
                usable = _raw_temperatures_with_positive_d(comparison, symbol)
                lines.append(f"{head}; predicted D_raw(s·T = {s * t:g} K)/sqrt(s) cannot be predicted: raw MD has "
                             f"{len(usable)} temperature(s) with D > 0, an Arrhenius fit needs ≥ 2")
                continue
            predicted = fit.diffusivity_at(raw_temperature_equivalent(t, s)) * expected_ratio("frequency", s)
            outside = "" if min(fit.temperatures_K) <= s * t <= max(fit.temperatures_K) else " (extrapolated)"
            lines.append(f"{head} vs predicted D_raw(s·T = {s * t:g} K)/sqrt(s) = {predicted:.3g} cm²/s{outside} "
                         f"from the raw Arrhenius fit (ratio {sp.fit.diffusivity_cm2_s / predicted:.3g})")
    scale = next((r.softening_scale for r in comparison.md if r.softening_scale), None)
    for (variant, symbol), fit in sorted(comparison.arrhenius.items()):
        raw = comparison.arrhenius.get(("raw", symbol))
        if variant == "corrected" and raw is not None and scale:
            lines.append(f"MD {symbol} Arrhenius: corrected Ea = {fit.activation_energy_eV:.4f} eV vs predicted "
                         f"raw Ea/s = {raw.activation_energy_eV * expected_ratio('energy', scale):.4f} eV; corrected D0 = "
                         f"{fit.prefactor_cm2_s:.3g} vs raw D0/sqrt(s) = "
                         f"{raw.prefactor_cm2_s * expected_ratio('frequency', scale):.3g} cm²/s")
    return lines


def _neb_section(comparison: Comparison, s: float | None) -> None:
    rows = [[name, _fmt(d.get("barrier_eV"), ".4f"), _fmt(d.get("barrier_spline_eV"), ".4f"),
             _fmt(d.get("backward_barrier_eV"), ".4f"), _fmt(d.get("reaction_energy_eV"), ".4f"),
             str(bool(d.get("converged")))] for name, d in comparison.neb.items()]
    comparison.tables.append("NEB\n" + _table(["job", "barrier (eV)", "spline barrier (eV)", "backward (eV)",
                                                "reaction energy (eV)", "converged"], rows))
    comparison.notes += [f"{name}: NEB result suspect: {'; '.join(json.loads(d['suspect_reasons']))}"
                         for name, d in comparison.neb.items() if d.get("suspect")]
    raw, corrected = comparison.neb.get("raw"), comparison.neb.get("corrected")
    if raw and corrected and s:
        lines = [f"NEB barrier: corrected {corrected['barrier_eV']:.4f} eV vs predicted raw/s = "
                 f"{raw['barrier_eV'] / s:.4f} eV (s = {s:g}; ratio corrected/raw {corrected['barrier_eV'] / raw['barrier_eV']:.4f}"
                 f" vs 1/s = {1 / s:.4f})"]
        comparison.relations += lines


def _phonon_section(comparison: Comparison, s: float | None) -> None:
    rows = []
    for name, d in comparison.phonons.items():
        rows.append([name, _fmt(d["mean"], ".4f"), _fmt(float(np.max(d["band_frequencies_THz"])), ".3f"),
                     ", ".join(f"{f:.2f}" for f in sorted(d["gamma_frequencies_THz"]))])
    comparison.tables.append("Phonons\n" + _table(["job", "mean band frequency (THz)", "max frequency (THz)",
                                                    "Γ frequencies (THz)"], rows))
    raw, corrected = comparison.phonons.get("raw"), comparison.phonons.get("corrected")
    if raw and corrected and s:
        band_raw, band_corrected = raw["band_frequencies_THz"], corrected["band_frequencies_THz"]
        mask = band_raw > 0.5  # acoustic modes near Γ: ratios of near-zeros are noise
        per_mode = np.median(band_corrected[mask] / band_raw[mask]) if band_raw.shape == band_corrected.shape and mask.any() else float("nan")
        comparison.relations.append(
            f"phonons: corrected mean band frequency {corrected['mean']:.4f} THz vs predicted raw/sqrt(s) = "
            f"{raw['mean'] / math.sqrt(s):.4f} THz (mean shift {corrected['mean'] - raw['mean']:+.4f} THz; "
            f"median per-mode ratio {per_mode:.4f} vs 1/sqrt(s) = {1 / math.sqrt(s):.4f})")


def _other_tasks_section(comparison: Comparison, jobs: list[tuple[dict, str | None]]) -> None:
    """Relax, EOS, elastic, single points: each job's report line, and the task's own raw vs
    corrected line beside what the scalar correction predicts (Task.comparison_line)."""
    from driver.tasks import comparison_lines, job_line, task_for

    by_kind: dict[str, dict[str, dict]] = {}
    for job, task in jobs:
        if task is not None:
            by_kind.setdefault(task, {})[job.get("variant", job["job"])] = job
    for kind, variants in by_kind.items():
        handler = task_for(kind)
        comparison.tables.append("\n".join([f"{kind}:", *(job_line(handler, job) for job in variants.values())]))
        comparison.relations += [line.strip() for line in comparison_lines(handler, list(variants.values()))]


def compare_run(out_dir: str | Path, charges: dict[str, float] | None = None,
                window: tuple[float, float] = (0.1, 0.5), plots: bool = True) -> Comparison:
    """Analyse every usable job of a run, write plots and OUT_DIR/report.md, return the lot."""
    from driver.analysis import plots as figures
    from driver.analysis.report import write_report

    if not 0 <= window[0] < window[1] <= 1:
        raise InputError(f"--window {window[0]} {window[1]}: need 0 <= start < end <= 1 (fractions of the run)")
    out_dir = Path(out_dir)
    jobs = _load_summary(out_dir)
    comparison = Comparison(out_dir)
    from driver.trust import summary_trust_lines

    comparison.correction_trust = summary_trust_lines(json.loads((out_dir / SUMMARY_NAME).read_text()))
    usable = []
    for job in jobs:
        path = out_dir / job.get("file", "")
        if job.get("status") not in WITH_RESULTS:
            comparison.notes.append(f"{job.get('job')}: skipped (status {job.get('status')})")
        elif not path.is_file():
            comparison.notes.append(f"{job.get('job')}: skipped ({path.name} missing)")
        else:
            usable.append((job, path, _task_of(path)))
    if not usable:
        raise InputError(f"{out_dir / SUMMARY_NAME}: no completed job with an output file to compare")
    s = _scale([job for job, _, _ in usable])
    md_jobs = [(job, path) for job, path, task in usable if task == "md"]
    if md_jobs:
        if charges is None:
            with h5py.File(md_jobs[0][1], "r") as handle:
                symbols = json.loads(handle["particles/all/species"].attrs["symbols"])
            charges = default_charges(symbols)
        for job, path in md_jobs:
            run = analyze_md(path, job["job"], job.get("variant", "raw"), job.get("temperature_K"),
                             job.get("softening_scale"), charges, window)
            comparison.md.append(run)
            comparison.notes += run.notes
        _md_section(comparison, window)
    for job, path, task in usable:
        if task == "neb":
            comparison.neb[job["job"]] = _read_group(path, "neb")
        elif task == "phonons":
            from driver.tasks.phonon_plots import read_phonon_results

            data = read_phonon_results(path)
            group = _read_group(path, "phonons")
            data["gamma_frequencies_THz"] = group["gamma_frequencies_THz"]
            # Mean over every band-path mode: all frequencies scale together, so this mean scales
            # exactly as they do (the summary's mesh mean drops modes that round to <= 0).
            data["mean"] = float(np.mean(data["band_frequencies_THz"]))
            comparison.phonons[job["job"]] = data
    _other_tasks_section(comparison, [(job, task) for job, _, task in usable if task not in ("md", "neb", "phonons")])
    if comparison.neb:
        _neb_section(comparison, s)
    if comparison.phonons:
        _phonon_section(comparison, s)
    if plots:
        comparison.plots = _make_plots(comparison, figures)
    comparison.report = write_report(comparison, out_dir / REPORT_NAME)
    return comparison


def _make_plots(comparison: Comparison, figures) -> list[Path]:
    out = comparison.out_dir
    made = []
    if comparison.md:
        made += [figures.plot_msd(out / "compare_msd.png", comparison.md),
                 figures.plot_traces(out / "compare_traces.png", comparison.md)]
        if any(run.rdf is not None for run in comparison.md):
            made.append(figures.plot_rdf(out / "compare_rdf.png", comparison.md))
        if len({r.temperature_K for r in comparison.md}) >= 2:
            made.append(figures.plot_arrhenius(out / "compare_arrhenius.png", comparison.md, comparison.arrhenius))
    if comparison.neb:
        made.append(figures.plot_neb(out / "compare_neb.png", list(comparison.neb.items())))
    if comparison.phonons:
        from driver.tasks.phonon_plots import plot_phonons

        path = out / "compare_phonons.png"
        plot_phonons(path, list(comparison.phonons.items()))
        made.append(path)
    return made

