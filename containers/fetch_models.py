"""Model weights for the image: download at build time, check at test time.

    python containers/fetch_models.py fetch --out /opt/models --mace-sizes "small medium" [--dry-run]
    python containers/fetch_models.py check [--dir DIR] [--require-m3gnet NAME] [--require-mace "small medium"]

`fetch` uses each library's own download: matgl's (what `matgl.load_model(name)` fetches from the
Hugging Face hub) and mace's `download_mace_mp_checkpoint(size)`, then copies the files where the
driver looks for named weights (driver/models/*.py):

    OUT/M3GNet-MP-2021.2.8-PES/{model.json, model.pt, state.pt}   (a matgl folder)
    OUT/mace-mp-0-<size>.model                                     (one per size)
    OUT/SHA256SUMS                                                 (sha256sum -c format)

CHGNet needs nothing: its weights ship inside the chgnet wheel. `--dry-run` prints the plan and
touches neither the network nor OUT (the CI test runs it; the download itself needs internet).

`check` loads every model found in DIR (default $DRIVER_MODELS_DIR) through the driver itself,
by family and name as a recipe names them, with DRIVER_OFFLINE=1 so nothing is downloaded, and
evaluates one 8-atom silicon cell on the CPU. It fails when a required model is missing.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import sys
from pathlib import Path

M3GNET_DEFAULT = "M3GNet-MP-2021.2.8-PES"
MATGL_FILES = ("model.json", "model.pt", "state.pt")


def mace_file(size: str) -> str:
    return f"mace-mp-0-{size}.model"


def plan(out: Path, m3gnet: str | None, mace_sizes: list[str]) -> list[tuple[str, str, Path]]:
    """(family, name, destination) for every download, in order."""
    items = []
    if m3gnet:
        items.append(("m3gnet", m3gnet, out / m3gnet))
    items += [("mace-mp-0", size, out / mace_file(size)) for size in mace_sizes]
    return items


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fetch_m3gnet(name: str, dest: Path) -> None:
    import matgl
    from matgl.utils.io import _get_file_paths  # what matgl.load_model(name) downloads with

    paths = _get_file_paths(Path(name), str_path=name)
    dest.mkdir(parents=True, exist_ok=True)
    for fname in MATGL_FILES:
        shutil.copyfile(paths[fname], dest / fname)
    matgl.load_model(str(dest))  # the copy must load as a local matgl folder


def fetch_mace(size: str, dest: Path) -> None:
    from mace.calculators.foundations_models import download_mace_mp_checkpoint

    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(download_mace_mp_checkpoint(size), dest)


def fetch(out: Path, m3gnet: str | None, mace_sizes: list[str], dry_run: bool) -> int:
    items = plan(out, m3gnet, mace_sizes)
    for family, name, dest in items:
        print(f"{'would fetch' if dry_run else 'fetching'} {family} {name} -> {dest}", flush=True)
        if not dry_run:
            (fetch_m3gnet if family == "m3gnet" else fetch_mace)(name, dest)
    if dry_run:
        print("chgnet: weights ship inside the chgnet wheel (nothing to fetch)")
        return 0
    files = sorted(p for p in out.rglob("*") if p.is_file() and p.name != "SHA256SUMS")
    (out / "SHA256SUMS").write_text("".join(f"{_sha256(p)}  {p.relative_to(out)}\n" for p in files))
    print(f"wrote {out / 'SHA256SUMS'} ({len(files)} files)")
    return 0


def found_models(folder: Path) -> list[tuple[str, str]]:
    """(family, variant) of every named model the driver would find in `folder`."""
    models = [("m3gnet", p.name) for p in sorted(folder.iterdir()) if (p / "model.json").is_file()]
    models += [("mace-mp-0", p.name[len("mace-mp-0-"):-len(".model")])
               for p in sorted(folder.glob("mace-mp-0-*.model"))]
    return models


def check(folder: Path, require_m3gnet: str | None, require_mace: list[str]) -> int:
    os.environ["DRIVER_OFFLINE"] = "1"
    models = found_models(folder) if folder.is_dir() else []
    missing = ([("m3gnet", require_m3gnet)] if require_m3gnet else []) + [("mace-mp-0", s) for s in require_mace]
    missing = [m for m in missing if m not in models]
    if missing:
        print(f"error: {folder}: missing baked weights: {', '.join(f'{f} {n}' for f, n in missing)}", file=sys.stderr)
        return 1
    if not models:
        print(f"no named models in {folder} (CHGNet's ship with its wheel)")
        return 0
    from ase.build import bulk

    from driver.models import load_model
    from driver.recipe import ModelSpec

    for family, variant in models:
        # no models_dir in the spec: the driver must find the weights through $DRIVER_MODELS_DIR
        loaded = load_model(ModelSpec(name=family, variant=variant, device="cpu"))
        atoms = bulk("Si", "diamond", a=5.43, cubic=True)
        atoms.calc = loaded.calculator
        energy = atoms.get_potential_energy()
        print(f"ok {family} {variant}: {loaded.source}, sha256 {str(loaded.weights_sha256)[:12]}, "
              f"E(Si8) = {energy:.3f} eV")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    f = sub.add_parser("fetch", help="download weights into --out (build time, needs internet)")
    f.add_argument("--out", type=Path, required=True)
    f.add_argument("--m3gnet", default=M3GNET_DEFAULT, help="matgl model name; '' to skip")
    f.add_argument("--mace-sizes", default="medium", help="space- or comma-separated MACE-MP-0 sizes; '' to skip")
    f.add_argument("--dry-run", action="store_true")
    c = sub.add_parser("check", help="load every baked model through the driver, offline")
    c.add_argument("--dir", type=Path, default=None)
    c.add_argument("--require-m3gnet", default="")
    c.add_argument("--require-mace", default="")
    args = parser.parse_args(argv)

    def sizes(text: str) -> list[str]:
        return [s for s in text.replace(",", " ").split() if s]

    if args.command == "fetch":
        return fetch(args.out, args.m3gnet or None, sizes(args.mace_sizes), args.dry_run)
    folder = args.dir or Path(os.environ.get("DRIVER_MODELS_DIR", "").split(os.pathsep)[0] or ".")
    return check(folder, args.require_m3gnet or None, sizes(args.require_mace))


if __name__ == "__main__":
    sys.exit(main())
