"""The random-kill campaign (slow: `make test-slow`): SIGKILL real driver processes at random
instants, many times over, each followed by `driver run --resume` (itself killed at random now
and then), and require the uninterrupted run's results bit for bit.

Its counts go to docs/explanation/restart.md; DRIVER_KILL_CAMPAIGN sets how many trials
(default 45), DRIVER_KILL_SEED the instants."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.test_faults import CLI, KINDS, _recipe, assert_same_run

SI_64 = {"file": str(ROOT / "recipes" / "structures" / "Si_diamond.cif"), "supercell": [2, 2, 2]}
# Longer jobs than the fault matrix's, so that a random instant lands anywhere in them; and the
# issue's own case, CHGNet on 64-atom Si, NVT-Langevin and MTK NPT (60 steps, a frame every 5,
# a checkpoint every 10).
LONGER = {
    "chgnet_nvt": {"kind": "md", "structure": SI_64, "model": {"name": "chgnet"},
                   "task": {"steps": 60}, "output": {"write_every": 5, "checkpoint_every": 10}},
    "chgnet_npt": {"kind": "md", "structure": SI_64, "model": {"name": "chgnet"},
                   "task": {"ensemble": "npt_mtk", "steps": 60, "pressure_GPa": 0.0},
                   "output": {"write_every": 5, "checkpoint_every": 10}},
    "md": {"task": {"steps": 1500}},
    "md_npt": {"task": {"ensemble": "npt_mtk", "steps": 1000, "pressure_GPa": 0.0}, "kind": "md"},
    "neb": {"model": {"name": "emt_slow", "dtype": "float64"}},
    "phonons": {"model": {"name": "emt_slow", "dtype": "float64"}},
    "relax": {"model": {"name": "emt_slow", "dtype": "float64"}},
    "single_point": {"model": {"name": "emt_slow", "dtype": "float64"}},
    "diffusion": {"task": {"max_ps": 1.0, "min_ps": 0.6}},
}
SLOW_CLI = CLI.replace("register(FAMILY); ", "register(FAMILY); from tests.models.emt_family import SLOW_FAMILY; "
                                            "register(SLOW_FAMILY); ", 1)


def _campaign_recipe(folder: Path, name: str) -> Path:
    import yaml

    change = LONGER[name]
    path = _recipe(folder, change.get("kind", name))
    recipe = yaml.safe_load(path.read_text())
    recipe["task"].update(change.get("task", {}))
    recipe["output"].update(change.get("output", {}))
    recipe.update({key: value for key, value in change.items() if key in ("model", "structure")})
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return path


def _killed_at(args: list[str], delay_s: float) -> bool:
    """Run the driver, SIGKILL it after `delay_s`; True when the kill landed (it was still running)."""
    proc = subprocess.Popen([sys.executable, "-c", SLOW_CLI, *args], cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env={k: v for k, v in os.environ.items() if k != "DRIVER_FAULT_AT"})
    try:
        proc.wait(timeout=delay_s)
        return False
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        return True


def _left_behind(out: Path) -> str:
    """Where the last kill of a trial struck, from what it left on disk."""
    if (out / "summary.json").exists() and not list(out.glob("*.journal")):
        return "run finished"
    if list(out.glob("*.journal")) or list(out.glob("*.rebuild")):
        h5_whole = all(_opens(h5) for h5 in out.glob("*.h5"))
        return "mid-job, job file opens" if h5_whole else "mid-job, job file unreadable"
    if list(out.glob("*.h5")):
        return "between jobs or at the summary"
    return "before the first job file"


def _opens(path: Path) -> bool:
    import h5py

    try:
        with h5py.File(path, "r") as handle:
            handle.attrs.get("status")
        return True
    except OSError:
        return False


@pytest.mark.slow
def test_random_kills_resume_exactly(tmp_path):
    total = int(os.environ.get("DRIVER_KILL_CAMPAIGN", "45"))
    rng = random.Random(int(os.environ.get("DRIVER_KILL_SEED", "2026")))
    references: dict[str, tuple[Path, Path, int, float]] = {}
    tally = {"kills_tried": 0, "kills_landed": 0, "runs_resumed": 0, "resumed_exactly": 0, "by_kind": {},
             "left_behind": {}}
    for trial in range(total):
        name = list(LONGER)[trial % len(LONGER)]
        if name not in references:
            folder = tmp_path / f"whole-{name}"
            folder.mkdir()
            recipe = _campaign_recipe(folder, name)
            started = time.perf_counter()
            done = subprocess.run([sys.executable, "-c", SLOW_CLI, "-q", "run", str(recipe)], cwd=ROOT,
                                  capture_output=True, text=True, timeout=600)
            assert done.returncode in (0, 1), done.stderr
            references[name] = (recipe, folder / "out", done.returncode, time.perf_counter() - started)
        recipe, whole, code, duration = references[name]
        out = tmp_path / f"killed-{trial}"
        args = ["-q", "run", str(recipe), "--out", str(out)]
        landed = [_killed_at(args, rng.uniform(0.0, duration))]
        if trial % 3 == 2:  # the resume killed too, at its own random instant
            landed.append(_killed_at([*args, "--resume"], rng.uniform(0.0, duration)))
        tally["kills_tried"] += len(landed)
        tally["kills_landed"] += sum(landed)
        left = _left_behind(out)
        tally["left_behind"][left] = tally["left_behind"].get(left, 0) + 1
        resumed = subprocess.run([sys.executable, "-c", SLOW_CLI, *args, "--resume"], cwd=ROOT, capture_output=True,
                                 text=True, timeout=600) if (out / "summary.json").exists() or any(landed) else None
        if resumed is not None:
            assert resumed.returncode == code, (name, trial, resumed.stderr)
            tally["runs_resumed"] += 1
        assert_same_run(whole, out)
        tally["resumed_exactly"] += 1
        kind = tally["by_kind"].setdefault(name, {"trials": 0, "kills_landed": 0})
        kind["trials"] += 1
        kind["kills_landed"] += sum(landed)
    print("kill campaign:", json.dumps(tally))
    (ROOT / "bench" / "kill_campaign.json").write_text(json.dumps(tally, indent=2) + "\n")
    assert tally["kills_landed"] >= 30 or total < 30
    assert tally["resumed_exactly"] == total


def test_the_campaign_covers_every_kind_the_fault_matrix_does():
    assert {change.get("kind", name) for name, change in LONGER.items()} | {"eos", "elastic"} == set(KINDS)
    assert _left_behind(ROOT / "no-such-folder") == "before the first job file"
