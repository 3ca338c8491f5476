"""The study around a diffusion task's jobs: the schedule that grows them to their targets within
a wall budget, and the study's results across temperatures and variants: Arrhenius fits with
intervals, D and Nernst-Einstein σ at room temperature, raw vs corrected against the scalar
correction's exact prediction (corrected dynamics at T are raw dynamics at s·T with time scaled
by sqrt(s): D_corr(T) = D_raw(s·T)/sqrt(s), Ea_corr = Ea_raw/s).
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from driver import interrupt
from driver.analysis.arrhenius import (
    ArrheniusPosterior,
    fit_arrhenius,
    interval,
    nernst_einstein_S_cm,
    ratio_samples,
)
from driver.analysis.diffusivity import Verdict
from driver.h5read import reading
from driver.jobs import Job
from driver.output import H5MDWriter
from driver.results import WITH_RESULTS, JobStatus
from driver.tasks import JobRunner
from driver.tasks.diffusion_result import DiffusionResult, StudyState

if TYPE_CHECKING:
    from driver.tasks.diffusion import DiffusionTask

log = logging.getLogger(__name__)

HAVEN_NOTE = ("σ by Nernst–Einstein with Haven ratio 1 (ion motions assumed uncorrelated: the collective "
              "MSD does not resolve D_σ), n from the mean volume of the lowest temperature")


def haven_note(temperature_K: float, haven: dict[str, float]) -> str:
    """σ's note where the Haven ratio was measured."""
    return (f"σ by Nernst–Einstein over the Haven ratio H = {haven['median']:.2f} [{haven['low']:.2f}, "
            f"{haven['high']:.2f}] measured at {temperature_K:g} K from the collective MSD (taken as "
            "independent of T), n from the mean volume of that temperature")


# The schedule

def _on_disk(path: Path) -> tuple[dict | None, DiffusionResult | None]:
    """A job file's summary entry and stored result, where it has them."""
    if not path.exists():
        return None, None
    with reading(path) as handle:
        entry = json.loads(handle.attrs["summary_entry"]) if "summary_entry" in handle.attrs else None
        group = handle.get(f"results/{DiffusionResult.kind}")
        return entry, DiffusionResult.from_h5(group) if group is not None else None


def _stop_for_budget(job: Job, entry: dict | None, runner: JobRunner, budget_h: float) -> None:
    """Mark a job the budget stopped: interrupted, so that --resume (with more wall_hours) continues it."""
    path = runner.out_dir / f"{job.name}.h5"
    if entry is None:
        entry = _on_disk(path)[0] or {"job": job.name, "file": path.name, "variant": job.variant,
                                      "temperature_K": job.temperature_K}
        runner.entries.append(entry)
    entry.update(status=JobStatus.INTERRUPTED, state=StudyState.BUDGET,
                 error=f"the wall budget ({budget_h:g} h) is used before the target was reached; "
                       "--resume with a larger task.wall_hours continues")
    if path.exists():
        with reading(path) as handle:
            has_result = f"results/{DiffusionResult.kind}" in handle
        changes: dict[str, dict] = {"/": {"status": str(JobStatus.INTERRUPTED), "summary_entry": json.dumps(entry)}}
        if has_result:
            changes[f"results/{DiffusionResult.kind}"] = {"state": StudyState.BUDGET}
        H5MDWriter.amend(path, changes)
    log.warning("%s: stopped, %s", job.name, entry["error"])


