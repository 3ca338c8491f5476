"""`driver models`: what each family loads by default and where it looks for weights."""

from __future__ import annotations

import importlib.util
import os

from driver.models import MODELS_DIR_ENV
from driver.registry import families


def describe_models() -> str:
    lines = []
    for name, entry in families().items():
        installed = "installed" if importlib.util.find_spec(entry.package) else f"NOT installed ({entry.package})"
        lines.append(f"{name:<10} [{installed}] {entry.description}")
    lines.append(f"{MODELS_DIR_ENV}={os.environ.get(MODELS_DIR_ENV, '(unset)')}")
    return "\n".join(lines)
