"""One observer for anything ASE steps (MD integrators, optimizers, NEB bands): record every N
steps, checkpoint every M, and on SIGTERM/SIGINT checkpoint the step it is at and stop. Attach it
with ASE's `dynamics.attach(observers, interval=1)` (ASE calls it after every step, and before
the first of a fresh run), or call `at(step)` from a hook that knows the step.

A step is never recorded or checkpointed twice: a resumed run starts with the step its file
already holds (`recorded_at`, `checkpointed_at`), and the final checkpoint after a run is a no-op
when the last step was just checkpointed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from driver import interrupt


@dataclass
class StepObservers:
    # The dynamics' step count (`lambda: dynamics.nsteps`) for ASE's `attach`; None for a hook that
    # calls `at(step)` itself.
    step: Callable[[], int] | None = None
    record: Callable[[], None] | None = None
    record_every: int = 1
    checkpoint: Callable[[], None] | None = None
    checkpoint_every: int | None = None  # None: checkpoint only when stopped (and by `save`)
    recorded_at: int | None = None
    checkpointed_at: int | None = None
    current: int | None = field(default=None, init=False)  # the step observed now: what record/checkpoint store

    def __call__(self) -> None:
        self.at(self.step())

    def at(self, step: int) -> None:
        self.current = step
        if self.record is not None and step % self.record_every == 0 and step != self.recorded_at:
            self.record()
            self.recorded_at = step
        if self.checkpoint_every and step % self.checkpoint_every == 0:
            self.save(step)
        if interrupt.stop_requested():  # a signal: keep this step, then stop (at a safe point)
            self.save(step)
            interrupt.raise_if_requested()

    def save(self, step: int | None = None) -> None:
        """Checkpoint now, unless this step is already checkpointed (or nothing checkpoints)."""
        if step is None:
            step = self.step() if self.step is not None else self.current
        self.current = step
        if self.checkpoint is not None and step != self.checkpointed_at:
            self.checkpoint()
            self.checkpointed_at = step
