"""The fit's validation, regime and refusal numbers on synthetic force arrays: exact identities and
direct numpy, no model (driver/fit/validation.py, driver/trust.py)."""

from __future__ import annotations

import numpy as np
import pytest

from driver.fit import validation
from driver.fit.statistics import fit_statistics
from driver.trust import (
    REFUSE_R_SQUARED,
    UNTRUSTED,
    WARNED,
    read_trust,
    summary_trust_lines,
    trust_block,
)


def _structures(n, atoms=8, seed=0, amplitude=1.0):
    rng = np.random.default_rng(seed)
    return [amplitude * rng.normal(size=(atoms, 3)) for _ in range(n)]


def _stats(model, reference, groups=None):
    return fit_statistics(model, reference, [["Si"] * len(m) for m in model], resamples=200, seed=1,
                          groups=groups, group_key="config_type" if groups else None)


@pytest.mark.parametrize("n", [2, 7, 20, 33])
def test_labels_that_are_the_model_over_s_validate_exactly(n):
    """reference = model / s exactly: every fold, every single structure and every bin fits s; the
    corrected held-out error is zero; nothing is refused."""
    s = 0.71
    model = _structures(n)
    reference = [m / s for m in model]
    held = validation.cross_validate(model, reference)
    assert held.force_mae_corrected_eV_A == pytest.approx(0, abs=1e-12)
    assert held.force_rmse_corrected_eV_A == pytest.approx(0, abs=1e-12)
    assert held.method.startswith("leave-one-out" if n <= 20 else "10-fold") and held.n_folds == (n if n <= 20 else 10)
    point = validation.one_point(model, reference)
    assert point.softening_scale_median == pytest.approx(s) and point.softening_scale_5_95 == pytest.approx((s, s))
    assert point.held_out_force_mae_corrected_median_eV_A == pytest.approx(0, abs=1e-12)
    bins = validation.slopes_per_force_bin(model, reference, resamples=50)
    assert len(bins) == 4 and all(b.softening_scale == pytest.approx(s) for b in bins)
    assert sum(b.n_force_components for b in bins) == 3 * 8 * n
    stats = _stats(model, reference)
    assert stats.refusal_reasons == [] and not any("differs between" in w for w in stats.warnings)


def test_cross_validation_equals_direct_loops():
    rng = np.random.default_rng(3)
    reference = _structures(5, seed=4)
    model = [0.8 * r + 0.3 * rng.normal(size=r.shape) for r in reference]
    held = validation.cross_validate(model, reference)
    raw, corrected = [], []
    for i in range(5):
        m_train = np.concatenate([model[j].ravel() for j in range(5) if j != i])
        r_train = np.concatenate([reference[j].ravel() for j in range(5) if j != i])
        s = m_train @ r_train / (r_train @ r_train)
        raw.append(model[i].ravel() - reference[i].ravel())
        corrected.append(model[i].ravel() / s - reference[i].ravel())
    raw, corrected = np.concatenate(raw), np.concatenate(corrected)
    assert held.force_mae_raw_eV_A == pytest.approx(np.abs(raw).mean())
    assert held.force_mae_corrected_eV_A == pytest.approx(np.abs(corrected).mean())
    assert held.force_rmse_corrected_eV_A == pytest.approx(np.sqrt((corrected ** 2).mean()))


def test_k_fold_holds_every_structure_out_once():
    """Above 20 structures: 10 folds, each structure held out exactly once, so the pooled held-out raw
    error equals the in-sample raw error."""
    reference = _structures(45, seed=5)
    model = [0.6 * r + 0.2 * np.random.default_rng(i).normal(size=r.shape) for i, r in enumerate(reference)]
    folds, _ = validation.fold_assignment(45)
    assert sorted(np.bincount(folds)) == [4] * 5 + [5] * 5
    held = validation.cross_validate(model, reference)
    m, r = np.concatenate([x.ravel() for x in model]), np.concatenate([x.ravel() for x in reference])
    assert held.force_mae_raw_eV_A == pytest.approx(np.abs(m - r).mean())
    assert held.force_rmse_raw_eV_A == pytest.approx(np.sqrt(((m - r) ** 2).mean()))


def test_one_point_equals_direct_loops():
    reference = _structures(6, seed=6)
    model = [(0.5 + 0.1 * i) * r for i, r in enumerate(reference)]
    point = validation.one_point(model, reference)
    scales, corrected = [], []
    for i in range(6):
        s = (model[i].ravel() @ reference[i].ravel()) / (reference[i].ravel() @ reference[i].ravel())
        scales.append(s)
        corrected.append(np.mean(np.concatenate([np.abs(model[j] / s - reference[j]).ravel() for j in range(6) if j != i])))
    assert point.softening_scale_median == pytest.approx(np.median(scales))
    assert point.softening_scale_5_95 == pytest.approx(tuple(np.percentile(scales, [5, 95])))
    assert point.held_out_force_mae_corrected_median_eV_A == pytest.approx(np.median(corrected))
    assert point.n_structures == 6 and point.n_positive_slopes == 6


