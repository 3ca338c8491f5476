"""CHGNet: pretrained weights ship inside the chgnet wheel; fine-tuned `.pth.tar` files load too."""

from __future__ import annotations

from pathlib import Path

from driver.errors import InputError
from driver.provenance import sha256_of_path
from driver.recipe import ModelSpec, unsupported_dtype

DEFAULT_VERSION = "0.3.0"


def bundled_weights(version: str) -> Path | None:
    """The weights file that `CHGNet.load(model_name=version)` reads from the package."""
    import chgnet

    folder = Path(chgnet.__file__).parent / "pretrained" / version
    files = sorted(folder.glob("*.pth.tar"))
    return files[0] if files else None


def load(spec: ModelSpec, device: str, models_dirs: list[Path]):
    from driver.models import LoadedModel

    problem = unsupported_dtype(spec)
    if problem is not None:
        raise InputError(problem)
    from chgnet.model import CHGNet
    from chgnet.model.dynamics import CHGNetCalculator

    if spec.checkpoint:
        try:
            model = CHGNet.from_file(spec.checkpoint)
        except Exception as exc:  # the library raises many types for a bad file
            raise InputError(f"model.checkpoint: {spec.checkpoint}: not a CHGNet checkpoint ({exc})") from None
        source, weights = spec.checkpoint, Path(spec.checkpoint)
    else:
        version = spec.variant or DEFAULT_VERSION
        weights = bundled_weights(version)
        if weights is None:
            raise InputError(f"model.variant: CHGNet version {version!r} is not bundled with chgnet")
        model = CHGNet.load(model_name=version, use_device=device, verbose=False)
        source = f"chgnet-{version}"
    calculator = CHGNetCalculator(model=model, use_device=device)
    return LoadedModel(calculator, "chgnet", source, sha256_of_path(weights), device, spec.dtype)
