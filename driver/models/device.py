"""Pick the torch device for this process: a GPU per rank when present, else the CPU."""

from __future__ import annotations

from driver.errors import InputError


def resolve_device(requested: str, local_rank: int = 0) -> str:
    """`auto` maps rank r to GPU r % n_gpus, or to the CPU when torch sees no GPU."""
    import torch

    n_gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if requested == "auto":
        return f"cuda:{local_rank % n_gpus}" if n_gpus else "cpu"
    if requested.startswith("cuda"):
        if n_gpus == 0:
            raise InputError(f"model.device: {requested!r} requested but torch sees no GPU")
        index = int(requested.partition(":")[2] or 0)
        if index >= n_gpus:
            raise InputError(f"model.device: {requested!r} requested but only {n_gpus} GPU(s) exist")
    return requested