def schedule(task, spec: DiffusionTask, jobs: list[Job], runner: JobRunner) -> None:
    """Rounds: every open job runs one segment (its first: min_ps), furthest from its target first
    (or all side by side with run.batch_replicas), until every job is done or the wall budget,
    counted over this rank's jobs across resumes, cannot pay for another segment."""
    budget_s = spec.wall_hours * 3600 if spec.wall_hours else math.inf
    stored = {job.name: _on_disk(runner.out_dir / f"{job.name}.h5")[1] for job in jobs}
    wall = {name: (result.md_wall_time_s if result else 0.0) for name, result in stored.items()}
    segment_cost: dict[str, float] = {}
    distance = {name: (result.distance_from_target if result else math.inf) for name, result in stored.items()}
    entries: dict[str, dict] = {}
    open_jobs = list(jobs)
    started = time.perf_counter()

    def affordable(job: Job) -> bool:
        return sum(wall.values()) + segment_cost.get(job.name, 0.0) <= budget_s

    def note(job: Job, entry: dict) -> None:
        entries[job.name] = entry
        previous = wall[job.name]
        if entry.get("md_wall_time_s") is not None:
            wall[job.name] = entry["md_wall_time_s"]
            segment_cost[job.name] = wall[job.name] - previous
        if entry.get("relative_half_width") is not None:
            distance[job.name] = entry["relative_half_width"] / entry["target_relative_error"]

    rounds = 0
    while open_jobs:
        interrupt.raise_if_requested()
        ordered = sorted(open_jobs, key=lambda job: -distance[job.name]) if rounds else open_jobs
        runnable = [job for job in ordered if affordable(job)]
        for job in ordered:
            if job not in runnable:
                _stop_for_budget(job, entries.get(job.name), runner, spec.wall_hours)
        if runner.together is not None and len(runnable) > 1:
            for entry in runner.together(runnable):
                note(next(job for job in runnable if job.name == entry["job"]), entry)
        else:
            for job in runnable:
                interrupt.raise_if_requested()
                if not affordable(job):
                    _stop_for_budget(job, entries.get(job.name), runner, spec.wall_hours)
                    continue
                note(job, runner.one(job))
        open_jobs = [job for job in runnable if job.name in entries and entries[job.name]["status"] == JobStatus.RUNNING]
        rounds += 1
    log.info("study: %d round(s) of segments in %.0f s", rounds, time.perf_counter() - started)


# The study's results

@dataclass
class Temperature:
    """One finished job of the study, as the Arrhenius analysis reads it."""

    job: str
    variant: str
    temperature_K: float
    result: DiffusionResult

    @property
    def usable(self) -> bool:
        return self.result.verdict == Verdict.DIFFUSIVE and self.result.diffusivity_samples_cm2_s is not None \
            and len(self.result.diffusivity_samples_cm2_s) > 0


def read_study(out_dir: Path, entries: list[dict]) -> list[Temperature]:
    """The jobs with results (their files' /results/diffusion), in temperature order."""
    from driver.results import read_result

    found = []
    for entry in entries:
        if entry.get("status") not in WITH_RESULTS | {JobStatus.INTERRUPTED}:
            continue
        path = Path(out_dir) / entry["file"]
        if not path.exists():
            continue
        try:
            result = read_result(DiffusionResult, path)
        except KeyError:
            continue
        found.append(Temperature(entry["job"], entry.get("variant", "raw"), float(entry["temperature_K"]), result))
    return sorted(found, key=lambda t: (t.variant != "raw", t.variant, t.temperature_K))


def _triple(samples: np.ndarray, confidence: float) -> dict[str, float]:
    low, median, high = interval(samples, confidence)
    return {"median": median, "low": low, "high": high}


