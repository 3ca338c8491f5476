"""The batch planner: batches bounded by a memory budget from measured bytes per atom, an
out-of-memory batch halved and retried, the same results however the structures are cut, and
`driver fit` on all 200 labelled Si structures within 4 GB (it was killed by the kernel at 24 GB)."""

from __future__ import annotations

import dataclasses
import logging
import subprocess
import sys

import numpy as np
import pytest
from ase.build import bulk

from driver.errors import ResourceError
from driver.memory import MemoryBudget, PeakMemory, heap_in_use, memory_fraction, tune_allocator
from driver.models.batching import BatchPlanner, kind_of
from driver.potential import PROPERTIES, Results
from tests.conftest import SHARED
from tests.models.test_batch import FAMILIES, TOLERANCES, mixed_structures

GLIBC = pytest.mark.skipif(heap_in_use() is None, reason="needs glibc >= 2.33 (mallinfo2) on Linux")


def fixed_budget(n_bytes: int):
    return lambda device: MemoryBudget(n_bytes, "test budget")


def cells(*sizes: int):
    return [bulk("Cu", "fcc", a=3.6) * (n, 1, 1) for n in sizes]


def test_plan_keeps_each_batch_within_the_budget_and_the_batch_size():
    planner = BatchPlanner("cpu", budget=fixed_budget(int(1.25 * 10 * 1000)))
    planner.bytes_per_atom = 1000.0  # so a batch holds at most 10 atoms
    sizes = [3, 3, 3, 3, 12, 2, 2, 2, 2, 2, 2]
    batches = planner.plan(sizes, batch_size=None)
    assert [list(b) for b in batches] == [[0, 1, 2], [3], [4], [5, 6, 7, 8, 9], [10]]
    assert all(sum(sizes[i] for i in b) <= 10 for b in batches if len(b) > 1)  # 12 atoms: alone
    assert [len(b) for b in planner.plan(sizes, batch_size=2)] == [2, 2, 1, 2, 2, 2]
    unmeasured = BatchPlanner("cpu", budget=fixed_budget(1))
    assert [len(b) for b in unmeasured.plan(sizes, batch_size=None)] == [len(sizes)]


def test_an_out_of_memory_batch_is_halved_and_retried(caplog):
    """A model that fails above 6 atoms per call: the planner halves until calls fit, logs it,
    and returns every structure's result in order."""
    calls = []

    def call(batch):
        atoms = sum(len(a) for a in batch)
        calls.append(len(batch))
        if atoms > 6:
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return [Results.of(float(len(a))) for a in batch]

    planner = BatchPlanner("cpu", budget=fixed_budget(10**12))
    structures = cells(1, 2, 1, 2, 1, 2, 1, 2)  # 1 or 2 atoms each
    with caplog.at_level(logging.WARNING, logger="driver.models.batching"):
        results = planner.run(structures, call, batch_size=None)
    assert [r.energy for r in results] == [float(len(a)) for a in structures]
    assert "out of memory on a batch of 7 structures (11 atoms)" in caplog.text
    assert "at most 5 atoms per batch" in caplog.text
    assert calls[0] == 1 and calls[1] == 7  # the probe, then everything the budget allowed


def test_batches_shrink_when_the_process_outgrows_the_budget(caplog, monkeypatch):
    """The CPU's kept heap can hold more than a call's live peak (fragmentation): when the
    process's peak size has grown by more than the budget since its first batched call, batches
    shrink. The process's size is modelled: each call leaves 40 MiB more resident."""
    from driver.models import batching

    size = {"now": 1 << 30, "trims": 0}
    monkeypatch.setattr(batching, "resident_bytes", lambda: size["now"])
    monkeypatch.setattr(batching, "peak_resident_bytes", lambda: size["now"])
    monkeypatch.setattr(batching, "reset_peak_resident", lambda: None)
    monkeypatch.setattr(batching, "release_free_memory", lambda: size.update(trims=size["trims"] + 1))

    def call(batch):
        size["now"] += 40 * 2**20
        return [Results.of(1.0) for _ in batch]

    planner = BatchPlanner("cpu", budget=fixed_budget(100 * 2**20))
    planner.bytes_per_atom = 1.0  # the estimate allows everything
    planner._probed = planner._batched_measured = True
    sizes = []
    with caplog.at_level(logging.INFO, logger="driver.models.batching"):
        results = planner.run(cells(*[1] * 12), lambda batch: sizes.append(len(batch)) or call(batch), batch_size=3)
    assert len(results) == 12 and size["trims"] == 2  # the free heap handed back each time
    # grew past 100 MiB after the third batch; shrinking in proportion each time the peak grows again
    assert sizes == [3, 3, 3, 2, 1]
    assert "at its peak, more than the budget (0.1 GiB), after a batch of 3 atoms; batches now at most 2 atoms" \
        in caplog.text


def test_one_structure_that_does_not_fit_is_a_resource_error():
    def call(batch):
        raise RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 99 GB")

    with pytest.raises(ResourceError, match="one structure of 4 atoms does not fit in memory on cpu"):
        BatchPlanner("cpu").run(cells(4), call, batch_size=None)


