"""A diffusion study's section of `driver compare` and report.md: each temperature's D with its
interval (or why there is none), the Arrhenius fits with D and σ at room temperature, raw vs
corrected against the scalar correction's prediction, and the figures: Arrhenius with bands,
each MSD with its fit window, the interval against simulated time, and the hops."""

from __future__ import annotations

from driver.analysis import plots as figures
from driver.analysis.diffusivity import diffusivity_cell
from driver.tasks import (
    CompareOptions,
    CompareSection,
    FinishedJob,
    markdown_table,
    softening_scale_of,
    table_number,
)
from driver.tasks.diffusion_study import (
    HAVEN_NOTE,
    Temperature,
    analyse_study,
    read_study,
    study_lines,
)


def _d_text(t: Temperature) -> str:
    r = t.result
    interval = None if r.interval_low_cm2_s is None else (r.interval_low_cm2_s, r.interval_high_cm2_s)
    return diffusivity_cell(r.diffusivity_cm2_s, interval, r.verdict, r.upper_bound_cm2_s)


def _haven_text(t: Temperature) -> str:
    r = t.result
    return "–" if r.haven_ratio is None else f"{r.haven_ratio:.2f} [{r.haven_low:.2f}, {r.haven_high:.2f}]"


def compare_section(jobs: list[FinishedJob], options: CompareOptions) -> CompareSection:
    study = read_study(options.out_dir, [job.entry for job in jobs])
    section = CompareSection()
    if not study:
        section.notes.append("diffusion: no job file holds a result yet")
        return section
    confidence = study[0].result.confidence
    rows = [[t.job, t.variant, f"{t.temperature_K:g}", f"{t.result.simulated_ps:g}", _d_text(t),
             table_number(t.result.relative_half_width, ".1%"), f"{t.result.target_relative_error:.0%}",
             f"{t.result.hops} ({t.result.hops_per_ion:.2g}/ion)", f"{t.result.host_site_fraction:.0%}",
             f"{t.result.equilibration_ps:g}",
             "–" if t.result.window_start_ps is None else f"{t.result.window_start_ps:g}–{t.result.window_stop_ps:g}",
             _haven_text(t), t.result.state] for t in study]
    section.tables.append(
        f"Diffusion study: tracer D of {', '.join(study[0].result.species)} ({confidence:.0%} intervals)\n"
        + markdown_table(["job", "variant", "T (K)", "simulated (ps)", "D (cm²/s)", "± (rel.)", "target", "hops",
                          "host on sites", "equilibration (ps)", "fit window (ps)", "Haven H", "state"], rows))
    block, fits = analyse_study(study, softening_scale_of(jobs))
    fit_rows = []
    for variant, v in block["variants"].items():
        fit = v.get("arrhenius")
        if fit is None:
            continue
        room = v["room_temperature_K"]
        fit_rows.append([variant, ", ".join(f"{t:g}" for t in v["temperatures_K"]),
                         _triple(fit["activation_energy_eV"], ".3f"), _triple(fit["prefactor_cm2_s"], ".3g"),
                         _triple(v["diffusivity_room_cm2_s"], ".3g"), _triple(v["conductivity_room_S_cm"], ".3g"),
                         f"{fit['p_value']:.2g}" if fit["p_value"] is not None else "–"])
    if fit_rows:
        section.tables.append(
            f"Arrhenius fits and room temperature ({room:g} K), {confidence:.0%} intervals\n"
            + markdown_table(["variant", "T (K)", "Ea (eV)", "D0 (cm²/s)", f"D({room:g} K) (cm²/s)",
                              f"σ({room:g} K) (S/cm)", "χ² p"], fit_rows))
    section.relations += study_lines(block)
    # a variant without an Arrhenius fit has no σ, so nothing to say how σ was made
    section.notes += [f"{name}: {v.get('conductivity_note') or HAVEN_NOTE}"
                      for name, v in block["variants"].items() if v.get("arrhenius")]
    section.notes += [f"{t.job}: {t.result.verdict}: {t.result.reason}" for t in study if t.result.reason]
    if options.plots:
        section.plots = _plots(study, fits, options)
    return section


def _triple(triple: dict[str, float] | None, spec: str) -> str:
    if not triple:
        return "–"
    return f"{triple['median']:{spec}} [{triple['low']:{spec}}, {triple['high']:{spec}}]"


def _plots(study: list[Temperature], fits: dict, options: CompareOptions) -> list:
    out = options.out_dir
    confidence = study[0].result.confidence
    made = []
    curves = [figures.MSDCurve(t.variant, t.job, t.variant, t.temperature_K, t.result.msd_lags_ps, t.result.msd_A2,
                               None if t.result.window_start_ps is None
                               else (t.result.window_start_ps, t.result.window_stop_ps))
              for t in study if t.result.msd_A2 is not None and len(t.result.msd_A2)]
    if curves:
        made.append(figures.plot_msd(out / "compare_diffusion_msd.png", curves))
    made.append(figures.plot_convergence(out / "compare_diffusion_convergence.png",
                                         [(t.job, t.variant, t.temperature_K, t.result.history_ps,
                                           t.result.history_relative_half_width) for t in study],
                                         study[0].result.target_relative_error))
    made.append(figures.plot_hops(out / "compare_diffusion_hops.png",
                                  [(t.job, t.variant, t.temperature_K, t.result.hops_per_ion) for t in study]))
    points = [figures.ArrheniusPoint(t.variant, t.temperature_K, t.result.interval_low_cm2_s,
                                     t.result.diffusivity_cm2_s, t.result.interval_high_cm2_s)
              for t in study if t.usable]
    bounds = [(t.variant, t.temperature_K, t.result.upper_bound_cm2_s) for t in study
              if not t.usable and t.result.upper_bound_cm2_s is not None]
    if points or bounds:
        made.append(figures.plot_arrhenius(out / "compare_diffusion_arrhenius.png", points, fits, confidence,
                                           extend_to_K=study[0].result.room_temperature_K, upper_bounds=bounds))
    return made
