"""Checkpoints given by path are told apart by their content, never by their name (issue 26), and
recognising one never unpickles it (a pickle is code)."""

from __future__ import annotations

import dataclasses
import os
import pickle
import shutil
import zipfile
from pathlib import Path

import pytest

from driver.cli import main
from driver.errors import InputError
from driver.models.checkpoint_kind import torch_pickle_names
from driver.models.spec import family_of_checkpoint, spec_from_cli
from driver.registry import families, register, unregister

MACE = "mace-mp-0"


def _bundled_chgnet() -> Path:
    from driver.models.chgnet import DEFAULT_VERSION, bundled_weights

    return bundled_weights(DEFAULT_VERSION)


def _claimed_by(path: Path) -> list[str]:
    return [name for name, entry in families().items() if entry.is_checkpoint(path)]


@pytest.fixture
def no_unpickling(monkeypatch):
    """Every way torch or pickle would build objects from a file raises for the test's duration."""
    import _pickle

    import torch

    def refuse(*args, **kwargs):
        raise AssertionError("checkpoint recognition unpickled a file")

    for owner, name in [(pickle, "load"), (pickle, "loads"), (pickle, "Unpickler"), (_pickle, "load"),
                        (_pickle, "loads"), (_pickle, "Unpickler"), (torch, "load"), (torch.serialization, "load")]:
        monkeypatch.setattr(owner, name, refuse)


@pytest.mark.parametrize("name", ["weights.pth", "weights.pth.tar", "weights.model", "weights"])
def test_a_mace_model_is_mace_whatever_its_name(small_mace_path, tmp_path, name, no_unpickling):
    path = tmp_path / name
    shutil.copy(small_mace_path, path)
    assert _claimed_by(path) == [MACE]
    assert family_of_checkpoint(path) == MACE


@pytest.mark.parametrize("save", [{"pickle_protocol": 4}, {"_use_new_zipfile_serialization": False}],
                         ids=["protocol-4", "pre-zip-format"])
def test_a_mace_model_in_other_torch_save_formats(small_mace_path, tmp_path, save):
    # mace first: it relaxes torch.load for e3nn's pickled constants (../shared/models/README.md).
    from mace import modules  # noqa: F401  # isort: skip
    import torch

    path = tmp_path / "weights.pth"
    torch.save(torch.load(small_mace_path, weights_only=False), path, **save)
    names = torch_pickle_names(path)
    assert names is not None and names.first_class == ("mace.modules.models", "ScaleShiftMACE")
    assert _claimed_by(path) == [MACE]


def test_a_mace_pth_loads_as_mace(small_mace_path, tmp_path, rattled_si):
    """The issue's case end to end: `--model x.pth` holding a MACE model was loaded by CHGNet."""
    from driver.models import load_model

    path = tmp_path / "x.pth"
    shutil.copy(small_mace_path, path)
    spec = spec_from_cli(str(path), dtype="float64")
    assert spec.name == MACE and spec.checkpoint == str(path.resolve())
    atoms = rattled_si.copy()
    atoms.calc = load_model(spec).calculator
    assert atoms.get_forces().shape == (len(atoms), 3)


@pytest.mark.parametrize("name", ["chgnet.pth.tar", "chgnet.pth", "chgnet.bin", "chgnet"])
def test_chgnets_own_checkpoint_is_chgnet_whatever_its_name(tmp_path, name, no_unpickling):
    """The bundled weights are a file of chgnet's `Trainer.save` (model, optimizer, scheduler)."""
    path = tmp_path / name
    shutil.copy(_bundled_chgnet(), path)
    assert _claimed_by(path) == ["chgnet"]
    assert spec_from_cli(str(path)).name == "chgnet"


def test_what_driver_finetune_writes_for_chgnet_is_chgnet(chgnet_model, tmp_path):
    """driver.finetune.chgnet keeps `Trainer.save`'s file; it is recognised without its extension too."""
    from chgnet.model import CHGNet
    from chgnet.trainer import Trainer

    from driver.finetune.chgnet import CHECKPOINT_NAME

    model = CHGNet.from_dict(chgnet_model.calculator.model.as_dict())
    trainer = Trainer(model=model, targets="ef", optimizer="Adam", scheduler="CosLR", criterion="MSE", epochs=1,
                      learning_rate=1e-3, use_device="cpu")
    path = tmp_path / CHECKPOINT_NAME
    trainer.save(filename=str(path))
    renamed = tmp_path / "tuned"
    shutil.copy(path, renamed)
    assert _claimed_by(path) == ["chgnet"] and _claimed_by(renamed) == ["chgnet"]


