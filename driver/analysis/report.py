"""OUT_DIR/report.md: the comparison's tables, relations and plots, in Markdown GitHub renders
(pipe tables, images linked relative to the report so the folder can move)."""

from __future__ import annotations

from pathlib import Path


def write_report(comparison, path: Path) -> Path:
    lines = [f"# Raw vs corrected: {comparison.out_dir.name}", ""]
    if getattr(comparison, "correction_trust", None):
        lines += ["## Correction trust", ""] + [f"- {line}" for line in comparison.correction_trust] + [""]
    for table in comparison.tables:
        title, _, body = table.partition("\n")
        lines += [f"## {title}", "", body, ""]
    lines += ["## Predicted (scalar correction) vs measured", ""]
    lines += [f"- {line}" for line in comparison.relations] or ["- nothing to compare (no raw/corrected pair)"]
    if comparison.notes:
        lines += ["", "## Notes", ""] + [f"- {note}" for note in comparison.notes]
    if comparison.plots:
        lines += ["", "## Plots", ""]
        for plot in comparison.plots:
            relative = Path(plot).relative_to(path.parent) if Path(plot).is_relative_to(path.parent) else Path(plot)
            lines += [f"![{relative.stem}]({relative.as_posix()})", ""]
    path.write_text("\n".join(lines).rstrip() + "\n")
    return path
