"""The few lines a user reads after `driver run`: where results are and what they say."""

from __future__ import annotations

import math

from driver.runner import SUMMARY_NAME, RunReport


def _phonon_line(job: dict) -> str:
    gamma = ", ".join(f"{f:.2f}" for f in job["frequencies_THz"])
    line = f"  {job['file']:<24} Γ frequencies (THz): {gamma}; max {job['max_frequency_THz']:.2f} THz"
    if job["imaginary_modes"]:
        line += f"; IMAGINARY modes at {', '.join(job['imaginary_qpoints'])}"
    return line + (f"; plot {job['plot']}" if job.get("plot") else "")


def _neb_line(job: dict) -> str:
    state = "converged" if job["converged"] else "NOT converged"
    return (f"  {job['file']:<24} barrier {job['barrier_eV']:.3f} eV (backward {job['backward_barrier_eV']:.3f} eV), "
            f"{state} after {job['iterations']} iterations, max force {job['max_force_eV_A']:.3f} eV/Å; "
            f"band {job['band_file']}")


def _job_line(job: dict) -> str:
    if "barrier_eV" in job:
        return _neb_line(job)
    if job["status"] != "completed":
        return f"  {job['file']:<24} {job['status']}" + (f": {job['error']}" if job.get("error") else "")
    if "frequencies_THz" in job:
        return _phonon_line(job)
    parts = [f"  {job['file']:<24} {job['steps']} steps", f"<T> = {job['mean_temperature_K']:.0f} K",
             f"RMS displacement {job['rms_displacement_A']:.3f} Å"]
    if job.get("conserved_energy_drift_eV_per_atom_per_ps") is not None:
        parts.append(f"conserved-energy drift {job['conserved_energy_drift_eV_per_atom_per_ps']:.1e} eV/atom/ps")
    return ", ".join(parts)


def _comparison_lines(jobs: list[dict]) -> list[str]:
    """Raw vs corrected at each temperature; harmonic theory predicts RMS ratio sqrt(s)."""
    by_name = {job["job"]: job for job in jobs if job["status"] in ("completed", "not converged")}
    lines = []
    for name, corrected in by_name.items():
        if not name.startswith("corrected"):
            continue
        raw = by_name.get("raw" + name[len("corrected"):])
        if raw is not None and "barrier_eV" in raw:
            ratio = corrected["barrier_eV"] / raw["barrier_eV"]
            lines.append(f"  NEB: corrected/raw barrier = {ratio:.4f} (scalar correction on the same path: "
                         f"1/s = {1 / corrected['softening_scale']:.4f})")
            continue
        if raw is not None and "mean_frequency_THz" in raw:
            ratio = corrected["mean_frequency_THz"] / raw["mean_frequency_THz"]
            expected = 1 / math.sqrt(corrected["softening_scale"])
            lines.append(f"  phonons: corrected/raw mean frequency = {ratio:.4f} "
                         f"(exact for the scalar correction: 1/sqrt(s) = {expected:.4f})")
            continue
        if raw is None or not raw.get("rms_displacement_A"):
            continue
        ratio = corrected["rms_displacement_A"] / raw["rms_displacement_A"]
        expected = math.sqrt(corrected["softening_scale"])
        lines.append(f"  {name[len('corrected-'):] or 'all'}: corrected/raw RMS displacement = {ratio:.3f} "
                     f"(harmonic expectation sqrt(s) = {expected:.3f}, s = {corrected['softening_scale']:g})")
    if lines:
        lines.insert(0, "The corrected PES is stiffer:")
    return lines


def format_report(report: RunReport) -> str:
    lines = [f"Results in {report.out_dir}/ (summary: {report.out_dir / SUMMARY_NAME})"]
    lines += [_job_line(job) for job in report.jobs]
    lines += _comparison_lines(report.jobs)
    lines.append(f"Look inside a file with: driver inspect {report.out_dir / report.jobs[0]['file']}"
                 if report.jobs else "No jobs ran.")
    return "\n".join(lines)
