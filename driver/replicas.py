"""Batched replica MD (`run.batch_replicas: true`): a rank's MD jobs integrated side by side,
the forces of all replicas evaluated in one batched model call per step.

Each replica runs the ordinary MD job (its own ASE integrator, H5MD file, checkpoints and
explosion checks) in a thread of its own. Its calculator is a `ReplicaCalculator` that hands its
structure to a shared `BatchGate` and waits; once every replica still running has asked, one
model call (driver.models.batch.evaluate_batch) evaluates them all. ASE's integrators stay as
they are; torch releases the GIL while it computes, and the Python around it is a small part of a
step. A replica that finishes, fails or explodes leaves the gate, and the others go on.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Callable, Sequence

from ase import Atoms
from ase.calculators.calculator import Calculator, all_changes

from driver import interrupt
from driver.jobs import Job
from driver.models import LoadedModel
from driver.models.batch import evaluate_batch

log = logging.getLogger(__name__)


class BatchGate:
    """Collects one structure per running replica, then evaluates them in one model call."""

    def __init__(self, model: LoadedModel, replicas: int, stress: bool):
        self.model = model
        self.stress = stress
        self.calls = 0  # batched model calls made
        self.structures = 0  # structures evaluated in them
        self._condition = threading.Condition()
        self._running = set(range(replicas))
        self._pending: dict[int, Atoms] = {}
        self._results: dict[int, dict | BaseException] = {}

    def evaluate(self, replica: int, atoms: Atoms) -> dict:
        with self._condition:
            self._pending[replica] = atoms.copy()
            self._evaluate_if_all_asked()
            while replica not in self._results:
                self._condition.wait()
            result = self._results.pop(replica)
        if isinstance(result, BaseException):
            raise result
        return result

    def leave(self, replica: int) -> None:
        with self._condition:
            self._running.discard(replica)
            self._evaluate_if_all_asked()

    def _evaluate_if_all_asked(self) -> None:
        """Called with the lock held; the replicas that asked are waiting anyway."""
        if not self._pending or not self._running <= set(self._pending):
            return
        batch, self._pending = self._pending, {}
        try:
            results: list = evaluate_batch(self.model, list(batch.values()), stress=self.stress)
        except Exception as exc:  # every replica in the batch sees the model's error
            results = [exc] * len(batch)
        self.calls += 1
        self.structures += len(batch)
        self._results.update(zip(batch, results, strict=True))
        self._condition.notify_all()


class ReplicaCalculator(Calculator):
    """One replica's view of the shared model: asks the gate instead of the model."""

    implemented_properties = ["energy", "free_energy", "forces", "stress"]

    def __init__(self, gate: BatchGate, replica: int):
        super().__init__()
        self.gate, self.replica = gate, replica

    def calculate(self, atoms: Atoms | None = None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        result = self.gate.evaluate(self.replica, self.atoms)
        self.results = {"energy": result["energy"], "free_energy": result["energy"], "forces": result["forces"]}
        if "stress" in result:
            self.results["stress"] = result["stress"]


def run_together(jobs: Sequence[Job], model: LoadedModel, stress: bool,
                 run_one: Callable[[Job, LoadedModel], None]) -> BatchGate:
    """Run `run_one(job, model_for_that_job)` for every job at once, one thread each, the models'
    calculators sharing one gate. Exceptions come back to the caller: an interruption first, then
    the first other error."""
    gate = BatchGate(model, len(jobs), stress)
    errors: list[BaseException | None] = [None] * len(jobs)

    def replica(index: int, job: Job) -> None:
        try:
            run_one(job, dataclasses.replace(model, calculator=ReplicaCalculator(gate, index)))
        except BaseException as exc:  # handed to the main thread below
            errors[index] = exc
        finally:
            gate.leave(index)

    threads = [threading.Thread(target=replica, args=(i, job), name=f"replica-{job.name}")
               for i, job in enumerate(jobs)]
    log.info("integrating %d replicas together, one batched %s call per step", len(jobs), model.family)
    with interrupt.deferred():  # a signal now stops every replica at its next step, with a checkpoint
        for thread in threads:
            thread.start()
        for thread in threads:
            while thread.is_alive():
                thread.join(timeout=0.5)
    log.info("%d batched model calls for %d structures (%.1f per call)", gate.calls, gate.structures,
             gate.structures / max(gate.calls, 1))
    raised = [exc for exc in errors if exc is not None]
    for exc in raised:
        if isinstance(exc, KeyboardInterrupt):
            raise exc
    if raised:
        raise raised[0]
    return gate