def test_other_errors_pass_through():
    def call(batch):
        raise ValueError("not a memory problem")

    with pytest.raises(ValueError, match="not a memory problem"):
        BatchPlanner("cpu").run(cells(1, 1), call, batch_size=None)


@pytest.mark.parametrize("fixture", FAMILIES)
def test_batches_cut_by_a_small_budget_give_the_same_results(request, fixture, monkeypatch):
    """Every family: a budget of about 20 atoms cuts the mixed structures into several calls; the
    results equal one call per structure."""
    model = request.getfixturevalue(fixture)
    structures = mixed_structures()
    alone = model.evaluate(structures, PROPERTIES, batched=False)
    planner = BatchPlanner(model.device, budget=fixed_budget(int(1.25 * 20 * 1000)))
    planner.bytes_per_atom = 1000.0  # so a batch holds at most 20 atoms
    planner._probed = planner._batched_measured = True
    monkeypatch.setattr(model, "planner", planner)
    calls = []
    original = model.entry.batch

    def counting(calculator, part, properties, batch_size):
        calls.append(sum(len(a) for a in part))
        return original(calculator, part, properties, batch_size)

    monkeypatch.setattr(model, "entry", dataclasses.replace(model.entry, batch=counting))
    cut = model.evaluate(structures, PROPERTIES, batched=True)
    assert calls == [8, 18, 8, 16]  # 8 | 16+2 | 8 | 16 atoms
    e_rel, f_abs, s_abs = TOLERANCES[model.family]
    for a, b in zip(alone, cut, strict=True):
        assert b.energy == pytest.approx(a.energy, rel=e_rel)
        np.testing.assert_allclose(b.forces, a.forces, rtol=0, atol=f_abs)
        np.testing.assert_allclose(b.stress, a.stress, rtol=0, atol=s_abs)


