"""`driver fit`: evaluate a model on DFT-labelled structures, fit s, write correction.yaml."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import yaml

from driver.errors import InputError
from driver.fit.statistics import FitStatistics, fit_statistics, plain_data
from driver.labels import LabelledStructure, files_sha256, read_labels
from driver.models import ModelPotential, load_model
from driver.potential import check_elements
from driver.progress import Progress
from driver.provenance import now_iso, package_versions
from driver.specs import ModelSpec
from driver.trust import trust_block

log = logging.getLogger(__name__)


PROGRESS_CHUNK = 100  # structures per progress line; batching decisions carry over between chunks


def evaluate(model: ModelPotential, structures: Sequence[LabelledStructure]) -> tuple[list[np.ndarray], list[float]]:
    """Model forces and energies of the labelled structures (batched where that pays), with
    progress: thousands of structures take minutes."""
    for structure in structures:
        check_elements(model, structure.atoms, f"{structure.source}: labels")
    progress = Progress(log, "fit: evaluating the labelled structures", len(structures), unit="structure")
    results = []
    for start in range(0, len(structures), PROGRESS_CHUNK):
        results += model.evaluate([s.atoms for s in structures[start:start + PROGRESS_CHUNK]])
        progress.update(len(results))
    progress.finish()
    return [r.forces for r in results], [r.energy for r in results]


def correction_record(stats: FitStatistics, spec: ModelSpec, model: ModelPotential, label_files: Sequence[str],
                      energy_key: str | None, forces_key: str | None, accepted_untrusted: bool = False) -> dict:
    """What correction.yaml holds; `softening_scale`, `model` and `trust` are what a recipe reads back."""
    return plain_data({
        "softening_scale": stats.softening_scale,
        "trust": trust_block(stats, accepted_untrusted),
        **{k: v for k, v in stats.as_dict().items() if k != "softening_scale"},
        "model": {"name": spec.name, "variant": spec.variant, "checkpoint": spec.checkpoint,
                  "source": model.source, "weights_sha256": model.weights_sha256, "dtype": spec.dtype},
        "labels": {"files": [str(Path(f).resolve()) for f in label_files], "sha256": files_sha256(label_files),
                   "energy_key": energy_key, "forces_key": forces_key},
        "created": now_iso(),
        "package_versions": package_versions(),
    })


def format_fit_report(stats: FitStatistics, out: Path | None) -> str:
    low, high = stats.interval_95
    lines = [
        f"softening scale s = {stats.softening_scale:.4f}  (95% interval {low:.4f} – {high:.4f}, {stats.interval_method})",
        f"  from {stats.n_structures} structure(s), {stats.n_force_components} force components, R² = {stats.r_squared:.3f}, "
        f"mean |DFT force| {stats.mean_abs_reference_force_eV_A:.2f} eV/Å",
        f"  force MAE  {stats.force_mae_before_eV_A:.4f} -> {stats.force_mae_after_eV_A:.4f} eV/Å   "
        f"RMSE {stats.force_rmse_before_eV_A:.4f} -> {stats.force_rmse_after_eV_A:.4f} eV/Å  (raw -> corrected)",
    ]
    if stats.energy_mae_before_eV_atom is not None:
        lines.append(f"  relative-energy MAE {1000 * stats.energy_mae_before_eV_atom:.1f} -> "
                     f"{1000 * stats.energy_mae_after_eV_atom:.1f} meV/atom over {stats.n_structures_energy} structures")
    if len(stats.per_element) > 1:
        lines.append("  per element: " + ", ".join(
            f"{el} {v['softening_scale']:.3f}" if v["softening_scale"] is not None else f"{el} n/a (no force)"
            for el, v in stats.per_element.items()))
    held = stats.held_out
    if held is not None:
        lines.append(f"  held-out force MAE {held.force_mae_raw_eV_A:.4f} -> {held.force_mae_corrected_eV_A:.4f} eV/Å, "
                     f"RMSE {held.force_rmse_raw_eV_A:.4f} -> {held.force_rmse_corrected_eV_A:.4f} eV/Å ({held.method}"
                     + (f"; {held.n_folds_without_slope} fold(s) fitted no usable s > 0 and count as raw"
                        if held.n_folds_without_slope else "") + ")")
    point = stats.one_point
    if point is not None:
        s_low, s_high = point.softening_scale_5_95
        m_low, m_high = point.held_out_force_mae_corrected_5_95_eV_A
        lines.append(f"  one-point (s from each single structure, judged on the others, {point.n_structures} choices): "
                     f"s median {point.softening_scale_median:.3f} (5–95% {s_low:.3f} – {s_high:.3f}); held-out MAE "
                     f"{point.held_out_force_mae_raw_median_eV_A:.4f} -> {point.held_out_force_mae_corrected_median_eV_A:.4f} "
                     f"eV/Å (corrected 5–95% {m_low:.4f} – {m_high:.4f})")
    for subsets, title in ((stats.per_force_bin, "per |DFT force| bin"), (stats.per_group, f"per {stats.group_key}")):
        if subsets:
            lines.append(f"  s {title}: " + ", ".join(_subset_text(subset) for subset in subsets))
    lines += [f"WARNING: {text}" for text in stats.warnings]
    if stats.refusal_reasons:
        lines += [f"UNTRUSTED: {text}" for text in stats.refusal_reasons]
    if out is not None:
        lines.append(f"written {out}; use it in a recipe as  correction: {{file: {out}}}")
    return "\n".join(lines)


def _subset_text(subset) -> str:
    if subset.softening_scale is None:
        return f"{subset.label} n/a (no force)"
    interval = f" [{subset.interval_95[0]:.3f}, {subset.interval_95[1]:.3f}]" if subset.interval_95 else ""
    return f"{subset.label} {subset.softening_scale:.3f}{interval}"


def parity_plot(path: Path, model_forces, reference_forces, scale: float, stats: FitStatistics | None = None) -> None:
    """Model vs DFT force components, raw and corrected, with the y = x line; beside it (with `stats`)
    the slope per |DFT force| bin with its 95% interval and the overall s."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    model = np.concatenate([np.ravel(f) for f in model_forces])
    reference = np.concatenate([np.ravel(f) for f in reference_forces])
    bins = [b for b in (stats.per_force_bin if stats else []) if b.softening_scale is not None]
    if bins:
        figure, (axis, regime) = plt.subplots(1, 2, figsize=(9, 4.5), dpi=120)
        centres = np.arange(len(bins))
        values = np.array([b.softening_scale for b in bins])
        errors = np.array([[b.softening_scale - b.interval_95[0], b.interval_95[1] - b.softening_scale]
                           if b.interval_95 else [0.0, 0.0] for b in bins]).T
        regime.errorbar(centres, values, yerr=errors, fmt="o", capsize=4, label="s in bin (95% interval)")
        regime.axhline(scale, color="k", ls="--", lw=1, label=f"overall s = {scale:.3f}")
        regime.set_xticks(centres, [b.label.removeprefix("|F| ").removesuffix(" eV/Å") for b in bins], fontsize=7)
        regime.set(xlabel="per-atom |DFT force| bin (eV/Å)", ylabel="softening scale s")
        regime.legend(fontsize=8)
    else:
        figure, axis = plt.subplots(figsize=(4.5, 4.5), dpi=120)
    axis.scatter(reference, model, s=3, alpha=0.4, label="raw model")
    axis.scatter(reference, model / scale, s=3, alpha=0.4, label=f"corrected (÷ s = {scale:.3f})")
    limit = float(max(np.abs(reference).max(), np.abs(model / scale).max())) * 1.05
    axis.plot([-limit, limit], [-limit, limit], "k--", lw=1, label="y = x")
    axis.set(xlabel="DFT force component (eV/Å)", ylabel="model force component (eV/Å)",
             xlim=(-limit, limit), ylim=(-limit, limit), aspect="equal")
    axis.legend(loc="upper left", fontsize=8)
    figure.tight_layout()
    try:
        figure.savefig(path)
    except OSError as exc:
        raise InputError(f"{path}: cannot write plot ({exc.strerror})") from None
    finally:
        plt.close(figure)


