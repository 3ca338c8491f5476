"""Memory: what this process may use, how much a model call used, and the C allocator's policy.

One place for the three facts the batch planner (driver.models.batching) and the size check
before a model loads need:
- the memory available to this process: RAM (the cgroup's limit where it is tighter than the
  machine's, as under Slurm and containers) or a GPU's free memory;
- the peak memory of one call above what was in use before it (torch's own counter on a GPU;
  glibc's in-use bytes sampled by a thread on the CPU, where no peak counter exists);
- glibc's malloc tuned for tensors: by default every buffer over 32 MB is a fresh mmap, handed
  back at free, so each model call on a large cell page-faults its whole working set again
  (CHGNet, 4096 Si atoms on 2 cores: 1.15 ms/atom, against 0.42 with the heap kept; bench/scaling.py).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import platform
import threading
import time
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

MEMORY_FRACTION_ENV = "DRIVER_MEMORY_FRACTION"
DEFAULT_MEMORY_FRACTION = 0.5  # of available memory, for one batch: headroom for the rest of the job
# On the CPU a batch gains nothing past a few thousand atoms (bench/batch_eval.py: at most 1.2x for
# CHGNet and M3GNet at 16 structures), so one batch's memory is capped there as well.
CPU_BATCH_CAP_BYTES = 2 * 2**30
KEEP_MALLOC_ENV = "DRIVER_SYSTEM_MALLOC"  # =1: leave glibc's defaults alone

# glibc's mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_MAX = -1, -2, -4
_TOP_PAD_BYTES = 64 * 2**20


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]


def _glibc():
    if platform.system() != "Linux":
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.gnu_get_libc_version  # noqa: B018 - only glibc has it (musl does not)
    except (OSError, AttributeError):
        return None
    if hasattr(libc, "mallinfo2"):  # glibc >= 2.33
        libc.mallinfo2.restype = _MallInfo2
    return libc


_LIBC = _glibc()


def tune_allocator() -> bool:
    """Keep freed heap memory for the next model call instead of returning it to the kernel:
    no mmap per large buffer, no trimming of the heap's top. The price is that the process's
    resident size stays at its peak until it exits (it would reach that peak at every call
    anyway). True when applied (glibc, and DRIVER_SYSTEM_MALLOC not set)."""
    if _LIBC is None or os.environ.get(KEEP_MALLOC_ENV, "").strip() not in ("", "0"):
        return False
    applied = (_LIBC.mallopt(_M_MMAP_MAX, 0) == 1
               and _LIBC.mallopt(_M_TRIM_THRESHOLD, -1) == 1  # -1 reads as SIZE_MAX: never trim
               and _LIBC.mallopt(_M_TOP_PAD, _TOP_PAD_BYTES) == 1)
    return applied


def heap_in_use() -> int | None:
    """Bytes malloc has handed out and not had back (all arenas), or None off glibc."""
    if _LIBC is None or not hasattr(_LIBC, "mallinfo2"):
        return None
    info = _LIBC.mallinfo2()
    return int(info.uordblks + info.hblkhd)


def resident_bytes() -> int | None:
    """This process's resident size now (Linux), or None."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return pages * os.sysconf("SC_PAGE_SIZE")


def reset_peak_resident() -> None:
    """Start VmHWM again from the current resident size (Linux >= 4.0; best effort)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def _proc_kib(path: str, key: str) -> int | None:
    """Bytes of a `Key:  N kB` line of a /proc file (Linux), or None."""
    try:
        for line in Path(path).read_text().splitlines():
            if line.startswith(f"{key}:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def peak_resident_bytes() -> int | None:
    """This process's largest resident size so far (VmHWM, Linux), or None."""
    return _proc_kib("/proc/self/status", "VmHWM")


def release_free_memory() -> None:
    """Hand the heap's free pages back to the kernel (glibc's malloc_trim): after a batch whose
    resident size outgrew the budget (a kept heap fragments when calls of different sizes follow
    one another: 1.5-3x the live peak for MACE on mixed batches)."""
    if _LIBC is not None:
        _LIBC.malloc_trim(0)


UNLIMITED = 2**60  # cgroup v1 writes "no limit" as a huge number


def _cgroup_room(proc_cgroup: Path = Path("/proc/self/cgroup"), root: Path = Path("/sys/fs/cgroup")) -> int | None:
    """Bytes left under the tightest memory limit of this process's cgroup and its ancestors
    (v2: memory.max - memory.current; v1: limit_in_bytes - usage_in_bytes), None without one.
    Slurm and systemd put a job in a nested cgroup without a namespace of its own, so the limit
    sits on the job's own path (or a parent's), not at the mount's root."""
    try:
        lines = proc_cgroup.read_text().splitlines()
    except OSError:
        return None
    rooms = []
    for line in lines:
        hierarchy, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        if hierarchy == "0" and controllers == "":
            base, limit_file, usage_file = root, "memory.max", "memory.current"
        elif "memory" in controllers.split(","):
            base, limit_file, usage_file = root / "memory", "memory.limit_in_bytes", "memory.usage_in_bytes"
        else:
            continue
        folder = base / path.strip("/")
        while True:
            room = _room_in(folder, limit_file, usage_file)
            if room is not None:
                rooms.append(room)
            if folder == base or base not in folder.parents:
                break
            folder = folder.parent
    return min(rooms) if rooms else None


