"""NEB's section of `driver compare`: each band's barriers, the corrected barrier beside raw/s
(exact on one path for the scalar correction), and the MEPs overlaid."""

from __future__ import annotations

from pathlib import Path

from driver.tasks import (
    CompareOptions,
    CompareSection,
    FinishedJob,
    markdown_table,
    softening_scale_of,
    table_number,
)


def compare_section(jobs: list[FinishedJob], bands: dict, options: CompareOptions) -> CompareSection:
    """`bands`: job name -> its NEBResult as stored (driver.tasks.neb reads them)."""
    rows = [[name, *(table_number(value, ".4f") for value in (r.barrier_eV, r.barrier_spline_eV, r.backward_barrier_eV,
                                                                r.reaction_energy_eV)), str(bool(r.converged))]
            for name, r in bands.items()]
    section = CompareSection(tables=["NEB\n" + markdown_table(["job", "barrier (eV)", "spline barrier (eV)",
                                                               "backward (eV)", "reaction energy (eV)", "converged"],
                                                              rows)])
    section.notes += [f"{name}: NEB result suspect: {'; '.join(r.suspect_reasons)}"
                      for name, r in bands.items() if r.suspect]
    s = softening_scale_of(jobs)
    raw, corrected = bands.get("raw"), bands.get("corrected")
    if raw is not None and corrected is not None and s:
        section.relations.append(
            f"NEB barrier: corrected {corrected.barrier_eV:.4f} eV vs predicted raw/s = {raw.barrier_eV / s:.4f} eV "
            f"(s = {s:g}; ratio corrected/raw {corrected.barrier_eV / raw.barrier_eV:.4f} vs 1/s = {1 / s:.4f})")
    if options.plots:
        section.plots.append(plot_bands(options.out_dir / "compare_neb.png", bands))
    return section


def plot_bands(path: Path, bands: dict) -> Path:
    """Each band's images and ASE's spline through them, raw solid and corrected dashed."""
    from driver.analysis.plots import STYLE, pyplot, save_figure

    plt = pyplot()
    figure, axis = plt.subplots(figsize=(5.5, 4), dpi=110)
    for name, band in bands.items():
        style = STYLE.get(name.split("-")[0], ":")
        line = axis.plot(band.reaction_coordinate_A, band.mep_energies_eV, "o")[0]
        axis.plot(band.spline_coordinate_A, band.spline_energies_eV, style, color=line.get_color(),
                  label=f"{name}: barrier {band.barrier_eV:.3f} eV")
    axis.set(xlabel="reaction coordinate (Å)", ylabel="energy relative to initial (eV)", title="minimum energy paths")
    axis.legend(fontsize=8)
    return save_figure(figure, path)