def _variant_block(temperatures: list[Temperature], confidence: float) -> tuple[dict, ArrheniusPosterior | None]:
    usable = [t for t in temperatures if t.usable]
    excluded = {f"{t.temperature_K:g} K": f"{t.result.verdict}: {t.result.reason}" for t in temperatures if not t.usable}
    block: dict[str, object] = {"temperatures_K": [t.temperature_K for t in usable], "excluded": excluded}
    fit = fit_arrhenius([t.temperature_K for t in usable], [t.result.diffusivity_samples_cm2_s for t in usable])
    if fit is None:
        block["arrhenius"] = None
        block["why_no_fit"] = f"{len(usable)} diffusive temperature(s); an Arrhenius fit needs ≥ 2"
        return block, None
    room = temperatures[0].result.room_temperature_K
    d_room = fit.diffusivity_samples(room)
    block["arrhenius"] = {
        "activation_energy_eV": _triple(fit.activation_energy_samples_eV, confidence),
        "prefactor_cm2_s": _triple(fit.prefactor_samples(), confidence),
        "chi_square": fit.chi_square, "degrees_of_freedom": fit.degrees_of_freedom, "p_value": fit.p_value,
        "curved": fit.curved,
    }
    # an interval of Ea reaching 0 or below: the temperatures cannot tell an activated process
    block["arrhenius"]["resolved"] = block["arrhenius"]["activation_energy_eV"]["low"] > 0
    block["room_temperature_K"] = room
    block["diffusivity_room_cm2_s"] = _triple(d_room, confidence)
    coldest_temperature = min(usable, key=lambda t: t.temperature_K)
    coldest = coldest_temperature.result
    if coldest.charge_e:
        sigma = nernst_einstein_S_cm(d_room, coldest.n_mobile, coldest.mean_volume_A3, coldest.charge_e, room)
        haven = coldest.haven_samples
        if haven is not None and len(haven):  # measured at the temperature nearest room temperature
            n = min(len(sigma), len(haven))
            sigma = sigma[:n] / haven[:n]
            block["haven_ratio"] = _triple(haven, confidence)
            block["conductivity_note"] = haven_note(coldest_temperature.temperature_K, block["haven_ratio"])
        else:
            block["haven_ratio"] = None
            block["conductivity_note"] = f"{HAVEN_NOTE} ({coldest.haven_note})" if coldest.haven_note else HAVEN_NOTE
        block["conductivity_room_S_cm"] = _triple(sigma, confidence)
    else:
        block["conductivity_room_S_cm"] = None
        block["conductivity_note"] = "no σ: several mobile species, or a neutral one"
    return block, fit


def _raw_vs_corrected(study: list[Temperature], fits: dict[str, ArrheniusPosterior], scale: float | None,
                      confidence: float) -> dict[str, object]:
    raw = {t.temperature_K: t for t in study if t.variant == "raw" and t.usable}
    corrected = {t.temperature_K: t for t in study if t.variant == "corrected" and t.usable}
    rows = []
    for temperature in sorted(set(raw) & set(corrected)):
        ratio = ratio_samples(corrected[temperature].result.diffusivity_samples_cm2_s,
                              raw[temperature].result.diffusivity_samples_cm2_s)
        row: dict[str, object] = {"temperature_K": temperature, "ratio": _triple(ratio, confidence)}
        if scale and "raw" in fits:
            predicted = fits["raw"].diffusivity_samples(scale * temperature) / math.sqrt(scale)
            agreement = ratio_samples(corrected[temperature].result.diffusivity_samples_cm2_s, predicted)
            row["predicted_cm2_s"] = _triple(predicted, confidence)
            row["measured_over_predicted"] = _triple(agreement, confidence)
            row["agrees"] = row["measured_over_predicted"]["low"] <= 1 <= row["measured_over_predicted"]["high"]
        rows.append(row)
    block: dict[str, object] = {"per_temperature": rows, "softening_scale": scale}
    if "raw" in fits and "corrected" in fits:
        ea_raw, ea_corr = fits["raw"].activation_energy_samples_eV, fits["corrected"].activation_energy_samples_eV
        block["delta_activation_energy_eV"] = _triple(ea_corr - ea_raw, confidence)  # independent draws
        if scale:
            block["predicted_corrected_activation_energy_eV"] = _triple(ea_raw / scale, confidence)
            difference = _triple(ea_corr - ea_raw / scale, confidence)
            block["corrected_minus_predicted_activation_energy_eV"] = difference
            block["activation_energy_agrees"] = difference["low"] <= 0 <= difference["high"]
    return block


