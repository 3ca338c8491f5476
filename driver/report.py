"""The few lines a user reads after `driver run`: where results are and what they say. Each
task writes its own line (driver.tasks.Task.report_line) and its raw-vs-corrected comparison."""

from __future__ import annotations

from driver.results import SUMMARY_NAME
from driver.runner import RunReport
from driver.tasks import comparison_lines, job_line, task_for


def format_report(report: RunReport) -> str:
    task = task_for(report.kind)
    lines = [f"Results in {report.out_dir}/ (summary: {report.out_dir / SUMMARY_NAME})"]
    lines += [job_line(task, job) for job in report.jobs]
    relations = comparison_lines(task, report.jobs)
    if relations:
        lines += ["The corrected PES is stiffer:", *relations]
    lines.append(f"Look inside a file with: driver inspect {report.out_dir / report.jobs[0]['file']}"
                 if report.jobs else "No jobs ran.")
    return "\n".join(lines)
