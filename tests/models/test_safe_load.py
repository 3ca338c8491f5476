"""Checkpoints are code: CHGNet's files (bundled and chgnet's own save) load with torch's
weights-only unpickler and give chgnet's own model; files that cannot (MACE's pickled modules, a
CHGNet file holding other objects) are logged with their sha256 and refused under DRIVER_SAFE_LOAD=1."""

from __future__ import annotations

import datetime
import logging

import numpy as np
import pytest
import torch
from ase.build import bulk

from driver.cli import main
from driver.errors import InputError
from driver.models import load_model
from driver.provenance import sha256_of_path
from driver.specs import ModelSpec
from tests.conftest import write_recipe


def test_bundled_chgnet_loads_as_weights_only_and_equals_chgnets_own_load(caplog, monkeypatch):
    from chgnet.model import CHGNet

    monkeypatch.setenv("DRIVER_SAFE_LOAD", "1")  # nothing here needs to run code
    with caplog.at_level(logging.WARNING):
        ours = load_model(ModelSpec(name="chgnet", device="cpu")).calculator.model
    assert "loaded as a pickle" not in caplog.text
    theirs = CHGNet.load(model_name="0.3.0", use_device="cpu", verbose=False)
    mine, stock = ours.state_dict(), theirs.state_dict()
    assert mine.keys() == stock.keys()
    assert all(torch.equal(mine[key], stock[key]) for key in mine)
    atoms = bulk("Si", "diamond", a=5.43, cubic=True)
    atoms.rattle(0.05, seed=1)
    a, b = ours.predict_structure(_structure(atoms)), theirs.predict_structure(_structure(atoms))
    np.testing.assert_array_equal(a["f"], b["f"])


def _structure(atoms):
    from pymatgen.io.ase import AseAtomsAdaptor

    return AseAtomsAdaptor.get_structure(atoms)


@pytest.fixture
def chgnet_file_with_an_object(tmp_path, chgnet_model):
    """chgnet's checkpoint layout plus an object outside torch's weights-only allow-list."""
    path = tmp_path / "with-object.pth.tar"
    torch.save({"model": chgnet_model.calculator.model.as_dict(), "saved_at": datetime.datetime(2026, 1, 1)}, path)
    return path


def test_a_chgnet_file_holding_objects_is_logged_with_its_sha256(chgnet_file_with_an_object, caplog):
    with caplog.at_level(logging.WARNING, logger="driver.models.pickles"):
        load_model(ModelSpec(name="chgnet", checkpoint=str(chgnet_file_with_an_object), device="cpu"))
    assert f"sha256 {sha256_of_path(chgnet_file_with_an_object)}" in caplog.text
    assert "loaded as a pickle, which runs code it holds" in caplog.text


def test_safe_load_refuses_what_would_run_code(chgnet_file_with_an_object, small_mace_path, monkeypatch):
    monkeypatch.setenv("DRIVER_SAFE_LOAD", "1")
    for spec in (ModelSpec(name="chgnet", checkpoint=str(chgnet_file_with_an_object), device="cpu"),
                 ModelSpec(name="mace-mp-0", checkpoint=str(small_mace_path), device="cpu")):
        with pytest.raises(InputError, match=f"sha256 {sha256_of_path(spec.checkpoint)}.*DRIVER_SAFE_LOAD=1 refuses it"):
            load_model(spec)


def test_safe_load_refusal_is_one_line_and_exit_2(tmp_path, capsys, small_mace_path, monkeypatch):
    monkeypatch.setenv("DRIVER_SAFE_LOAD", "1")
    recipe = write_recipe(tmp_path, model={"name": "mace-mp-0", "checkpoint": str(small_mace_path)})
    assert main(["run", str(recipe)]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "a MACE file that cannot be loaded as plain weights" in errors[0]


def test_mace_loads_with_the_digest_logged_when_not_refused(small_mace_path, caplog):
    with caplog.at_level(logging.WARNING, logger="driver.models.pickles"):
        load_model(ModelSpec(name="mace-mp-0", checkpoint=str(small_mace_path), device="cpu", dtype="float64"))
    assert f"sha256 {sha256_of_path(small_mace_path)}" in caplog.text
