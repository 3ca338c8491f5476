"""The last step of `make bench`: every ratio in bench/results.json beside its target, one table.

    python bench/summary.py

Reads what the other scripts wrote (each its own key, with the date it ran); prints nothing it
did not measure, and says which keys are missing. Targets are those of the benchmark issue:
MD overhead <= 1.05, HDF5 streaming at the default settings vs off <= 1.02, batching >= 1.5 on CPU (>= 3 on GPU), MPI 1 vs 2
ranks >= 1.6; and issue 19's: the driver's MD step <= 0.6x (CHGNet) and <= 0.9x (M3GNet) the stock
calculator's ASE loop at 64 and 216 atoms, MACE <= 1.0x TorchSim 0.3.0 per system-step (1 and 4
systems; the driver may run 4 jobs batched or one after another, the faster counts).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results.json"


def _rows(data: dict) -> list[tuple[str, str, float, str, bool | None]]:
    """(benchmark, family or case, ratio, target text, met) for every ratio on record."""
    rows = []

    def add(bench: str, case: str, ratio: float | None, target: float, at_most: bool, gpu: bool = False) -> None:
        if ratio is None:
            return
        limit = 3.0 if gpu and not at_most else target
        met = ratio <= limit if at_most else ratio >= limit
        rows.append((bench, case, ratio, f"{'<=' if at_most else '>='} {limit:g}", met))

    def on_gpu(key: str) -> bool:
        return bool((data.get(key, {}).get("machine") or {}).get("gpu"))

    for family, row in (data.get("md_overhead", {}).get("results") or {}).items():
        add("MD step: driver / bare ASE", family, row.get("driver_over_bare"), 1.05, True)
        add("HDF5: default streaming / off", family, row.get("default_over_one_frame"), 1.02, True)
        if row.get("every_over_one_frame") is not None:
            rows.append(("HDF5: every step / off (info)", family, row["every_over_one_frame"], "-", None))
    for family, row in (data.get("batched_evaluation", {}).get("results") or {}).items():
        add("batched eval, 16 structures", family, row.get("speedup"), 1.5, False, on_gpu("batched_evaluation"))
    for family, row in (data.get("task_batching", {}).get("results") or {}).items():
        add("batched NEB iteration", family, row.get("neb_speedup"), 1.5, False, on_gpu("task_batching"))
        add("batched phonon force set", family, row.get("phonon_speedup"), 1.5, False, on_gpu("task_batching"))
    for row in data.get("replica_md", {}).get("results") or []:
        add("batched MD replicas", row["family"], row.get("speedup"), 1.5, False, on_gpu("replica_md"))
    stock_targets = {"chgnet": 0.6, "m3gnet": 0.9}  # issue 19, at 64 and 216 atoms (512: recorded)
    for family, row in (data.get("stock_vs_driver", {}).get("results") or {}).items():
        for case in row.get("cases", []):
            label = f"MD step: driver / stock, {case['atoms']} at, {case['ensemble']}"
            target = stock_targets.get(family) if case["atoms"] in (64, 216) else None
            if target is None:
                rows.append((label + " (info)", family, case["driver_over_stock"], "-", None))
            else:
                add(label, family, case["driver_over_stock"], target, True)
    for systems, row in ((data.get("torchsim_mace", {}).get("results") or {}).get("by_systems") or {}).items():
        best = min(row["driver_over_torchsim"], row.get("one_after_another_over_torchsim", float("inf")))
        if systems in ("1", "4"):
            add(f"MACE: driver / TorchSim, {systems} sys", "mace-mp-0", best, 1.0, True)
        else:
            rows.append((f"MACE: driver / TorchSim, {systems} sys (info)", "mace-mp-0", best, "-", None))
    for key, row in (data.get("md_scaling", {}).get("results") or {}).items():
        if not on_gpu("md_scaling") and "time_per_atom_growth" in row and key.split("/")[0] in ("chgnet", "m3gnet"):
            low, high = row["growth_between_atoms"]
            add(f"time per atom, {high} / {low} atoms", key.split("/")[0], row["time_per_atom_growth"], 1.3, True)
            per_atom = max(point.get("peak_MB_per_atom", 0.0) for point in row["points"])
            add(f"peak MB per atom, {low}..{high} atoms", key.split("/")[0], per_atom, 1.0, True)
    for family, rows_by_count in (data.get("memory", {}).get("results") or {}).items():
        for count, commands in rows_by_count.items():
            for command, row in commands.items():
                add(f"peak GB: {command} on {count} structures", family, row["peak_rss_GB"], 4.0, True)
    mpi = data.get("mpi_scaling", {}).get("results") or {}
    add("MPI: 1 vs 2 ranks, 4 jobs", "chgnet", mpi.get("speedup"), 1.6, False)
    if mpi.get("speedup_over_serial_1_thread") is not None:
        rows.append(("MPI: 2 ranks / 1 thread (info)", "chgnet", mpi["speedup_over_serial_1_thread"], "-", None))
    return rows


def main() -> int:
    if not RESULTS.is_file():
        print(f"{RESULTS} not found: run the benchmarks first (make bench)", file=sys.stderr)
        return 1
    data = json.loads(RESULTS.read_text())
    rows = _rows(data)
    header = f"{'benchmark':<48} {'case':<10} {'ratio':>7}  {'target':<7} met"
    print("\nAll ratios (side by side in one run each; bench/results.json):")
    print(header)
    print("-" * len(header))
    for bench, case, ratio, target, met in rows:
        print(f"{bench:<48} {case:<10} {ratio:>6.2f}x  {target:<7} {'-' if met is None else 'yes' if met else 'NO'}")
    expected = ("md_overhead", "batched_evaluation", "task_batching", "replica_md", "mpi_scaling", "md_scaling",
                "md_profile", "stock_vs_driver", "torchsim_mace", "memory", "diffusion_analysis")
    missing = [key for key in expected if key not in data]
    if missing:
        print(f"not measured yet: {', '.join(missing)}")
    dates = sorted({str(data[key].get("date", "?"))[:16] for key in expected if key in data})
    print(f"measured {dates[0]} .. {dates[-1]} (UTC)" if dates else "")
    return 0


if __name__ == "__main__":
    sys.exit(main())
