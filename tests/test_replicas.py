"""Batched replica MD (`run.batch_replicas: true`): replicas integrated side by side, one batched
model call per step, each written to its own file as if run alone."""

from __future__ import annotations

import json
import logging
import os
import signal
import threading
import time

import h5py
import numpy as np
import pytest
from ase.build import bulk

from driver import interrupt
from driver.checkpoint import read_latest
from driver.cli import main
from driver.replicas import BatchGate
from tests.conftest import write_recipe

JOBS = ["raw-T300K", "raw-T600K", "corrected-T300K", "corrected-T600K"]


def _recipe(folder, batch: bool, steps: int = 12, **extra):
    return write_recipe(folder, filename=f"batch-{batch}.yaml", compare=True, correction={"scale": 0.8},
                        task={"temperature_K": [300, 600], "steps": steps, **extra.pop("task", {})},
                        output={"write_every": 1, "directory": str(folder / f"out-{batch}")},
                        run={"batch_replicas": batch}, **extra)


def _positions(path):
    with h5py.File(path, "r") as f:
        return f["particles/all/position/value"][:], f["observables/potential_energy/value"][:]


def test_batched_replicas_equal_one_by_one_with_one_model_call_per_step(tmp_path, capsys, caplog):
    caplog.set_level(logging.INFO)
    assert main(["run", str(_recipe(tmp_path, batch=False))]) == 0
    assert main(["run", str(_recipe(tmp_path, batch=True))]) == 0
    # 4 replicas, 12 steps: the first forces, then one call per step, each for all 4 structures.
    assert "13 batched model calls for 52 structures (4.0 per call)" in caplog.text
    for job in JOBS:
        (alone, e_alone), (together, e_together) = (_positions(tmp_path / f"out-{b}" / f"{job}.h5") for b in (False, True))
        assert alone.shape == together.shape == (13, 8, 3)
        # CHGNet computes in float32: a batch rounds differently from a single structure.
        np.testing.assert_allclose(together, alone, rtol=0, atol=1e-5, err_msg=job)
        np.testing.assert_allclose(e_together, e_alone, rtol=0, atol=1e-4, err_msg=job)
        assert np.ptp(alone[:, 0, 0]) > 1e-3  # the atoms did move
    summaries = [json.loads((tmp_path / f"out-{b}" / "summary.json").read_text())["jobs"] for b in (False, True)]
    assert [job["status"] for job in summaries[1]] == ["completed"] * 4


def test_gate_batches_replicas_that_ask_different_numbers_of_times(chgnet_model):
    """A replica that finishes (or explodes) leaves; the others are not left waiting."""
    base = bulk("Si", "diamond", a=5.43, cubic=True)
    structures = [[base.copy() for _ in range(asks)] for asks in (1, 3, 2)]
    for r, replica in enumerate(structures):
        for k, atoms in enumerate(replica):
            atoms.rattle(0.05, seed=10 * r + k)
    gate = BatchGate(chgnet_model, replicas=3, stress=False)
    got: dict = {}

    def replica(r: int) -> None:
        try:
            for k, atoms in enumerate(structures[r]):
                got[r, k] = gate.evaluate(r, atoms)
        finally:
            gate.leave(r)

    threads = [threading.Thread(target=replica, args=(r,)) for r in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(thread.is_alive() for thread in threads), "a replica was left waiting"
    assert gate.calls == 3 and gate.structures == 6
    for (r, k), result in got.items():
        alone = chgnet_model.evaluate([structures[r][k]], batched=False)[0]
        np.testing.assert_allclose(result.forces, alone.forces, atol=1e-4)


def test_sigterm_stops_every_replica_with_a_checkpoint(tmp_path, capsys):
    recipe = _recipe(tmp_path, batch=True, steps=100_000)
    out = tmp_path / "out-True"
    previous = signal.getsignal(signal.SIGTERM)

    def terminate_when_running() -> None:
        deadline = time.monotonic() + 120
        while not all((out / f"{job}.h5").exists() for job in JOBS) and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(2.0)
        os.kill(os.getpid(), signal.SIGTERM)

    timer = threading.Thread(target=terminate_when_running, daemon=True)
    timer.start()
    try:
        assert main(["-q", "run", str(recipe)]) == 130
    finally:
        signal.signal(signal.SIGTERM, previous)
        interrupt.reset()
    for job in JOBS:
        with h5py.File(out / f"{job}.h5", "r") as f:
            assert f.attrs["status"] == "interrupted", job
            state = read_latest(f)
            assert state is not None and state.step > 0 and state.frames == f["particles/all/position/value"].shape[0]


def test_batch_replicas_is_for_md_only(tmp_path, capsys):
    recipe = write_recipe(tmp_path, task={"kind": "phonons", "supercell": [2, 2, 2]}, run={"batch_replicas": True})
    assert main(["validate", str(recipe)]) == 2
    err = capsys.readouterr().err
    assert "run.batch_replicas" in err and len(err.strip().splitlines()) == 1, err


@pytest.mark.parametrize("value", ["yes please", 3])
def test_batch_replicas_must_be_a_boolean(tmp_path, capsys, value):
    recipe = write_recipe(tmp_path, run={"batch_replicas": value})
    assert main(["validate", str(recipe)]) == 2
    assert "run.batch_replicas" in capsys.readouterr().err
