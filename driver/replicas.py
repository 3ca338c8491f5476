"""Batched replica MD (`run.batch_replicas: true`): a rank's MD jobs integrated side by side,
the forces of all replicas evaluated in one batched model call per step.

Each replica runs the ordinary MD job (its own ASE integrator, H5MD file, checkpoints and
explosion checks) in a thread of its own. Its base potential is a `ReplicaPotential` that hands
its structure to a shared `BatchGate` and waits; once every replica still running has asked, one
batched call of the model potential evaluates them all (a corrected job wraps its
ReplicaPotential in the correction like any other potential). ASE's integrators stay as
they are; torch releases the GIL while it computes, and the Python around it is a small part of a
step. A replica that finishes, fails or explodes leaves the gate, and the others go on.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence

from ase import Atoms

from driver import interrupt
from driver.jobs import Job
from driver.potential import (
    ENERGY_FORCES,
    PROPERTIES,
    Potential,
    Property,
    Results,
    check_properties,
)

log = logging.getLogger(__name__)


class BatchGate:
    """Collects one structure per running replica, then evaluates them in one model call."""

    def __init__(self, model: Potential, replicas: int, stress: bool):
        self.model = model
        self.properties: tuple[Property, ...] = PROPERTIES if stress else ENERGY_FORCES
        self.calls = 0  # batched model calls made
        self.structures = 0  # structures evaluated in them
        self._condition = threading.Condition()
        self._running = set(range(replicas))
        self._pending: dict[int, Atoms] = {}
        self._results: dict[int, dict | BaseException] = {}

    def evaluate(self, replica: int, atoms: Atoms) -> Results:
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
            results: list = self.model.evaluate(list(batch.values()), self.properties, batched=True)
        except Exception as exc:  # every replica in the batch sees the model's error
            results = [exc] * len(batch)
        self.calls += 1
        self.structures += len(batch)
        self._results.update(zip(batch, results, strict=True))
        self._condition.notify_all()


class ReplicaPotential(Potential):
    """One replica's view of the shared model: asks the gate instead of the model."""

    def __init__(self, gate: BatchGate, replica: int):
        self.gate, self.replica = gate, replica
        self.device = gate.model.device

    def evaluate(self, structures, properties=ENERGY_FORCES, *, batched="auto", batch_size=None):
        wanted = check_properties(properties)
        if "stress" in wanted and "stress" not in self.gate.properties:
            raise ValueError("stress asked of a replica gate that evaluates energy and forces only")
        return [self.gate.evaluate(self.replica, atoms) for atoms in structures]

    def provenance(self) -> dict[str, object]:
        return self.gate.model.provenance()

    def unsupported_elements(self, atoms) -> list[str]:
        return self.gate.model.unsupported_elements(atoms)

    def energy_is_defined(self, atoms, reference) -> bool:
        return self.gate.model.energy_is_defined(atoms, reference)


def run_together(jobs: Sequence[Job], model: Potential, stress: bool,
                 run_one: Callable[[Job, Potential], None]) -> BatchGate:
    """Run `run_one(job, base_potential_for_that_job)` for every job at once, one thread each, the
    base potentials sharing one gate. Exceptions come back to the caller: an interruption first, then
    the first other error."""
    gate = BatchGate(model, len(jobs), stress)
    errors: list[BaseException | None] = [None] * len(jobs)

    def replica(index: int, job: Job) -> None:
        try:
            run_one(job, ReplicaPotential(gate, index))
        except BaseException as exc:  # handed to the main thread below
            errors[index] = exc
        finally:
            gate.leave(index)

    threads = [threading.Thread(target=replica, args=(i, job), name=f"replica-{job.name}")
               for i, job in enumerate(jobs)]
    log.info("integrating %d replicas together, one batched model call per step", len(jobs))
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