def analyse_study(study: list[Temperature], scale: float | None) -> tuple[dict[str, object],
                                                                        dict[str, ArrheniusPosterior]]:
    """The study block of summary.json: per variant the Arrhenius fit, D and σ at room
    temperature with intervals; raw vs corrected with the correction's predictions. Also the
    fits themselves, per variant (the compare figure draws their bands)."""
    if not study:
        return {}, {}
    confidence = study[0].result.confidence
    out: dict[str, object] = {"confidence": confidence, "variants": {}}
    fits: dict[str, ArrheniusPosterior] = {}
    for variant in ("raw", "corrected"):
        temperatures = [t for t in study if t.variant == variant]
        if temperatures:
            block, fit = _variant_block(temperatures, confidence)
            out["variants"][variant] = block
            if fit is not None:
                fits[variant] = fit
    if {"raw", "corrected"} <= {t.variant for t in study}:
        out["raw_vs_corrected"] = _raw_vs_corrected(study, fits, scale, confidence)
    return out, fits


def study_summary(out_dir: Path, entries: list[dict]) -> dict[str, object]:
    """What finalize adds to summary.json, and logs."""
    scale = next((e.get("softening_scale") for e in entries if e.get("softening_scale")), None)
    block, _ = analyse_study(read_study(out_dir, entries), scale)
    for line in study_lines(block):
        log.info("%s", line)
    return {"diffusion_study": block} if block else {}


def _fmt(triple: dict[str, float] | None, unit: str, spec: str = ".3g") -> str:
    if not triple:
        return "–"
    return f"{triple['median']:{spec}} [{triple['low']:{spec}}, {triple['high']:{spec}}] {unit}".strip()


def study_lines(block: dict[str, object]) -> list[str]:
    """The study's headline numbers in words (the run log, and driver compare)."""
    if not block:
        return []
    lines = []
    confidence = block["confidence"]
    for variant, v in block["variants"].items():
        fit = v.get("arrhenius")
        if fit is None:
            lines.append(f"{variant}: no Arrhenius fit ({v.get('why_no_fit')})")
            continue
        curved = (f" — ln D is curved in 1/T (χ² p = {fit['p_value']:.2g}): the extrapolation is doubtful"
                  if fit["curved"] else "")
        if not fit["resolved"]:
            curved += (" — Ea is not resolved (its interval reaches 0): the temperatures are too close or D too "
                       "uncertain for an extrapolation; D and σ at room temperature mean nothing here")
        lines.append(f"{variant}: Ea = {_fmt(fit['activation_energy_eV'], 'eV', '.3f')}, "
                     f"D0 = {_fmt(fit['prefactor_cm2_s'], 'cm²/s')}, "
                     f"D({v['room_temperature_K']:g} K) = {_fmt(v['diffusivity_room_cm2_s'], 'cm²/s')}, "
                     f"σ({v['room_temperature_K']:g} K) = {_fmt(v['conductivity_room_S_cm'], 'S/cm')} "
                     f"({confidence:.0%} intervals){curved}")
        for temperature, why in v["excluded"].items():
            lines.append(f"{variant}: {temperature} left out of the fit ({why})")
    relation = block.get("raw_vs_corrected")
    if relation:
        for row in relation["per_temperature"]:
            text = f"{row['temperature_K']:g} K: D_corr/D_raw = {_fmt(row['ratio'], '')}"
            if "measured_over_predicted" in row:
                text += (f"; measured/predicted D_raw(s·T)/sqrt(s) = {_fmt(row['measured_over_predicted'], '')} "
                         f"({'agrees' if row['agrees'] else 'disagrees'} within the interval)")
            lines.append(text)
        if "delta_activation_energy_eV" in relation:
            text = f"ΔEa (corrected − raw) = {_fmt(relation['delta_activation_energy_eV'], 'eV', '.3f')}"
            if "predicted_corrected_activation_energy_eV" in relation:
                text += (f"; Ea_raw/s = {_fmt(relation['predicted_corrected_activation_energy_eV'], 'eV', '.3f')} "
                         f"({'agrees' if relation['activation_energy_agrees'] else 'disagrees'} with corrected Ea)")
            lines.append(text)
    return lines
