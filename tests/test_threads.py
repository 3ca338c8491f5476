"""Torch threads per MPI rank: ranks on one node share its cores instead of each taking all."""

from __future__ import annotations

import pytest

from driver.parallel import threads_per_rank


@pytest.mark.parametrize(("cpus", "ranks", "threads"), [
    (2, 2, 1),     # this machine: 2 ranks x 1 thread, not 2 x 2
    (16, 4, 4),
    (16, 3, 5),    # the remainder stays idle rather than oversubscribed
    (2, 4, 1),     # more ranks than cores: at least one thread each
    (64, 64, 1),
])
def test_each_rank_gets_its_share_of_the_cores(cpus, ranks, threads):
    assert threads_per_rank(cpus, ranks, environ={}) == threads


def test_serial_run_keeps_torch_default():
    assert threads_per_rank(16, 1, environ={}) is None


@pytest.mark.parametrize("variable", ["OMP_NUM_THREADS", "MKL_NUM_THREADS"])
def test_user_choice_wins(variable):
    assert threads_per_rank(16, 4, environ={variable: "8"}) is None
    assert threads_per_rank(16, 4, environ={variable: ""}) == 4  # set but empty: not a choice


def test_launcher_pinning_caps_the_threads():
    # Pinned to one core each (mpiexec --bind-to core): one thread, whatever the node has.
    assert threads_per_rank(16, 4, available=1, environ={}) == 1
    # Pinned to its own 4 of 16 cores: all 4 are this rank's.
    assert threads_per_rank(16, 4, available=4, environ={}) == 4
    # An affinity mask larger than the share changes nothing.
    assert threads_per_rank(16, 4, available=16, environ={}) == 4


def test_world_given_a_communicator_leaves_threads_alone(monkeypatch):
    """Only the run's own COMM_WORLD sets threads; a World built on a passed-in communicator
    (as tests do) must not change the test process's torch threads."""
    import driver.parallel as parallel

    calls = []
    monkeypatch.setattr(parallel, "share_cores", lambda *args: calls.append(args))

    class TwoRanks:
        def Get_size(self):
            return 2

        def Get_rank(self):
            return 0

        def Split_type(self, kind):
            return _Node()

    class _Node:
        def Get_rank(self):
            return 0

        def Get_size(self):
            return 2

        def Free(self):
            pass

    pytest.importorskip("mpi4py")
    world = parallel.World(TwoRanks())
    assert (world.local_rank, world.local_size) == (0, 2)
    assert calls == []
