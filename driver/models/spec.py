"""Turn a command-line `--model NAME_OR_PATH` into a ModelSpec, as a recipe's `model:` would be."""

from __future__ import annotations

from pathlib import Path

from driver.errors import InputError
from driver.registry import families, family_names
from driver.specs import ModelSpec


def family_of_checkpoint(path: Path) -> str:
    """The one family that recognises the checkpoint by its content (never by its name: a `.pth` may
    be any library's); none or several is a question only the user can answer, with --family."""
    claimed = [name for name, entry in families().items() if entry.is_checkpoint(path)]
    if len(claimed) == 1:
        return claimed[0]
    if claimed:
        raise InputError(f"--model: {path} is recognised as a checkpoint by more than one family "
                         f"({', '.join(claimed)}); give its family with --family")
    raise InputError(f"--model: cannot tell the model family of {path} from its content; expected a matgl "
                     "model folder, a CHGNet checkpoint (chgnet's Trainer.save) or a whole MACE model "
                     "(torch.save); give its family with --family")


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
