"""Fine-tuning with each library's own trainer, on real DFT labels (63/65-atom Si), no mocks.

Few epochs on 6 structures: enough to show the force error drops on the training structures
and that each checkpoint loads through our registry, as a recipe's model.checkpoint would.
"""

from __future__ import annotations

import dataclasses

import pytest
import yaml

from driver.errors import InputError
from driver.finetune import FinetuneReport, finetune, split
from driver.labels import read_labels
from driver.models import load_model
from driver.models.spec import family_of_checkpoint
from driver.specs import ModelSpec
from tests.conftest import SHARED

SI_LABELS = SHARED / "data" / "si_rare_events_pbe.extxyz"


@pytest.fixture(scope="module")
def si_labels():
    if not SI_LABELS.is_file():
        pytest.skip(f"DFT test labels absent: expected {SI_LABELS} (see ../shared/data/README.md)")
    return read_labels([SI_LABELS], energy_key="REF_energy", forces_key="REF_forces", index=":6")


def check_report(report: FinetuneReport, family: str, out_dir, checkpoint_name: str) -> None:
    """Common promises: split, checkpoint in out_dir recognised and loadable by our registry, record written,
    MAE drops."""
    assert report.family == family
    assert (report.n_train, report.n_val) == (5, 1)
    assert report.checkpoint == str(out_dir / checkpoint_name)
    assert family_of_checkpoint(out_dir / checkpoint_name) == family  # by its content, as `--model PATH` finds it
    reloaded = load_model(ModelSpec(name=family, checkpoint=report.checkpoint))
    assert reloaded.family == family and reloaded.weights_sha256 == report.checkpoint_sha256
    assert report.force_mae_train_after < report.force_mae_train_before
    assert report.force_mae_val_before is not None and report.force_mae_val_after is not None
    record = yaml.safe_load((out_dir / "finetune.yaml").read_text())
    assert record["force_mae_train_after"] == pytest.approx(report.force_mae_train_after)
    assert record["checkpoint_sha256"] == report.checkpoint_sha256
    assert record["base_model"]["source"] == report.base_source and record["base_weights_sha256"]
    assert len(record["train_structures"]) == 5 and len(record["validation_structures"]) == 1


def test_chgnet_finetune_lowers_training_force_error(si_labels, tmp_path):
    report = finetune(ModelSpec(name="chgnet"), si_labels, tmp_path, epochs=3, learning_rate=1e-3)
    check_report(report, "chgnet", tmp_path, "chgnet-finetuned.pth.tar")


def test_mace_finetune_from_small_foundation_model(si_labels, small_mace_path, tmp_path):
    spec = ModelSpec(name="mace-mp-0", checkpoint=str(small_mace_path))
    report = finetune(spec, si_labels, tmp_path, epochs=5, learning_rate=1e-2)
    check_report(report, "mace-mp-0", tmp_path, "mace-finetuned.model")
    # Random weights are far from DFT: a few epochs of mace's own training cut the error a lot.
    assert report.force_mae_train_after < 0.8 * report.force_mae_train_before
    assert report.base_source == str(small_mace_path)


def test_m3gnet_finetune_saves_matgl_folder(si_labels, shared_models_dir, tmp_path):
    spec = ModelSpec(name="m3gnet", models_dir=str(shared_models_dir))
    report = finetune(spec, si_labels, tmp_path, epochs=3, learning_rate=1e-3)
    check_report(report, "m3gnet", tmp_path, "m3gnet-finetuned")
    assert (tmp_path / "m3gnet-finetuned" / "model.json").is_file()


def test_labels_without_energies_are_refused(si_labels, tmp_path):
    no_energy = [dataclasses.replace(s, energy_eV=None) for s in si_labels]
    with pytest.raises(InputError, match="no reference energy") as caught:
        finetune(ModelSpec(name="chgnet"), no_energy, tmp_path)
    assert "\n" not in str(caught.value)
    with pytest.raises(InputError, match="got 0"):
        finetune(ModelSpec(name="chgnet"), [], tmp_path)
    assert not (tmp_path / "finetune.yaml").exists()


def test_split_holds_out_only_from_four_structures():
    assert split(3, 0.2, seed=0) == ([0, 1, 2], [])
    train, val = split(6, 0.2, seed=0)
    assert len(val) == 1 and sorted(train + val) == list(range(6))
    assert split(6, 0.2, seed=0) == (train, val)
    assert split(6, 0.0, seed=0) == (list(range(6)), [])


def test_cli_finetune_then_run_the_checkpoint(tmp_path, capsys):
    """The user path: `driver finetune`, then a recipe whose model.checkpoint is the result."""
    if not SI_LABELS.is_file():
        pytest.skip(f"DFT test labels absent: expected {SI_LABELS}")
    from ase.io import read, write

    from driver.cli import main
    from tests.conftest import write_recipe

    labels = tmp_path / "two.extxyz"
    write(labels, read(SI_LABELS, ":2"))
    out = tmp_path / "tuned"
    assert main(["finetune", "--model", "chgnet", "--labels", str(labels), "--out", str(out), "--epochs", "1"]) == 0
    printed = capsys.readouterr().out
    assert "force MAE on training structures" in printed and "no held-out validation" in printed
    checkpoint = out / "chgnet-finetuned.pth.tar"
    recipe = write_recipe(tmp_path, model={"name": "chgnet", "checkpoint": str(checkpoint)}, task={"steps": 4})
    assert main(["run", str(recipe)]) == 0
    summary = yaml.safe_load((tmp_path / "out" / "summary.json").read_text())
    assert summary["model_source"] == str(checkpoint)
    assert summary["model_weights_sha256"] == yaml.safe_load((out / "finetune.yaml").read_text())["checkpoint_sha256"]
    # A second finetune into the same folder is refused without --overwrite.
    assert main(["finetune", "--model", "chgnet", "--labels", str(labels), "--out", str(out)]) == 2
    assert "pass --overwrite" in capsys.readouterr().err
