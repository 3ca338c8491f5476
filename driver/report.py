"""The few lines a user reads after `driver run`: where results are and what they say. Each
task writes its own line (driver.tasks.Task.report_line) and its raw-vs-corrected comparison."""

from __future__ import annotations

from driver.results import SUMMARY_NAME, WITH_RESULTS
from driver.runner import RunReport
from driver.tasks import task_for


def _job_line(kind: str, job: dict) -> str:
    if job["status"] not in WITH_RESULTS:
        return f"  {job['file']:<24} {job['status']}" + (f": {job['error']}" if job.get("error") else "")
    return task_for(kind).report_line(job)


def _comparison_lines(kind: str, jobs: list[dict]) -> list[str]:
    """Raw vs corrected for each pair of jobs, beside what the correction predicts."""
    by_name = {job["job"]: job for job in jobs if job["status"] in WITH_RESULTS}
    lines = []
    for name, corrected in by_name.items():
        if not name.startswith("corrected"):
            continue
        raw = by_name.get("raw" + name[len("corrected"):])
        line = task_for(kind).comparison_line(name, raw, corrected) if raw is not None else None
        if line:
            lines.append(line)
    if lines:
        lines.insert(0, "The corrected PES is stiffer:")
    return lines


def format_report(report: RunReport) -> str:
    lines = [f"Results in {report.out_dir}/ (summary: {report.out_dir / SUMMARY_NAME})"]
    lines += [_job_line(report.kind, job) for job in report.jobs]
    lines += _comparison_lines(report.kind, report.jobs)
    lines.append(f"Look inside a file with: driver inspect {report.out_dir / report.jobs[0]['file']}"
                 if report.jobs else "No jobs ran.")
    return "\n".join(lines)
