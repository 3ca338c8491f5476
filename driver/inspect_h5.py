"""`driver inspect`: say what an output file holds, without the user learning h5py."""

from __future__ import annotations

import json
from pathlib import Path

import h5py

from driver.h5read import reading

_LONG_ATTRIBUTES = {"recipe", "package_versions"}


def _attribute_groups(handle: h5py.File) -> list[h5py.Group]:
    """/parameters and every group under /results that carries attributes."""
    groups = []
    for top in ("parameters", "results"):
        if top in handle:
            candidates = [handle[top]]
            handle[top].visititems(lambda _name, item, found=candidates: found.append(item))
            groups += [g for g in candidates if isinstance(g, h5py.Group) and g.attrs]
    return groups


def describe(path: str | Path) -> str:
    path = Path(path)
    lines = []
    with reading(path) as handle:
        lines.append(f"{path}: status {handle.attrs.get('status', 'unknown')}")
        if "particles/all/species" in handle:
            symbols = json.loads(handle["particles/all/species"].attrs.get("symbols", "[]"))
            lines.append(f"  atoms: {len(symbols)}")
        if "particles/all/position/value" in handle:
            time = handle["particles/all/position/time"]
            frames = time.shape[0]
            span = f", t = {time[0]:g} … {time[-1]:g} {time.attrs.get('unit', '')}" if frames else ""
            lines.append(f"  frames: {frames}{span}")

        def walk(group: h5py.Group, prefix: str = "") -> None:
            # Not visititems: it visits a hard-linked dataset once, under whichever path comes
            # first, so the shared step/time of position would be listed under an observable only.
            for key, item in group.items():
                name = prefix + key
                if isinstance(item, h5py.Dataset):
                    unit = item.attrs.get("unit")
                    lines.append(f"  {name}  {item.shape} {item.dtype}" + (f" [{unit}]" if unit else ""))
                elif isinstance(item, h5py.Group):
                    walk(item, name + "/")

        walk(handle)
        for group in _attribute_groups(handle):
            lines.append(f"  {group.name}:")
            for key, value in group.attrs.items():
                text = "(…)" if key in _LONG_ATTRIBUTES else str(value)
                lines.append(f"    {key} = {text}")
    return "\n".join(lines)
