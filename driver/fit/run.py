"""`driver fit`: evaluate a model on DFT-labelled structures, fit s, write correction.yaml."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import yaml

from driver.errors import InputError
from driver.fit.statistics import FitStatistics, fit_statistics
from driver.labels import LabelledStructure, files_sha256, read_labels
from driver.models import ModelPotential, load_model
from driver.provenance import now_iso, package_versions
from driver.recipe import ModelSpec


def evaluate(model: ModelPotential, structures: Sequence[LabelledStructure]) -> tuple[list[np.ndarray], list[float]]:
    """Model forces and energies of the labelled structures (batched where that pays)."""
    results = model.evaluate([s.atoms for s in structures])
    return [r.forces for r in results], [r.energy for r in results]


def correction_record(stats: FitStatistics, spec: ModelSpec, model: ModelPotential, label_files: Sequence[str],
                      energy_key: str | None, forces_key: str | None) -> dict:
    """What correction.yaml holds; `softening_scale` and `model` are what a recipe reads back."""
    return {
        "softening_scale": stats.softening_scale,
        **{k: v for k, v in stats.as_dict().items() if k != "softening_scale"},
        "model": {"name": spec.name, "variant": spec.variant, "checkpoint": spec.checkpoint,
                  "source": model.source, "weights_sha256": model.weights_sha256, "dtype": spec.dtype},
        "labels": {"files": [str(Path(f).resolve()) for f in label_files], "sha256": files_sha256(label_files),
                   "energy_key": energy_key, "forces_key": forces_key},
        "created": now_iso(),
        "package_versions": package_versions(),
    }


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
    lines += [f"WARNING: {text}" for text in stats.warnings]
    if out is not None:
        lines.append(f"written {out}; use it in a recipe as  correction: {{file: {out}}}")
    return "\n".join(lines)


def parity_plot(path: Path, model_forces, reference_forces, scale: float) -> None:
    """Model vs DFT force components, raw and corrected, with the y = x line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    model = np.concatenate([np.ravel(f) for f in model_forces])
    reference = np.concatenate([np.ravel(f) for f in reference_forces])
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
            seed: int = 0) -> tuple[FitStatistics, dict]:
    structures = read_labels(label_files, energy_key=energy_key, forces_key=forces_key)
    model = load_model(spec)
    model_forces, model_energies = evaluate(model, structures)
    try:
        stats = fit_statistics(
            model_forces, [s.forces_eV_A for s in structures], [s.atoms.get_chemical_symbols() for s in structures],
            model_energies, [s.energy_eV for s in structures], [s.formula for s in structures],
            resamples=resamples, seed=seed,
        )
    except ValueError as exc:  # every reference force zero
        raise InputError(f"{', '.join(map(str, label_files))}: {exc}") from None
    if not stats.softening_scale > 0:  # a recipe could not use it; usually a sign or unit error in the labels
        raise InputError(f"{', '.join(map(str, label_files))}: the fitted softening scale is "
                         f"{stats.softening_scale:.4g} (must be > 0): the model's forces point against the "
                         "reference forces; check the labels' force key, sign and units (eV/Å)")
    record = correction_record(stats, spec, model, label_files, energy_key, forces_key)
    if out is not None:
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(yaml.safe_dump(record, sort_keys=False))
        except OSError as exc:
            raise InputError(f"{out}: cannot write correction file ({exc.strerror})") from None
    if plot is not None:
        parity_plot(plot, model_forces, [s.forces_eV_A for s in structures], stats.softening_scale)
    return stats, record