@GLIBC
def test_peak_memory_sees_an_allocation_inside_the_block():
    """The sampler sees memory held for a few milliseconds (a model call holds its peak through
    the backward pass), and not what was in use before the block."""
    import time

    with PeakMemory() as peak:
        block = np.ones(64 * 2**20 // 8)  # 64 MiB, touched
        time.sleep(0.05)
        del block
    assert peak.peak_bytes is not None and 60 * 2**20 <= peak.peak_bytes <= 200 * 2**20


@GLIBC
def test_allocator_tuning_and_memory_fraction(monkeypatch):
    monkeypatch.setenv("DRIVER_SYSTEM_MALLOC", "1")
    assert tune_allocator() is False  # left alone on request
    monkeypatch.delenv("DRIVER_SYSTEM_MALLOC")
    assert tune_allocator() is True  # glibc (Debian): applied
    monkeypatch.setenv("DRIVER_MEMORY_FRACTION", "0.3")
    assert memory_fraction() == 0.3
    monkeypatch.setenv("DRIVER_MEMORY_FRACTION", "2")
    with pytest.raises(Exception, match=r"DRIVER_MEMORY_FRACTION='2': expected a number in \(0, 1\]"):
        memory_fraction()


def test_kinds_are_size_classes():
    assert kind_of(cells(4, 4), PROPERTIES) == kind_of(cells(4, 5), PROPERTIES)
    assert kind_of(cells(4), PROPERTIES) != kind_of(cells(16), PROPERTIES)


def test_fit_on_all_200_si_structures_stays_within_4_gb(tmp_path):
    """The README's own example: 200 PBE Si structures of 63-65 atoms with CHGNet."""
    labels = SHARED / "data" / "si_rare_events_pbe.extxyz"
    measured = ("import resource, sys\nfrom driver.cli import main\ncode = main(sys.argv[1:])\n"
                "print('peak_rss_kb', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)\n"
                "sys.exit(code)")
    done = subprocess.run([sys.executable, "-c", measured, "fit", "--model", "chgnet", "--labels", str(labels),
                           "--out", str(tmp_path / "fit")], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    peak_gb = int(done.stderr.split("peak_rss_kb ")[1].split()[0]) / 2**20
    assert peak_gb < 4, f"peak resident {peak_gb:.2f} GB"
    assert "from 200 structure(s)" in done.stdout
    assert "batched: auto on 63-atom structures" in done.stderr and "deciding cost" in done.stderr


def test_a_cell_too_large_for_memory_is_refused_with_the_estimate(monkeypatch):
    from driver import models
    from driver.specs import ModelSpec

    monkeypatch.setattr(models, "available_bytes", lambda device: 2 * 2**30)
    spec = ModelSpec(name="chgnet", device="cpu")
    per_atom = models.family("chgnet").memory_per_atom_mb
    models.check_fits_in_memory(int(0.9 * 2 * 1024 / per_atom), spec)  # fits
    with pytest.raises(ResourceError, match=r"structure: 4096 atoms need about .* GiB for one chgnet call on cpu "
                                            r"\(.* MB/atom in float32, measured on Si\), more than the 2.0 GiB available"):
        models.check_fits_in_memory(4096, spec)


def test_driver_run_refuses_a_million_atoms_before_the_model_loads(tmp_path, capsys, monkeypatch):
    """Exit 1 (an exhausted resource) and one line, not a kernel kill minutes later."""
    from driver import models
    from driver.cli import main
    from tests.conftest import write_recipe

    monkeypatch.setattr(models, "available_bytes", lambda device: 24 * 2**30)  # this machine, wherever it runs

    def no_loading(*args, **kwargs):
        raise AssertionError("the model loaded")

    monkeypatch.setattr("driver.runner.load_model", no_loading)
    recipe = write_recipe(tmp_path, structure={"supercell": [50, 50, 50], "max_atoms": 10**7})
    code = main(["run", str(recipe)])
    err = capsys.readouterr().err
    assert code == 1, err
    assert "structure: 1000000 atoms need about" in err and "available; use a smaller cell" in err
    assert "Traceback" not in err


def test_the_tuned_allocator_gives_the_same_numbers(tmp_path):
    """glibc keeping its heap changes where buffers live, not what is computed: CHGNet on 216 Si
    atoms gives bit-identical energy and forces with and without the tuning (two processes)."""
    import os

    script = ("import sys, numpy as np\nfrom ase.build import bulk\nfrom driver.memory import tune_allocator\n"
              "print('tuned', tune_allocator(), file=sys.stderr)\n"
              "from driver.models import load_model\nfrom driver.specs import ModelSpec\n"
              "model = load_model(ModelSpec(name='chgnet', device='cpu'))\n"
              "atoms = bulk('Si', cubic=True).repeat(3)\natoms.rattle(0.05, seed=2)\n"
              "r = model.evaluate([atoms], batched=False)[0]\n"
              "np.save(sys.argv[1], np.concatenate([[r.energy], r.forces.ravel()]))\n")
    outputs = {}
    for system in ("0", "1"):
        path = tmp_path / f"system{system}.npy"
        done = subprocess.run([sys.executable, "-c", script, str(path)], capture_output=True, text=True, timeout=300,
                              env={**os.environ, "DRIVER_SYSTEM_MALLOC": system})
        assert done.returncode == 0, done.stderr[-2000:]
        assert f"tuned {system == '0'}" in done.stderr
        outputs[system] = np.load(path)
    np.testing.assert_array_equal(outputs["0"], outputs["1"])


def test_the_tightest_cgroup_limit_on_the_path_counts(tmp_path):
    """Slurm (cgroup v2) puts a job in a nested cgroup without a namespace: its limit sits on the
    job's own folder or a parent's; cgroup v1 writes "no limit" as a huge number."""
    from driver.memory import _cgroup_room

    root = tmp_path / "cgroup"
    job = root / "system.slice" / "slurmstepd.scope" / "job_7" / "step_0"
    job.mkdir(parents=True)
    (root / "system.slice" / "slurmstepd.scope" / "job_7" / "memory.max").write_text(f"{8 * 2**30}\n")
    (root / "system.slice" / "slurmstepd.scope" / "job_7" / "memory.current").write_text(f"{3 * 2**30}\n")
    (job / "memory.max").write_text("max\n")
    (job / "memory.current").write_text(f"{2 * 2**30}\n")
    proc = tmp_path / "cgroup-v2"
    proc.write_text("0::/system.slice/slurmstepd.scope/job_7/step_0\n")
    assert _cgroup_room(proc, root) == 5 * 2**30
    v1 = root / "memory" / "user" / "job"
    v1.mkdir(parents=True)
    (v1 / "memory.limit_in_bytes").write_text("9223372036854771712\n")  # unlimited
    (v1 / "memory.usage_in_bytes").write_text("1000\n")
    (root / "memory" / "user" / "memory.limit_in_bytes").write_text(f"{4 * 2**30}\n")
    (root / "memory" / "user" / "memory.usage_in_bytes").write_text(f"{1 * 2**30}\n")
    proc.write_text("4:memory:/user/job\n3:cpu,cpuacct:/user/job\n")
    assert _cgroup_room(proc, root) == 3 * 2**30
    proc.write_text("0::/\n")
    assert _cgroup_room(proc, tmp_path / "none") is None


def test_the_budget_is_shared_among_the_ranks_of_a_node_and_capped_on_the_cpu(monkeypatch):
    from driver import memory
    from driver.models import processes_sharing

    monkeypatch.setattr(memory, "available_bytes", lambda device: 16 * 2**30)
    assert MemoryBudget.for_device("cpu").bytes == memory.CPU_BATCH_CAP_BYTES  # half of 16 GiB, capped
    shared = MemoryBudget.for_device("cpu", sharing=8)
    assert shared.bytes == 2**30 and "shared by 8 processes" in shared.source
    assert processes_sharing("cpu", 3, 8) == 8 and processes_sharing("cpu", 0, 1) == 1
