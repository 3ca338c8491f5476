"""Temperature schedules for MD: a ramp or step/temperature breakpoints, one job that heats or anneals.

The thermostat's target is set from the schedule after every step (ASE calls observers with the
step count already advanced), so the step from n to n+1 integrates at the target T(n). The target
is a function of the step alone: a resumed job sets T(checkpoint step) and continues exactly.
Thermostat and barostat masses stay those built for the schedule's first temperature, as an
uninterrupted run has them; only the target kT follows the schedule.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from ase.md.md import MolecularDynamics
from pydantic import Field, ValidationError, ValidationInfo, field_validator

from driver.ensembles import of_integrator
from driver.errors import SimulationError
from driver.schema import Float, Int, Strict, bounded
from driver.schema_errors import describe_error

MAX_TEMPERATURE_K = 1e5
Kelvin = bounded(gt=0, le=MAX_TEMPERATURE_K, unit="K")


class TemperatureRamp(Strict):
    """`temperature_K: {start: 300, stop: 1200, steps: 5000}`: linear over `steps`, then held."""

    start: Kelvin = Field(description="target temperature at step 0")
    stop: Kelvin = Field(description="target temperature reached at `steps`, held after")
    steps: bounded(int, ge=1, le=10**9) = Field(description="MD steps over which the target goes linearly from "
                                                "start to stop")

    @field_validator("stop")
    @classmethod
    def _really_a_ramp(cls, stop: float, info: ValidationInfo) -> float:
        # A field validator, not a model one: the union's error for a non-mapping then names this form.
        if stop == info.data.get("start"):
            raise ValueError(f"start and stop are both {stop:g} K; for a constant temperature write "
                             f"temperature_K: {stop:g}")
        return stop

    def points(self) -> tuple[tuple[int, float], ...]:
        return ((0, float(self.start)), (self.steps, float(self.stop)))


class TemperaturePoints(Strict):
    """`temperature_K: {schedule: [[0, 300], [5000, 1200], [15000, 300]]}`: [step, K] breakpoints,
    linear between them, the last one held."""

    schedule: list[tuple[Int, Float]] = Field(
        description="[step, K] breakpoints from step 0, steps increasing; linear between them, the last held")

    @field_validator("schedule")
    @classmethod
    def _increasing_positive(cls, points: list[tuple[int, float]]) -> list[tuple[int, float]]:
        if len(points) < 2:
            raise ValueError(f"needs at least two [step, K] points, got {len(points)}")
        if points[0][0] != 0:
            raise ValueError(f"must start at step 0, got [{points[0][0]}, {points[0][1]:g}]")
        for (before, _), (after, _) in zip(points, points[1:], strict=False):
            if after <= before:
                raise ValueError(f"steps must increase, got step {after} after step {before}")
        for step, kelvin in points:
            if not (math.isfinite(kelvin) and 0 < kelvin <= MAX_TEMPERATURE_K):
                raise ValueError(f"temperatures must be > 0 and <= {MAX_TEMPERATURE_K:g} K, "
                                 f"got {kelvin:g} K at step {step}")
        if len({kelvin for _, kelvin in points}) == 1:
            raise ValueError(f"every point is {points[0][1]:g} K; for a constant temperature write "
                             f"temperature_K: {points[0][1]:g}")
        return points

    def points(self) -> tuple[tuple[int, float], ...]:
        return tuple((int(step), float(kelvin)) for step, kelvin in self.schedule)


ScheduleSpec = TemperatureRamp | TemperaturePoints


def parse_schedule(value: dict) -> ScheduleSpec:
    """A mapping under temperature_K as a ramp or breakpoints, its errors as one phrase (not one per
    form that temperature_K also accepts)."""
    form = TemperaturePoints if "schedule" in value else TemperatureRamp
    try:
        return form.model_validate(value)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = first["loc"]
        if form is TemperaturePoints and len(loc) == 3:  # ("schedule", point index, 0 step / 1 K)
            first = {**first, "loc": (f"schedule point {loc[1] + 1} {('step', 'temperature')[loc[2]]}",)}
        raise ValueError(("ramp " if form is TemperatureRamp else "") + describe_error(first)) from None


@dataclass(frozen=True)
class Schedule:
    """Target temperature per step: linear between breakpoints, held after the last."""

    points: tuple[tuple[int, float], ...]

    @classmethod
    def constant(cls, kelvin: float) -> Schedule:
        return cls(((0, float(kelvin)),))

    @property
    def varies(self) -> bool:
        return len({kelvin for _, kelvin in self.points}) > 1

    @property
    def start_K(self) -> float:
        return self.points[0][1]

    @property
    def last_step(self) -> int:
        return self.points[-1][0]

    def at(self, step: int) -> float:
        steps, kelvins = zip(*self.points, strict=True)
        return float(np.interp(step, steps, kelvins))

    def label(self) -> str:
        """For job names: the temperatures passed through, e.g. T300-1200K or T300-1200-300K."""
        shape = [k for i, (_, k) in enumerate(self.points) if i == 0 or k != self.points[i - 1][1]]
        if len(shape) > 6:
            return f"T{shape[0]:g}-{max(shape):g}-{shape[-1]:g}K-{len(self.points)}points"
        return "T" + "-".join(f"{k:g}" for k in shape) + "K"


def set_target_temperature(integrator: MolecularDynamics, kelvin: float) -> None:
    ensemble = of_integrator(integrator)
    if ensemble is None or ensemble.set_target is None:
        raise SimulationError(f"{type(integrator).__name__} has no thermostat target to schedule "
                              "(driver.ensembles.ENSEMBLES)")
    ensemble.set_target(integrator, kelvin)
