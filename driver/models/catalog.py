"""`driver models`: what each family loads by default and where it looks for weights."""

from __future__ import annotations

import importlib.util
import os

from driver.models import MODELS_DIR_ENV

FAMILIES = {
    "chgnet": ("chgnet", "variant: CHGNet version (default 0.3.0), weights bundled in the chgnet wheel; "
               "checkpoint: a fine-tuned .pth.tar"),
    "m3gnet": ("matgl", "variant: matgl model name (default M3GNet-MP-2021.2.8-PES), looked up in "
               "model.models_dir, $DRIVER_MODELS_DIR, then matgl's cache/download; checkpoint: a matgl folder"),
    "mace-mp-0": ("mace", "variant: MACE-MP-0 size (small, medium, large, ...; default medium), looked up "
                  "in model.models_dir, $DRIVER_MODELS_DIR, then mace's cache/download; checkpoint: a .model file"),
}


def describe_models() -> str:
    lines = []
    for name, (package, text) in FAMILIES.items():
        installed = "installed" if importlib.util.find_spec(package) else f"NOT installed ({package})"
        lines.append(f"{name:<10} [{installed}] {text}")
    lines.append(f"{MODELS_DIR_ENV}={os.environ.get(MODELS_DIR_ENV, '(unset)')}")
    return "\n".join(lines)
