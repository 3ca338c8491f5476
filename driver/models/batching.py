"""How many structures go into one model call: sized by memory, and `batched: auto` decided on a
small probe of the work itself.

Every path that hands a model many structures (fit, single points, phonon supercells, NEB
images, EOS/elastic points, replicas, sample) goes through `ModelPotential.evaluate`, and so
through here:
- `BatchPlanner` cuts the structures, in order, into batches whose atoms times the measured
  bytes per atom (the first calls' peak, driver.memory.PeakMemory) fit a budget: a fraction of the
  memory available now (DRIVER_MEMORY_FRACTION, default half). An explicit `batch_size` still caps
  the count. An out-of-memory error halves the batch and retries it, logged; one structure that
  does not fit is a ResourceError. On the CPU, where the kernel kills rather than raises, the
  process's resident size is watched as well and batches shrink when it outgrows the budget. Before, `batched` handed over everything at once: 200 Si
  structures made one 12,800-atom CHGNet call that the kernel killed at 24 GB.
- `AutoBatching` times a few structures one by one and a few batched (k = n/20, 2 to 16; the
  first batched k of a kind run untimed, as set-up), keeps those results (nothing is computed
  twice), and runs the rest the faster way. The choice is
  kept per kind of structure (properties, size class), so a job calling again (NEB images at every
  step) decides once. Both ways give the same results (tests/models/test_batching.py).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ase import Atoms

from driver.errors import ResourceError, first_line, is_out_of_memory
from driver.memory import (
    MemoryBudget,
    PeakMemory,
    gib,
    peak_resident_bytes,
    release_free_memory,
    reset_peak_resident,
    resident_bytes,
)
from driver.potential import Results

log = logging.getLogger(__name__)

SAFETY = 1.25  # measured peaks are sampled; leave room for what the sampler missed
PROBE_SHARE = 20  # k = n / PROBE_SHARE structures per way: deciding costs at most 2k(r - 1)/n of the work
MAX_PROBE = 16

Call = Callable[[list[Atoms]], list[Results]]


class BatchPlanner:
    """Batches bounded by a memory budget, from bytes per atom measured on this model's own calls
    (or the family's figure, ModelFamily.memory_per_atom_mb, where nothing can be measured)."""

    def __init__(self, device: str, budget: Callable[[str], MemoryBudget] = MemoryBudget.for_device,
                 fallback_bytes_per_atom: float | None = None):
        self.device = device
        self.budget = budget
        self.fallback_bytes_per_atom = fallback_bytes_per_atom
        self.bytes_per_atom: float | None = None  # measured: a call's transient peak per atom
        self.max_atoms_after_oom: int | None = None  # after an out-of-memory error, or the process outgrowing the budget
        self._batched_measured = False  # tried on a batched call (measurable or not)
        self._probed = False  # tried on a single call
        self._warned_unbounded = False
        self._budget: MemoryBudget | None = None  # fixed at first use: later, our own heap is "used"
        self._resident_before: int | None = None  # the process's size before its first batched call
        self._peak_acted_on = 0

    def measured(self, call: Callable[[], list[Results]], n_atoms: int, batched: bool) -> list[Results]:
        """`call()`, its transient peak recorded for the first single call and the first batched
        one (which replaces it: a batch's figure is the one batches are planned with)."""
        if self._batched_measured if batched else self._probed:
            return call()
        with PeakMemory(self.device) as peak:
            results = call()
        if peak.transient_bytes and n_atoms:  # 0 or None: not measurable here (another allocator)
            per_atom = peak.transient_bytes / n_atoms
            if batched or self.bytes_per_atom is None:
                self.bytes_per_atom = per_atom
        if batched:
            self._batched_measured = True
        else:
            self._probed = True
        return results

    def max_atoms(self) -> tuple[int | None, MemoryBudget | None]:
        """Atoms one batch may hold now, and the budget it came from (None: nothing to go by)."""
        limits = [self.max_atoms_after_oom] if self.max_atoms_after_oom else []
        per_atom = self.bytes_per_atom or self.fallback_bytes_per_atom
        budget = None
        if per_atom:
            budget = self.fixed_budget()
            limits.append(max(int(budget.bytes / (SAFETY * per_atom)), 1))
        elif not self._warned_unbounded:
            self._warned_unbounded = True
            log.warning("batches: no memory figure for this model on %s (not measurable here, none declared); "
                        "batches are bounded by batch_size only", self.device)
        return (min(limits) if limits else None), budget

    def fixed_budget(self) -> MemoryBudget:
        if self._budget is None:
            self._budget = self.budget(self.device)
        return self._budget

    def plan(self, sizes: Sequence[int], batch_size: int | None) -> list[range]:
        """Consecutive index ranges: each at most `batch_size` structures and the atom limit
        (a structure larger than the limit alone)."""
        limit, _ = self.max_atoms()
        batches, start, atoms = [], 0, 0
        for index, size in enumerate(sizes):
            full = (batch_size is not None and index - start >= batch_size) or (
                limit is not None and index > start and atoms + size > limit)
            if full:
                batches.append(range(start, index))
                start, atoms = index, 0
            atoms += size
        if start < len(sizes):
            batches.append(range(start, len(sizes)))
        return batches

    def run(self, structures: list[Atoms], call: Call, batch_size: int | None) -> list[Results]:
        """All structures through `call` in planned batches, in order. Unmeasured, the first
        structure goes alone (the probe). An out-of-memory batch is halved and retried."""
        results: list[Results] = []
        done, logged = 0, False
        while done < len(structures):
            rest = structures[done:]
            if not self._probed and len(rest) > 1:
                count = 1
            else:
                planned = self.plan([len(atoms) for atoms in rest], batch_size)
                if not logged:
                    self._log_plan(rest, planned)
                    logged = True
                count = len(planned[0])
            batch = rest[:count]
            n_atoms = sum(len(atoms) for atoms in batch)
            if count > 1 and self._resident_before is None and not self.device.startswith("cuda"):
                reset_peak_resident()  # the peak to watch is from here on
                self._resident_before = resident_bytes()
                self._peak_acted_on = peak_resident_bytes() or 0
            try:
                results += self.measured(lambda batch=batch: call(batch), n_atoms, batched=count > 1)
            except Exception as exc:
                if not is_out_of_memory(exc):
                    raise
                self._recover(exc, batch, n_atoms)
                logged = False
                continue
            done += count
            if count > 1:
                self._check_resident(n_atoms)
        return results

    def _check_resident(self, n_atoms: int) -> None:
        """On the CPU the kept heap (driver.memory.tune_allocator) can hold more than a call's live
        peak when batches of different sizes follow one another. When the process's peak size
        (VmHWM) has grown by more than the budget since its first batched call, and has grown
        since the planner last acted on it, batches shrink in proportion and the free heap goes
        back to the kernel."""
        peak = peak_resident_bytes()
        if self._resident_before is None or peak is None or peak <= self._peak_acted_on:  # no new peak
            return
        budget = self.fixed_budget()
        grown = peak - self._resident_before
        if grown <= budget.bytes:
            return
        self._peak_acted_on = peak
        limit = max(int(0.9 * n_atoms * budget.bytes / grown), 1)
        if self.max_atoms_after_oom is None or limit < self.max_atoms_after_oom:
            self.max_atoms_after_oom = limit
            log.info("batches: the process grew by %s at its peak, more than the budget (%s), after a batch of "
                     "%d atoms; batches now at most %d atoms", gib(grown), gib(budget.bytes), n_atoms, limit)
        release_free_memory()

    def _recover(self, exc: BaseException, batch: list[Atoms], n_atoms: int) -> None:
        _release_device_cache(self.device)
        if len(batch) == 1:
            raise ResourceError(f"one structure of {n_atoms} atoms does not fit in memory on {self.device} "
                                f"({first_line(exc)}); use a smaller cell or a device with more memory") from None
        self.max_atoms_after_oom = max(n_atoms // 2, 1)
        log.warning("out of memory on a batch of %d structures (%d atoms) on %s; retrying with at most %d atoms "
                    "per batch (%s)", len(batch), n_atoms, self.device, self.max_atoms_after_oom, first_line(exc))

    def _log_plan(self, structures: list[Atoms], planned: list[range]) -> None:
        if len(planned) <= 1:
            return
        limit, budget = self.max_atoms()
        per_atom = self.bytes_per_atom or self.fallback_bytes_per_atom or 0
        how = "measured" if self.bytes_per_atom else "declared for the family"
        log.info("batches: %d structures (%d atoms) in %d model calls of at most %s atoms "
                 "(%.2f MB/atom %s, budget %s)", len(structures), sum(len(a) for a in structures),
                 len(planned), limit, per_atom / 2**20, how,
                 f"{gib(budget.bytes)} = {budget.source}" if budget else "none")


def _release_device_cache(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.empty_cache()


@dataclass
class _Timing:
    """Seconds per atom of each way on a kind of structure, from real calls."""

    one_by_one: float | None = None
    batched: float | None = None
    batch_warmed: bool = False
    choice: bool | None = None


def kind_of(structures: Sequence[Atoms], properties: tuple) -> tuple:
    """What makes two calls the same decision: the properties and the size class (half octaves)."""
    mean = sum(len(atoms) for atoms in structures) / max(len(structures), 1)
    return properties, round(2 * math.log2(max(mean, 1.0)))


class AutoBatching:
    """`batched: auto`, decided on a probe of the call's own structures whose results are kept."""

    def __init__(self):
        self.timings: dict[tuple, _Timing] = {}
        self.warmed = False

    def evaluate(self, structures: list[Atoms], properties: tuple, one_by_one: Call, batched: Call,
                 device: str) -> list[Results]:
        timing = self.timings.setdefault(kind_of(structures, properties), _Timing())
        results: list[Results] = []
        rest = list(structures)
        if not self.warmed:  # the process's first model call pays one-time setup: not timed
            results += one_by_one(rest[:1])
            rest, self.warmed = rest[1:], True
        k = min(max(len(structures) // PROBE_SHARE, 2), MAX_PROBE)
        if timing.choice is None and timing.one_by_one is None and rest:
            piece, rest = rest[:k], rest[k:]
            timing.one_by_one, piece_results = _timed(one_by_one, piece)
            results += piece_results
        if timing.choice is None and not timing.batch_warmed and len(rest) >= 2:
            # The first batched call of a kind pays set-up (allocator growth, kernels chosen for
            # new shapes, the planner's memory measurement): run, kept, not timed.
            piece, rest = rest[:k], rest[k:]
            results += batched(piece)
            timing.batch_warmed = True
        if timing.choice is None and timing.batch_warmed and timing.batched is None and len(rest) >= 2:
            piece, rest = rest[:k], rest[k:]
            timing.batched, piece_results = _timed(batched, piece)
            results += piece_results
        if timing.choice is None and timing.one_by_one is not None and timing.batched is not None:
            self._decide(timing, structures, device, k)
        if rest:
            way = batched if timing.choice else one_by_one
            results += way(rest)
        return results

    @staticmethod
    def _decide(timing: _Timing, structures: Sequence[Atoms], device: str, k: int) -> None:
        timing.choice = timing.batched < timing.one_by_one
        slow, fast = max(timing.batched, timing.one_by_one), min(timing.batched, timing.one_by_one)
        atoms = sum(len(a) for a in structures[:k])
        lost = (slow - fast) * atoms * (2 if timing.choice is False else 1)  # batched twice: warm-up and timed
        work = fast * sum(len(a) for a in structures)
        log.info("batched: auto on %d-atom structures (%s): one by one %.3f ms/atom, batched %.3f ms/atom, "
                 "timed on %d structures each way (results kept); using %s; deciding cost %.2f s, %.1f%% of "
                 "this call's %d structures", round(atoms / max(k, 1)), device, 1000 * timing.one_by_one,
                 1000 * timing.batched, k, "batched" if timing.choice else "one by one", lost,
                 100 * lost / work if work else 0.0, len(structures))


def _timed(call: Call, structures: list[Atoms]) -> tuple[float, list[Results]]:
    started = time.perf_counter()
    results = call(structures)
    return (time.perf_counter() - started) / max(sum(len(a) for a in structures), 1), results
