"""Whether a fitted correction may be used: the refusal rules of `driver fit`, and the trust block a
correction file carries into every run that uses it (job /parameters, summary.json, run log, report.md).

A correction is refused when it makes the forces worse, judged on the RMSE (the quantity the fit
minimises; on phonon displacements the MAE is dominated by near-zero components and can rise while
the correction is right), in-sample and held out; when its bootstrap interval reaches s <= 0; or when
the model and DFT forces are too poorly correlated for one scale to mean anything.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

# A corrected RMSE up to this fraction above the raw one is noise, not harm.
RMSE_TOLERANCE = 0.01
# Below this R² the fit is refused (between it and statistics.MIN_R_SQUARED, it is only warned about).
REFUSE_R_SQUARED = 0.5

TRUSTED, WARNED, UNTRUSTED = "trusted", "warned", "untrusted"


def refusal_reasons(stats) -> list[str]:
    """Plain-words reasons the fit (a statistics.FitStatistics) must not be used; empty when none apply."""
    found = []
    s = stats.softening_scale
    if not s > 0:
        found.append(f"s = {s:.4g} must be > 0: the model's forces point against the reference forces (a sign or "
                     "unit error in the labels' forces, eV/Å, or a model that fails on these structures)")
    low, high = stats.interval_95
    if s > 0 and not low > 0:
        found.append(f"the 95% interval of s [{low:.3g}, {high:.3g}] reaches s <= 0")
    if stats.r_squared < REFUSE_R_SQUARED:
        found.append(f"R² = {stats.r_squared:.2f} < {REFUSE_R_SQUARED}: model and DFT forces are too poorly related "
                     "for one scale")
    limit = 1 + RMSE_TOLERANCE
    if s > 0 and stats.force_rmse_after_eV_A > limit * stats.force_rmse_before_eV_A:
        found.append(f"the correction makes the force RMSE worse ({stats.force_rmse_before_eV_A:.4f} -> "
                     f"{stats.force_rmse_after_eV_A:.4f} eV/Å, tolerance {RMSE_TOLERANCE:.0%})")
    held = stats.held_out
    if s > 0 and held is not None and held.force_rmse_corrected_eV_A > limit * held.force_rmse_raw_eV_A:
        found.append(f"the correction makes the held-out force RMSE worse ({held.force_rmse_raw_eV_A:.4f} -> "
                     f"{held.force_rmse_corrected_eV_A:.4f} eV/Å, {held.method}, tolerance {RMSE_TOLERANCE:.0%})")
    return found


def verdict(refusals: list[str], warnings: list[str]) -> str:
    return UNTRUSTED if refusals else WARNED if warnings else TRUSTED


def trust_block(stats, accepted_untrusted: bool) -> dict:
    """The `trust` mapping of a correction file: what every run using it reports."""
    held = stats.held_out
    return {
        "verdict": verdict(stats.refusal_reasons, stats.warnings),
        "accepted_untrusted": bool(accepted_untrusted and stats.refusal_reasons),
        "refusal_reasons": list(stats.refusal_reasons),
        "warnings": list(stats.warnings),
        "fitted_force_range_eV_A": dict(stats.fitted_force_range_eV_A),
        "groups": [g.label for g in stats.per_group],
        "held_out_force_mae_eV_A": None if held is None else {
            "raw": held.force_mae_raw_eV_A, "corrected": held.force_mae_corrected_eV_A, "method": held.method},
    }


@dataclass(frozen=True)
class Trust:
    """The trust block of a correction file, as a run reads it."""

    source: str
    verdict: str
    accepted_untrusted: bool = False
    refusal_reasons: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()
    fitted_force_range_eV_A: Mapping[str, float] = field(default_factory=dict)
    groups: tuple[str, ...] = ()
    held_out_force_mae_eV_A: Mapping[str, object] | None = None

    def provenance(self) -> dict[str, object]:
        """Flat keys for job /parameters and summary.json (lists and mappings become JSON in HDF5)."""
        return {
            "correction_verdict": self.verdict,
            "correction_accepted_untrusted": self.accepted_untrusted,
            "correction_refusal_reasons": list(self.refusal_reasons),
            "correction_warnings": list(self.warnings),
            "correction_fitted_force_range_eV_A": dict(self.fitted_force_range_eV_A),
            "correction_groups": list(self.groups),
            "correction_held_out_force_mae_eV_A": dict(self.held_out_force_mae_eV_A or {}) or None,
        }

    def warning_lines(self) -> list[str]:
        """One line for a correction that is untrusted or was fitted with warnings; none for a trusted one."""
        force_range = self.fitted_force_range_eV_A
        where = (f"; fitted on per-atom |F| {force_range['min']:.2g}–{force_range['max']:.2g} eV/Å"
                 if {"min", "max"} <= set(force_range) else "")
        if self.verdict == UNTRUSTED:
            return [f"correction {self.source} is UNTRUSTED (written with --accept-untrusted): "
                    f"{'; '.join(self.refusal_reasons)}{where}"]
        if self.verdict == WARNED:
            return [f"correction {self.source} was fitted with {len(self.warnings)} warning(s): "
                    f"{'; '.join(self.warnings)}{where}"]
        return []


def read_trust(data: Mapping, source: str) -> Trust | None:
    """The trust block of a correction file's data; None for a file without one (hand-written, or older)."""
    block = data.get("trust")
    if not isinstance(block, Mapping):
        return None
    held = block.get("held_out_force_mae_eV_A")
    return Trust(
        source=source,
        verdict=str(block.get("verdict", UNTRUSTED)),
        accepted_untrusted=bool(block.get("accepted_untrusted", False)),
        refusal_reasons=tuple(str(x) for x in block.get("refusal_reasons") or ()),
        warnings=tuple(str(x) for x in block.get("warnings") or ()),
        fitted_force_range_eV_A={str(k): float(v) for k, v in (block.get("fitted_force_range_eV_A") or {}).items()},
        groups=tuple(str(x) for x in block.get("groups") or ()),
        held_out_force_mae_eV_A=dict(held) if isinstance(held, Mapping) else None,
    )


def summary_trust_lines(summary: Mapping) -> list[str]:
    """The correction's trust, from a run's summary.json, as lines for the top of report.md; empty
    for a run without a correction."""
    if summary.get("softening_scale") is None:
        return []
    head = f"correction: {summary.get('correction_source', '?')}, s = {float(summary['softening_scale']):.4g}"
    verdict_ = summary.get("correction_verdict")
    if verdict_ is None:
        return [f"{head}; no trust block (inline scale or hand-written file): not validated by driver fit"]
    lines = [f"{head}; verdict: {verdict_}"
             + (" (written with --accept-untrusted)" if summary.get("correction_accepted_untrusted") else "")]
    lines += [f"refused for: {text}" for text in summary.get("correction_refusal_reasons") or []]
    lines += [f"warning: {text}" for text in summary.get("correction_warnings") or []]
    force_range = summary.get("correction_fitted_force_range_eV_A") or {}
    if {"min", "median", "max"} <= set(force_range):
        lines.append(f"fitted on per-atom |DFT force| {force_range['min']:.3g}–{force_range['max']:.3g} eV/Å "
                     f"(median {force_range['median']:.3g}); results outside that range are extrapolations of s")
    held = summary.get("correction_held_out_force_mae_eV_A") or {}
    if "raw" in held:
        lines.append(f"held-out force MAE {held['raw']:.4f} -> {held['corrected']:.4f} eV/Å ({held.get('method', '')})")
    groups = summary.get("correction_groups") or []
    if groups:
        lines.append(f"fitted on groups: {', '.join(groups)}")
    return lines
