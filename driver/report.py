"""The few lines a user reads after `driver run`: where results are and what they say."""

from __future__ import annotations

import math

from driver.runner import SUMMARY_NAME, RunReport


def _job_line(job: dict) -> str:
    if job["status"] != "completed":
        return f"  {job['file']:<24} {job['status']}" + (f": {job['error']}" if job.get("error") else "")
    parts = [f"  {job['file']:<24} {job['steps']} steps", f"<T> = {job['mean_temperature_K']:.0f} K",
             f"RMS displacement {job['rms_displacement_A']:.3f} Å"]
    if job.get("conserved_energy_drift_eV_per_atom_per_ps") is not None:
        parts.append(f"conserved-energy drift {job['conserved_energy_drift_eV_per_atom_per_ps']:.1e} eV/atom/ps")
    return ", ".join(parts)


def _comparison_lines(jobs: list[dict]) -> list[str]:
    """Raw vs corrected at each temperature; harmonic theory predicts RMS ratio sqrt(s)."""
    by_name = {job["job"]: job for job in jobs if job["status"] == "completed"}
    lines = []
    for name, corrected in by_name.items():
        if not name.startswith("corrected"):
            continue
        raw = by_name.get("raw" + name[len("corrected"):])
        if raw is None or not raw["rms_displacement_A"]:
            continue
        ratio = corrected["rms_displacement_A"] / raw["rms_displacement_A"]
        expected = math.sqrt(corrected["softening_scale"])
        lines.append(f"  {name[len('corrected-'):] or 'all'}: corrected/raw RMS displacement = {ratio:.3f} "
                     f"(harmonic expectation sqrt(s) = {expected:.3f}, s = {corrected['softening_scale']:g})")
    if lines:
        lines.insert(0, "The corrected PES is stiffer, so atoms move less:")
    return lines


def format_report(report: RunReport) -> str:
    lines = [f"Results in {report.out_dir}/ (summary: {report.out_dir / SUMMARY_NAME})"]
    lines += [_job_line(job) for job in report.jobs]
    lines += _comparison_lines(report.jobs)
    lines.append(f"Look inside a file with: driver inspect {report.out_dir / report.jobs[0]['file']}"
                 if report.jobs else "No jobs ran.")
    return "\n".join(lines)