def _room_in(folder: Path, limit_file: str, usage_file: str) -> int | None:
    try:
        limit_text = (folder / limit_file).read_text().strip()
        usage = int((folder / usage_file).read_text())
    except (OSError, ValueError):
        return None
    if limit_text == "max":
        return None
    try:
        limit = int(limit_text)
    except ValueError:
        return None
    return None if limit >= UNLIMITED else max(limit - usage, 0)


def _mem_available() -> int:
    """The kernel's estimate of memory available without swapping (Linux), else the physical total."""
    available = _proc_kib("/proc/meminfo", "MemAvailable")
    return available if available is not None else os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def available_bytes(device: str = "cpu") -> int:
    """Memory this process could still take: a GPU's free memory, or RAM (MemAvailable, or the
    cgroup's room where smaller)."""
    if device.startswith("cuda"):
        import torch

        free, _total = torch.cuda.mem_get_info(torch.device(device))
        return int(free)
    available = _mem_available()
    room = _cgroup_room()
    return available if room is None else min(available, room)


def memory_fraction() -> float:
    """DRIVER_MEMORY_FRACTION (0 < f <= 1), the share of available memory one batch may use."""
    text = os.environ.get(MEMORY_FRACTION_ENV, "").strip()
    if not text:
        return DEFAULT_MEMORY_FRACTION
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 < value <= 1:
        from driver.errors import InputError

        raise InputError(f"{MEMORY_FRACTION_ENV}={text!r}: expected a number in (0, 1]")
    return value


@dataclass(frozen=True)
class MemoryBudget:
    """Bytes one batch of model calls may use, and how that figure was reached (for the log)."""

    bytes: int
    source: str

    @classmethod
    def for_device(cls, device: str, sharing: int = 1) -> MemoryBudget:
        """A fraction of what is available, divided among the `sharing` processes of this node
        that draw on the same memory (MPI ranks on the CPU, ranks mapped to the same GPU)."""
        fraction = memory_fraction()
        available = available_bytes(device)
        where = "free GPU memory" if device.startswith("cuda") else "available RAM"
        shared = f", shared by {sharing} processes" if sharing > 1 else ""
        share = int(fraction * available / max(sharing, 1))
        source = f"{fraction:.0%} of {gib(available)} {where}{shared}"
        if not device.startswith("cuda") and share > CPU_BATCH_CAP_BYTES:
            return cls(CPU_BATCH_CAP_BYTES, f"the CPU's cap, below {source}")
        return cls(share, source)


def gib(n_bytes: float) -> str:
    return f"{n_bytes / 2**30:.1f} GiB"


class PeakMemory:
    """The peak memory in use during a `with` block, above what was in use when it began
    (`peak_bytes`), and the part of it that was transient (`transient_bytes`: the peak above what
    was still in use at the end, so one-time set-up kept by a first call is not counted)."""

    def __init__(self, device: str = "cpu", interval_s: float = 0.0005):
        self.device = device
        self.interval_s = interval_s
        self.peak_bytes: int | None = None
        self.transient_bytes: int | None = None
        self._start = 0
        self._peak = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> PeakMemory:
        if self.device.startswith("cuda"):
            import torch

            torch.cuda.synchronize(self.device)
            self._start = torch.cuda.memory_allocated(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            return self
        start = heap_in_use()
        if start is None:
            return self
        self._start = self._peak = start
        self._thread = threading.Thread(target=self._sample, name="peak-memory", daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.is_set():
            now = heap_in_use()
            if now is not None and now > self._peak:
                self._peak = now
            time.sleep(self.interval_s)

    def __exit__(self, *exc) -> None:
        if self.device.startswith("cuda"):
            import torch

            torch.cuda.synchronize(self.device)
            peak, end = int(torch.cuda.max_memory_allocated(self.device)), int(torch.cuda.memory_allocated(self.device))
            self._settle(peak, end)
            return
        if self._thread is None:
            return
        self._stop.set()
        self._thread.join()
        end = heap_in_use()
        self._settle(max(self._peak, end or 0), end if end is not None else self._start)

    def _settle(self, peak: int, end: int) -> None:
        self.peak_bytes = max(peak - self._start, 0)
        self.transient_bytes = max(peak - max(end, self._start), 0)
