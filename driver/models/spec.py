"""Turn a command-line `--model NAME_OR_PATH` into a ModelSpec, as a recipe's `model:` would be."""

from __future__ import annotations

from pathlib import Path

from driver.errors import InputError
from driver.registry import families, family_names
from driver.specs import ModelSpec


def family_of_checkpoint(path: Path) -> str:
    """Each library's own checkpoint form tells the family."""
    for name, entry in families().items():
        if entry.is_checkpoint(path):
            return name
    raise InputError(f"--model: cannot tell the model family of {path}; expected a matgl folder, a CHGNet "
                     ".pth.tar or a MACE .model (or give --family)")


def spec_from_cli(name_or_path: str, *, family: str | None = None, variant: str | None = None,
                  dtype: str = "float32", device: str = "auto", models_dir: str | None = None) -> ModelSpec:
    fields: dict[str, object] = {"variant": variant, "dtype": dtype, "device": device, "models_dir": models_dir}
    if name_or_path in family_names() and family is None:
        fields["name"] = name_or_path
    else:
        path = Path(name_or_path).expanduser()
        if not path.exists():
            known = ", ".join(family_names())
            raise InputError(f"--model: {name_or_path!r} is neither a model name ({known}) nor an existing path")
        fields["name"] = family or family_of_checkpoint(path)
        fields["checkpoint"] = str(path.resolve())
    try:
        return ModelSpec(**{k: v for k, v in fields.items() if v is not None})
    except ValueError as exc:  # pydantic's ValidationError is a ValueError
        first = exc.errors()[0] if hasattr(exc, "errors") else {"loc": (), "msg": str(exc)}
        where = ".".join(str(p) for p in first["loc"])
        raise InputError(f"--model: {where}: {first['msg'].removeprefix('Value error, ')}") from None
