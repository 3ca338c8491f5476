"""Print the GPU check's JSON as short tables; with --record, store it in bench/results.json.

    python bench/gpu/report.py OUT/gpu-check.json [--record]

--record (here, after a device run) writes the key "gpu_check" of bench/results.json (the other
keys are kept), with the GPU name, driver and torch versions that the JSON carries.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def fmt(row: dict, *keys: str) -> str:
    if "skipped" in row:
        return f"skipped ({row['skipped']})"
    if "error" in row:
        return f"error ({row['error'][:120]})"
    return "  ".join(f"{k}={row[k]}" for k in keys if k in row)


def show(data: dict) -> None:
    env = data.get("environment", {})
    print(f"gpu-check: status {data.get('status')}, device {env.get('device')} ({env.get('gpu')}), "
          f"torch {env.get('torch')}, driver {env.get('driver_version')}, grid {env.get('grid')}")
    for key, row in data.get("batched", {}).items():
        print(f"  batched   {key:26s} {fmt(row, 'batched_s', 'one_by_one_s', 'speedup')}")
    for key, row in data.get("replicas", {}).items():
        print(f"  replicas  {key:26s} {fmt(row, 'batched_s', 'one_by_one_s', 'speedup')}")
    for key, row in data.get("overhead", {}).items():
        print(f"  overhead  {key:26s} {fmt(row, 'bare_s', 'driver_s', 'driver_over_bare', 'driver_ms_per_step_over_bare')}")
    for key, row in data.get("ladder", {}).items():
        if "points" not in row:
            print(f"  ladder    {key:26s} {fmt(row)}")
            continue
        for p in row["points"]:
            mem = f"  {p['peak_gpu_memory_GiB']} GiB" if "peak_gpu_memory_GiB" in p else ""
            print(f"  ladder    {key:26s} {p['atoms']:>7} atoms  {p['steps_per_s']:>9} steps/s  "
                  f"{p['atom_steps_per_s']:>11} atom-steps/s{mem}")
        print(f"  ladder    {key:26s} stopped: {row.get('stopped')}")
    for key, value in data.get("errors", {}).items():
        print(f"  ERROR {key}: {str(value).strip().splitlines()[-1] if str(value).strip() else value}")
    if "suggested_defaults" in data:
        print(f"  suggested defaults: {json.dumps(data['suggested_defaults'])}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("json", type=Path)
    parser.add_argument("--record", action="store_true", help="store it as bench/results.json's gpu_check")
    parser.add_argument("--strict", action="store_true",
                        help="exit 1 unless the run completed with no error other than out-of-memory (the rehearsal)")
    parser.add_argument("--junit", type=Path, help="with --strict: pytest's JUnit report must show a passed test")
    args = parser.parse_args()
    if not args.json.is_file():
        print(f"gpu-check: {args.json} was not written", file=sys.stderr)
        return 1
    data = json.loads(args.json.read_text())
    show(data)
    if args.record:
        sys.path.insert(0, str(ROOT / "bench"))
        from common import save_result  # noqa: PLC0415  (imports torch and mace: only when recording)

        save_result("gpu_check", data)
    if args.strict:
        problems = problems_in(data, args.junit)
        for problem in problems:
            print(f"gpu-check: {problem}", file=sys.stderr)
        return 1 if problems else 0
    return 0


def problems_in(data: dict, junit: Path | None) -> list[str]:
    problems = [] if data.get("status") == "completed" else [f"status {data.get('status')!r}, not completed"]
    problems += [f"error in {key}" for key in data.get("errors", {})]
    for section in ("batched", "replicas", "overhead", "ladder"):
        if not data.get(section):
            problems.append(f"section {section}: no figure")
        for key, row in data.get(section, {}).items():
            if "error" in row and not row.get("oom"):
                problems.append(f"{section} {key}: {row['error'][:200]}")
            if section == "ladder" and "points" in row and not row["points"]:
                problems.append(f"ladder {key}: no size ran ({row.get('stopped')})")
    if junit is not None:
        import xml.etree.ElementTree as ET

        if not junit.is_file():
            problems.append(f"{junit} was not written")
        else:
            suite = ET.parse(junit).getroot()
            suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
            counts = {k: int(suite.get(k, 0)) for k in ("tests", "errors", "failures", "skipped")}
            passed = counts["tests"] - counts["errors"] - counts["failures"] - counts["skipped"]
            if counts["errors"] or counts["failures"] or passed < 1:
                problems.append(f"GPU tests: {counts}, {passed} passed")
    return problems


if __name__ == "__main__":
    sys.exit(main())
