"""The GPU check's own logic, without a GPU and without the rehearsal's fresh venv (that one is
`make gpu-check DEVICE=cpu`): the size ladder stops at the first out-of-memory and at a step over
the limit, the JSON is rewritten after each figure, and the defaults follow the measured ratios."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from ase.calculators.calculator import Calculator, all_changes

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench" / "gpu"))
bench = pytest.importorskip("gpu_bench")  # bench/gpu/gpu_bench.py


class FakeModel:
    """A LoadedModel stand-in whose calculator sleeps `per_atom_s` per atom, or raises CUDA's
    out-of-memory error above `oom_above` atoms."""

    def __init__(self, per_atom_s: float = 0.0, oom_above: int | None = None):
        outer = self

        class Calc(Calculator):
            implemented_properties = ["energy", "forces", "stress"]

            def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
                super().calculate(atoms, properties, system_changes)
                if outer.oom_above is not None and len(self.atoms) > outer.oom_above:
                    raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 80.00 GiB")
                time.sleep(outer.per_atom_s * len(self.atoms))
                self.results = {"energy": 0.0, "forces": np.zeros((len(self.atoms), 3)), "stress": np.zeros(6)}

        self.per_atom_s, self.oom_above = per_atom_s, oom_above
        self.calculator = Calc()
        self.device = "cpu"

    def as_calculator(self):
        """The ladder times the driver's own call (ModelPotential.as_calculator)."""
        return self.calculator


def run_ladder(tmp_path, model, max_step_s=60.0, sizes=(1, 2, 3)):
    record = bench.Record(tmp_path / "check.json", {"status": "running"})
    budget = bench.Budget(60.0)
    budget.open(1.0)
    bench.section_ladder(record, budget, [("fake/float32", lambda: model)], {"ladder_n": list(sizes)}, "cpu",
                         max_step_s)
    on_disk = json.loads((tmp_path / "check.json").read_text())
    assert on_disk["ladder"] == json.loads(json.dumps(record.data["ladder"]))  # written as it went
    return on_disk["ladder"]["fake/float32"]


def test_ladder_stops_at_the_first_out_of_memory(tmp_path):
    result = run_ladder(tmp_path, FakeModel(oom_above=64))  # 8 and 64 atoms fit, 216 does not
    assert [p["atoms"] for p in result["points"]] == [8, 64]
    assert result["stopped"] == "out of GPU memory at 216 atoms"
    assert result["largest_that_ran"] == 64


def test_ladder_stops_at_a_step_over_the_limit(tmp_path):
    result = run_ladder(tmp_path, FakeModel(per_atom_s=0.0005), max_step_s=0.02)  # 8 atoms: 4 ms, 64: 32 ms
    atoms = [p["atoms"] for p in result["points"]]
    assert atoms[0] == 8 and 216 not in atoms
    assert "s per step > 0.02 s" in result["stopped"] or "> 0.02 s" in result["points"][-1].get("note", "")
    assert all(p["steps_per_s"] > 0 and p["atom_steps_per_s"] > 0 for p in result["points"])


def test_suggested_defaults_follow_the_figures():
    data = {"batched": {"chgnet/neb/8": {"speedup": 0.8}, "chgnet/phonons/8": {"speedup": 2.0},
                        "mace-mp-0/neb/8": {"speedup": 3.0}, "mace-mp-0/phonons/128": {"speedup": 5.0},
                        "m3gnet/neb/8": {"skipped": "budget"}},
            "replicas": {"mace-mp-0/8": {"speedup": 1.4}, "chgnet/8": {"error": "x"}}}
    out = bench.suggested_defaults(data)
    assert out["chgnet"]["batch_neb_phonons"] is False and out["chgnet"]["batch_replicas"] is None
    assert out["mace-mp-0"] == {"batch_neb_phonons": True, "batch_replicas": True,
                                "smallest_speedups": {"neb": 3.0, "phonons": 5.0, "replicas": 1.4}}
    assert out["m3gnet"]["batch_neb_phonons"] is None


def test_budget_rolls_unused_time_over():
    budget = bench.Budget(100.0)
    budget.open(0.25)
    assert 24 < budget.left() <= 25
    budget.open(0.25)  # the first section ended at once: its time goes to the second
    assert 49 < budget.left() <= 50
    budget.open(1.0)
    assert budget.section_end == pytest.approx(budget.start + 100.0)  # never past the whole budget


def test_the_device_check_runs_every_file_that_holds_a_gpu_test():
    """check.sh names the files it hands pytest; a moved or new GPU test file must be named there
    (a missing path once made the rehearsal collect nothing)."""
    import re

    script = (ROOT / "bench" / "gpu" / "check.sh").read_text()
    named = set(re.search(r"gpu_test_files=\(([^)]*)\)", script).group(1).split())
    holding = {str(path.relative_to(ROOT)) for path in (ROOT / "tests").rglob("test_*.py")
               if re.search(r"pytest\.mark\.gpu\b", path.read_text())}
    assert named == holding
    assert all((ROOT / name).is_file() for name in named)