def run_fit(spec: ModelSpec, label_files: Sequence[str], out: Path | None = None, *, energy_key: str | None = None,
            forces_key: str | None = None, plot: Path | None = None, resamples: int = 1000,
            seed: int = 0, group_key: str = "config_type",
            accept_untrusted: bool = False) -> tuple[FitStatistics, dict]:
    """Fit, validate and judge; write `out` unless the correction is refused: then UntrustedCorrection,
    which carries the statistics for the report (`accept_untrusted` writes it anyway unless s <= 0)."""
    structures = read_labels(label_files, energy_key=energy_key, forces_key=forces_key)
    model = load_model(spec)
    model_forces, model_energies = evaluate(model, structures)
    try:
        stats = fit_statistics(
            model_forces, [s.forces_eV_A for s in structures], [s.atoms.get_chemical_symbols() for s in structures],
            model_energies, [s.energy_eV for s in structures], [s.formula for s in structures],
            resamples=resamples, seed=seed, group_key=group_key,
            groups=[None if s.atoms.info.get(group_key) is None else str(s.atoms.info[group_key]) for s in structures],
        )
    except ValueError as exc:  # every reference force zero
        raise InputError(f"{', '.join(map(str, label_files))}: {exc}") from None
    if plot is not None and stats.softening_scale > 0:  # the plot shows what was refused, too
        parity_plot(plot, model_forces, [s.forces_eV_A for s in structures], stats.softening_scale, stats)
    if stats.refusal_reasons and (not accept_untrusted or not stats.softening_scale > 0):
        raise UntrustedCorrection(label_files, stats)
    record = correction_record(stats, spec, model, label_files, energy_key, forces_key, accept_untrusted)
    if out is not None:
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(yaml.safe_dump(record, sort_keys=False))
        except OSError as exc:
            raise InputError(f"{out}: cannot write correction file ({exc.strerror})") from None
    return stats, record


class UntrustedCorrection(InputError):
    """The fitted correction would harm (trust.refusal_reasons): nothing is written. Carries the statistics
    so the caller can still show the report."""

    def __init__(self, label_files: Sequence[str], stats: FitStatistics):
        self.stats = stats
        override = ("not even with --accept-untrusted: a recipe cannot use s <= 0" if not stats.softening_scale > 0
                    else "--accept-untrusted writes it anyway")
        super().__init__(f"{', '.join(map(str, label_files))}: correction refused, nothing written: "
                         f"{'; '.join(stats.refusal_reasons)} ({override})")
