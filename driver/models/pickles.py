"""Checkpoints that are code: a pickle runs whatever it names when unpickled.

torch's weights-only unpickler loads tensors, containers and numbers and nothing else. The
driver loads with it wherever a family's format allows (CHGNet's checkpoints, bundled and
fine-tuned; matgl loads M3GNet that way itself). Where it cannot (MACE's `.model` files are whole
pickled modules; a CHGNet file holding other objects), the load is logged with the file's sha256,
and DRIVER_SAFE_LOAD=1 refuses it (exit 2). Importing mace sets TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD
for the whole process, which only changes torch.load's default: the explicit weights_only=True
here still holds.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from driver.errors import InputError
from driver.provenance import sha256_of_path

log = logging.getLogger(__name__)

SAFE_LOAD_ENV = "DRIVER_SAFE_LOAD"


def safe_load_required() -> bool:
    return os.environ.get(SAFE_LOAD_ENV, "").strip().lower() not in ("", "0", "false", "no")


def allow_code_load(path: str | Path, family: str, why: str) -> None:
    """Before unpickling `path` as code: refuse under DRIVER_SAFE_LOAD=1, else log its sha256."""
    digest = sha256_of_path(Path(path))
    if safe_load_required():
        raise InputError(f"model: {path}: a {family} file that cannot be loaded as plain weights ({why}); "
                         f"loading it would run code it holds (sha256 {digest}); {SAFE_LOAD_ENV}=1 refuses it")
    log.warning("model: %s is loaded as a pickle, which runs code it holds (%s); sha256 %s: load only files "
                "you made or checked (%s=1 refuses such loads)", path, why, digest, SAFE_LOAD_ENV)


def load_weights_only(path: str | Path):
    """torch.load with the weights-only unpickler, or None where the file holds anything else."""
    import pickle

    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        return None