def test_groups_with_different_slopes_warn_and_bins_record_the_range():
    reference = _structures(12, seed=7)
    model = [(0.5 if i < 6 else 0.9) * r for i, r in enumerate(reference)]
    groups = ["AIMD"] * 6 + ["Surface"] * 6
    stats = _stats(model, reference, groups)
    assert [(g.label, round(g.softening_scale, 9), g.n_structures) for g in stats.per_group] == [
        ("AIMD", 0.5, 6), ("Surface", 0.9, 6)]
    assert any(w.startswith("s differs between groups (config_type)") for w in stats.warnings)
    norms = np.concatenate([np.linalg.norm(r, axis=1) for r in reference])
    assert stats.fitted_force_range_eV_A["max"] == pytest.approx(norms.max())
    assert stats.fitted_force_range_eV_A["min"] == pytest.approx(norms.min())
    assert validation.slopes_per_group(model, reference, [None] * 12) == []  # no groups named


def test_refusals_each_name_their_reason():
    reference = _structures(6, seed=8)
    rng = np.random.default_rng(9)
    # Against the labels: s < 0 and its interval too.
    flipped = _stats([-0.7 * r for r in reference], reference)
    assert any("must be > 0" in text for text in flipped.refusal_reasons)
    # Unrelated forces: R² below the threshold.
    noise = _stats([0.05 * r + rng.normal(size=r.shape) for r in reference], reference)
    assert any(f"< {REFUSE_R_SQUARED}" in text for text in noise.refusal_reasons)
    # R² acceptable, but m/s is worse than m: s = 0.5 with residual noise 0.4 (see trust.py: RMSE is judged).
    worse = _stats([0.5 * r + 0.4 * rng.normal(size=r.shape) for r in reference], reference)
    assert worse.r_squared > REFUSE_R_SQUARED
    assert worse.force_rmse_after_eV_A > worse.force_rmse_before_eV_A
    assert any("makes the force RMSE worse" in text for text in worse.refusal_reasons)
    assert any("held-out force RMSE worse" in text for text in worse.refusal_reasons)


def test_a_stiff_model_is_allowed_with_its_warning():
    reference = _structures(6, seed=10)
    stats = _stats([1.2 * r for r in reference], reference)
    assert stats.refusal_reasons == [] and any("s = 1.200 > 1" in w for w in stats.warnings)


def test_rmse_judges_phonon_like_labels_where_mae_misleads():
    """Many near-zero components and a few large ones (finite displacements): the MAE can rise while
    the RMSE, which the fit minimises, falls; that is not a refusal."""
    rng = np.random.default_rng(11)
    reference = []
    for _ in range(3):
        r = rng.normal(0, 1e-4, size=(64, 3))
        r[0] = [0.008, -0.006, 0.004]
        reference.append(r)
    model = [0.6 * r + rng.normal(0, 1e-4, size=r.shape) for r in reference]
    stats = _stats(model, reference)
    assert stats.force_mae_after_eV_A > stats.force_mae_before_eV_A
    assert stats.force_rmse_after_eV_A < stats.force_rmse_before_eV_A
    assert not any("RMSE worse" in text for text in stats.refusal_reasons)


def test_trust_block_round_trips_into_runs():
    reference = _structures(4, seed=12)
    stats = _stats([0.05 * r + np.random.default_rng(1).normal(size=r.shape) for r in reference], reference)
    block = trust_block(stats, accepted_untrusted=True)
    assert block["verdict"] == UNTRUSTED and block["accepted_untrusted"] is True
    trust = read_trust({"softening_scale": 0.5, "trust": block}, "c.yaml")
    (line,) = trust.warning_lines()
    assert line.startswith("correction c.yaml is UNTRUSTED (written with --accept-untrusted): ") and "\n" not in line
    provenance = trust.provenance()
    assert provenance["correction_verdict"] == UNTRUSTED and provenance["correction_refusal_reasons"]
    lines = summary_trust_lines({"softening_scale": 0.5, "correction_source": "c.yaml", **provenance})
    assert lines[0] == "correction: c.yaml, s = 0.5; verdict: untrusted (written with --accept-untrusted)"
    assert any(x.startswith("held-out force MAE") for x in lines)
    assert read_trust({"softening_scale": 0.5}, "hand.yaml") is None
    assert "no trust block" in summary_trust_lines({"softening_scale": 0.8, "correction_source": "recipe"})[0]
    assert summary_trust_lines({}) == []
    warned = read_trust({"trust": {"verdict": WARNED, "warnings": ["a", "b"]}}, "w.yaml")
    assert warned.warning_lines() == ["correction w.yaml was fitted with 2 warning(s): a; b"]
