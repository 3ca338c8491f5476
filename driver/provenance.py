"""What a result needs to be reproducible: versions, hashes, host, times."""

from __future__ import annotations

import datetime as _dt
import hashlib
import platform
import socket
from importlib import metadata
from pathlib import Path

CORE_PACKAGES = ("umlip-driver", "ase", "torch", "numpy", "h5py", "pydantic", "phonopy")


def tracked_packages() -> tuple[str, ...]:
    """The driver's own stack and every registered model family's (its registry entry)."""
    from driver.registry import families

    names = list(CORE_PACKAGES)
    for entry in families().values():
        names += [n for n in entry.distributions if n not in names]
    return tuple(names)


def package_versions(names: tuple[str, ...] | None = None) -> dict[str, str]:
    """Installed versions of the packages that shape a result; absent ones are omitted."""
    versions = {}
    for name in names if names is not None else tracked_packages():
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def sha256_of_path(path: str | Path) -> str:
    """sha256 of a file, or of a folder's files (sorted by relative path, name and bytes)."""
    path = Path(path)
    digest = hashlib.sha256()
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for file in files:
        if path.is_dir():
            digest.update(str(file.relative_to(path)).encode())
        with open(file, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def now_iso() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


def host_description() -> str:
    return f"{socket.gethostname()} ({platform.system()} {platform.machine()}, Python {platform.python_version()})"
