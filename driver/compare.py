"""`driver compare OUT_DIR`: read a finished run's jobs, put raw beside corrected, and set the
measured corrected/raw relations beside what the scalar correction predicts.

Each task kind writes its own section (driver.tasks.Task.compare_section: MD's diffusion and
Arrhenius analysis, NEB's barriers, phonon frequencies, the other kinds' report lines); this
module reads the run, hands each kind its jobs, and writes the sections to the console and to
OUT_DIR/report.md. Predictions (DESIGN.md): barriers /s, harmonic frequencies /sqrt(s), MD on E'
at T retracing raw NVE at s·T with time scaled by sqrt(s).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from driver.errors import InputError
from driver.h5read import reading
from driver.results import SUMMARY_NAME, WITH_RESULTS
from driver.tasks import CompareOptions, CompareSection, FinishedJob, task_for, task_kinds
from driver.trust import summary_trust_lines

REPORT_NAME = "report.md"


@dataclass
class Comparison:
    out_dir: Path
    sections: dict[str, CompareSection] = field(default_factory=dict)  # task kind -> its section
    correction_trust: list[str] = field(default_factory=list)  # the fit's verdict, first in the report
    notes: list[str] = field(default_factory=list)  # about the run as a whole (skipped jobs)
    report: Path | None = None

    def _all(self, name: str) -> list:
        return [item for section in self.sections.values() for item in getattr(section, name)]

    @property
    def tables(self) -> list[str]:
        return self._all("tables")

    @property
    def relations(self) -> list[str]:
        return self._all("relations")

    @property
    def plots(self) -> list[Path]:
        return self._all("plots")

    @property
    def all_notes(self) -> list[str]:
        return self.notes + self._all("notes")

    def format(self) -> str:
        parts = [*self.correction_trust, ""] if self.correction_trust else []
        parts += [f"{table}\n" for table in self.tables] + ["Predicted (scalar correction) vs measured:",
                 *(f"  {line}" for line in self.relations or ["nothing to compare (no raw/corrected pair)"])]
        parts += [f"note: {note}" for note in self.all_notes]
        parts.append(f"plots: {', '.join(p.name for p in self.plots) or 'none'}; report: {self.report}")
        return "\n".join(parts)


def _load_summary(out_dir: Path) -> dict:
    if not out_dir.is_dir():
        raise InputError(f"{out_dir}: no such directory")
    path = out_dir / SUMMARY_NAME
    if not path.is_file():
        raise InputError(f"{path}: not found; is {out_dir} the output folder of `driver run`?")
    try:
        summary = json.loads(path.read_text())
        jobs = summary["jobs"]
    except (json.JSONDecodeError, KeyError, TypeError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: not a driver summary ({type(exc).__name__}: {exc})") from None
    if not isinstance(jobs, list) or not all(isinstance(job, dict) for job in jobs):
        raise InputError(f"{path}: not a driver summary (its 'jobs' must be a list of job entries)")
    return summary


def _kind_of(path: Path) -> str | None:
    """The task kind whose result the job file holds (its /results/<kind> group)."""
    with reading(path, "; is it a job file of `driver run`?") as handle:
        return next((kind for kind in task_kinds() if f"results/{kind}" in handle), None)


def compare_run(out_dir: str | Path, charges: dict[str, float] | None = None, plots: bool = True) -> Comparison:
    """Analyse every usable job of a run, write plots and OUT_DIR/report.md, return the lot."""
    out_dir = Path(out_dir)
    summary = _load_summary(out_dir)
    comparison = Comparison(out_dir, correction_trust=summary_trust_lines(summary))
    by_kind: dict[str, list[FinishedJob]] = {}
    for job in summary["jobs"]:
        path = out_dir / str(job.get("file", ""))
        kind = _kind_of(path) if job.get("status") in WITH_RESULTS and path.is_file() else None
        if job.get("status") not in WITH_RESULTS:
            comparison.notes.append(f"{job.get('job')}: skipped (status {job.get('status')})")
        elif not path.is_file():
            comparison.notes.append(f"{job.get('job')}: skipped ({path.name} missing)")
        elif kind is None:
            comparison.notes.append(f"{job.get('job')}: skipped ({path.name} holds no task result)")
        else:
            by_kind.setdefault(kind, []).append(FinishedJob(job, path))
    if not by_kind:
        raise InputError(f"{out_dir / SUMMARY_NAME}: no completed job with an output file to compare")
    options = CompareOptions(out_dir, charges, plots)
    comparison.sections = {kind: task_for(kind).compare_section(jobs, options) for kind, jobs in by_kind.items()}
    comparison.report = write_report(comparison, out_dir / REPORT_NAME)
    return comparison


def write_report(comparison: Comparison, path: Path) -> Path:
    """OUT_DIR/report.md: the sections in Markdown GitHub renders (pipe tables, images linked
    relative to the report so the folder can move)."""
    lines = [f"# Raw vs corrected: {comparison.out_dir.name}", ""]
    if comparison.correction_trust:
        lines += ["## Correction trust", ""] + [f"- {line}" for line in comparison.correction_trust] + [""]
    for table in comparison.tables:
        title, _, body = table.partition("\n")
        lines += [f"## {title}", "", body, ""]
    lines += ["## Predicted (scalar correction) vs measured", ""]
    lines += [f"- {line}" for line in comparison.relations] or ["- nothing to compare (no raw/corrected pair)"]
    if comparison.all_notes:
        lines += ["", "## Notes", ""] + [f"- {note}" for note in comparison.all_notes]
    if comparison.plots:
        lines += ["", "## Plots", ""]
        for plot in comparison.plots:
            relative = Path(plot).relative_to(path.parent) if Path(plot).is_relative_to(path.parent) else Path(plot)
            lines += [f"![{relative.stem}]({relative.as_posix()})", ""]
    path.write_text("\n".join(lines).rstrip() + "\n")
    return path