def test_a_matgl_folder_is_m3gnet(tmp_path, no_unpickling):
    (tmp_path / "m3g").mkdir()
    (tmp_path / "m3g" / "model.json").write_text("{}")
    assert family_of_checkpoint(tmp_path / "m3g") == "m3gnet"


def _torch_file_of_no_family(path: Path) -> Path:
    import torch

    torch.save({"weights": torch.zeros(3), "note": "not a model"}, path)
    return path


@pytest.mark.parametrize("make", [
    lambda folder: _torch_file_of_no_family(folder / "other.pth"),
    lambda folder: _write(folder / "junk.pth", b"not a checkpoint at all\n"),
    lambda folder: _write(folder / "junk.model", b"PK\x03\x04 truncated zip"),
    lambda folder: _write(folder / "empty.pth.tar", b""),
], ids=["torch-file-of-no-family", "text-pth", "broken-zip-model", "empty-pth-tar"])
def test_a_file_of_no_family_is_refused_in_one_line(tmp_path, make, capsys):
    path = make(tmp_path)
    assert _claimed_by(path) == []
    with pytest.raises(InputError, match="cannot tell the model family of .* from its content") as refused:
        family_of_checkpoint(path)
    assert str(path) in str(refused.value) and "--family" in str(refused.value)
    code = main(["fit", "--model", str(path), "--labels", str(tmp_path / "labels.extxyz"),
                 "--out", str(tmp_path / "c.yaml")])
    errors = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(errors) == 1 and errors[0].startswith("error: --model: cannot tell")


def test_a_file_claimed_by_two_families_asks_for_the_family(small_mace_path, tmp_path):
    greedy = dataclasses.replace(families()["chgnet"], name="greedy", is_checkpoint=lambda path: True)
    register(greedy)
    try:
        with pytest.raises(InputError, match=r"by more than one family \(mace-mp-0, greedy\); give its family "
                                             "with --family"):
            family_of_checkpoint(small_mace_path)
        assert spec_from_cli(str(small_mace_path), family=MACE).name == MACE  # --family settles it
    finally:
        unregister("greedy")


def test_recognition_runs_nothing_the_pickle_names(tmp_path):
    """A pickle that would create a folder when unpickled: recognised or not, the folder never appears."""
    marker = tmp_path / "ran"
    trap = _Trap(marker)
    chgnet_shaped = {"model": {"state_dict": {}, "model_args": {"atom_graph_cutoff": 6, "bond_graph_cutoff": 3}},
                     "trap": trap}
    lone = _torch_shaped(tmp_path / "trap.pth", pickle.dumps(trap, protocol=2))
    shaped = _torch_shaped(tmp_path / "trap.pth.tar", pickle.dumps(chgnet_shaped, protocol=2))
    assert torch_pickle_names(lone).first_class == (os.mkdir.__module__, "mkdir")
    assert _claimed_by(lone) == []
    assert _claimed_by(shaped) == ["chgnet"]  # by its content: loading it is the user's explicit choice
    assert not marker.exists()


def test_oversized_or_missing_files_are_nobodys(tmp_path, monkeypatch, small_mace_path):
    import driver.models.checkpoint_kind as checkpoint_kind

    assert torch_pickle_names(tmp_path / "absent.pth") is None
    assert torch_pickle_names(tmp_path) is None
    monkeypatch.setattr(checkpoint_kind, "MAX_PICKLE_BYTES", 1024)  # the small MACE's pickle is ~220 kB
    assert torch_pickle_names(small_mace_path) is None


class _Trap:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.mkdir, (str(self.marker),)


def _write(path: Path, content: bytes) -> Path:
    path.write_bytes(content)
    return path


def _torch_shaped(path: Path, data_pkl: bytes) -> Path:
    """A zip laid out as torch.save lays it out, around a given pickle."""
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr(f"{path.name}/data.pkl", data_pkl)
        archive.writestr(f"{path.name}/version", "3\n")
    return path

