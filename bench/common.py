"""What every benchmark here shares: the models compared, interleaved timing, the machine record,
and bench/results.json (each script owns one key of it)."""

from __future__ import annotations

import datetime
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DRIVER_OFFLINE", "1")

from mace import modules as _mace_modules  # noqa: E402,F401  # isort: skip  (mace before e3nn)
import torch  # noqa: E402

from tests.conftest import M3GNET_NAME, build_small_mace  # noqa: E402

RESULTS = ROOT / "bench" / "results.json"


def models_dir() -> Path | None:
    for entry in os.environ.get("DRIVER_MODELS_DIR", "").split(os.pathsep):
        if entry and (Path(entry).expanduser() / M3GNET_NAME / "model.json").is_file():
            return Path(entry).expanduser()
    default = ROOT.parent / "shared" / "models"
    return default if (default / M3GNET_NAME / "model.json").is_file() else None


def specs(workdir: Path) -> list[tuple[str, dict | None, str]]:
    """(family, ModelSpec fields or None when weights are absent, description)."""
    folder = models_dir()
    mace_path = build_small_mace(workdir / "small-bench.model")
    return [
        ("chgnet", {"name": "chgnet"}, "CHGNet 0.3.0 (bundled)"),
        ("m3gnet", {"name": "m3gnet", "models_dir": str(folder)} if folder else None, M3GNET_NAME),
        ("mace-mp-0", {"name": "mace-mp-0", "checkpoint": str(mace_path)},
         "small random-weight ScaleShiftMACE (8x0e+8x1o, 2 interactions, r_max 4 Å)"),
    ]


def interleaved_medians(first: Callable[[], object], second: Callable[[], object], repeats: int) -> tuple[float, float]:
    """Median wall times of two functions run alternately, so load drifts hit both alike."""
    times: tuple[list[float], list[float]] = ([], [])
    for _ in range(repeats):
        for fn, bucket in ((first, times[0]), (second, times[1])):
            start = time.perf_counter()
            fn()
            bucket.append(time.perf_counter() - start)
    return statistics.median(times[0]), statistics.median(times[1])


def print_family_table(header: str, rows: dict[str, dict], line: Callable[[str, dict], str]) -> None:
    """One line per model family under `header`; skipped families say why."""
    print(header)
    print("-" * len(header))
    for family, row in rows.items():
        print(f"{family:<10} skipped ({row['skipped']})" if "skipped" in row else line(family, row))


def warn_if_busy() -> float:
    load = os.getloadavg()[0]
    if load > 0.5 * (os.cpu_count() or 1):
        print(f"warning: load average {load:.1f} on {os.cpu_count()} CPUs: other processes compete "
              "for the cores and the timings will be noisy", file=sys.stderr)
    return load


def machine_record(device: str | None, load_before: float) -> dict:
    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "device": device,
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "load_average_1min_before_after": [round(load_before, 2), round(os.getloadavg()[0], 2)],
    }


def now_utc() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")


def read_results() -> dict:
    """bench/results.json as it is ({} when absent or unreadable, with a warning: a bench that ran
    for half an hour still saves its own figures)."""
    if not RESULTS.is_file():
        return {}
    try:
        return json.loads(RESULTS.read_text())
    except json.JSONDecodeError:
        print(f"warning: {RESULTS} was not valid JSON; rewriting it", file=sys.stderr)
        return {}


def save_result(key: str, record: dict) -> None:
    """Replace one key of bench/results.json, keeping the others; written atomically."""
    record = {"date": now_utc(), **record}
    existing = read_results()
    existing[key] = record
    tmp_path = RESULTS.with_suffix(".json.tmp")
    tmp_path.write_text(json.dumps(existing, indent=2) + "\n")
    tmp_path.replace(RESULTS)
    print(f"wrote {RESULTS.relative_to(ROOT)} [{key}]")
