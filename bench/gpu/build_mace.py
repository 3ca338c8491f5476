"""Build the random-weight MACE with MACE-MP-0 medium's architecture into PATH (and PATH.json,
what it is), writing PATH.part while it works so that bench.py can wait for it.

    python bench/gpu/build_mace.py PATH [--size medium|small]

Constructing it takes tens of seconds (mace's U matrices for correlation 3, max_ell 3), so the
device script starts it beside the GPU tests.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.conftest import MEDIUM_MACE_DESCRIPTION, build_medium_mace, build_small_mace  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("path", type=Path)
    parser.add_argument("--size", choices=["medium", "small"], default="medium")
    args = parser.parse_args()
    part = args.path.with_suffix(args.path.suffix + ".part")
    args.path.parent.mkdir(parents=True, exist_ok=True)
    part.write_text("building\n")
    try:
        start = time.perf_counter()
        built = (build_medium_mace if args.size == "medium" else build_small_mace)(part)
        import torch

        model = torch.load(built, weights_only=False)
        info = {"description": MEDIUM_MACE_DESCRIPTION if args.size == "medium" else
                "small random-weight ScaleShiftMACE of the tests (8x0e+8x1o, 2 interactions, r_max 4 Å)",
                "size": args.size, "parameters": sum(p.numel() for p in model.parameters()),
                "build_s": round(time.perf_counter() - start, 1)}
        args.path.with_suffix(".json").write_text(json.dumps(info) + "\n")
        part.replace(args.path)
    finally:
        part.unlink(missing_ok=True)
    print(f"built {args.path}: {info}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
