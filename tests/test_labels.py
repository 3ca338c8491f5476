"""Labels as users have them: phonopy's finite-displacement files (read with phonopy's loader) and
VASP NEB folders, checked against phonopy's and ASE's own parsers on real PBE/VASP output."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from ase.io import read, write

from driver.errors import InputError
from driver.labels import files_sha256, read_labels
from tests.conftest import SHARED
from tests.fit.test_run import ASE_VASP_DATA

PHONOPY_VASP = SHARED / "data" / "phonopy_vasp"


@pytest.fixture
def nacl():
    if not (PHONOPY_VASP / "NaCl" / "FORCE_SETS").is_file():
        pytest.skip(f"phonopy example absent: expected {PHONOPY_VASP / 'NaCl'} (see ../shared/data/README.md)")
    return PHONOPY_VASP / "NaCl"


def test_phonopy_files_give_each_displaced_supercell_with_its_dft_forces(nacl, tmp_path):
    import phonopy
    from phonopy.file_IO import parse_FORCE_SETS

    dataset = parse_FORCE_SETS(filename=str(nacl / "FORCE_SETS"))
    by_yaml, by_force_sets, by_folder = (read_labels([p]) for p in (nacl / "phonopy_disp.yaml", nacl / "FORCE_SETS", nacl))
    assert len(by_yaml) == len(dataset["first_atoms"]) == 2
    reference = phonopy.load(nacl / "phonopy_disp.yaml", produce_fc=False, is_nac=False, log_level=0)
    for structures in (by_yaml, by_force_sets, by_folder):
        for s, displaced, entry in zip(structures, reference.supercells_with_displacements, dataset["first_atoms"], strict=True):
            assert len(s.atoms) == 64 and s.energy_eV is None and s.atoms.info["config_type"] == "phonopy displacement"
            np.testing.assert_array_equal(s.forces_eV_A, entry["forces"])
            np.testing.assert_allclose(s.atoms.get_scaled_positions(wrap=False), displaced.scaled_positions, atol=1e-12)
            # The displaced atom moved by the dataset's displacement from the perfect supercell.
            moved = s.atoms.positions[entry["number"]] - reference.supercell.positions[entry["number"]]
            np.testing.assert_allclose(moved, entry["displacement"], atol=1e-10)
    assert files_sha256([nacl]) == files_sha256([nacl / "phonopy_disp.yaml"])  # both: yaml + FORCE_SETS

    # phonopy_params.yaml holding displacements and forces (as `phonopy.save` writes it) reads the same.
    reference.dataset = dataset
    reference.save(tmp_path / "phonopy_params.yaml")
    params = read_labels([tmp_path / "phonopy_params.yaml"])
    np.testing.assert_allclose(params[1].forces_eV_A, by_yaml[1].forces_eV_A)

    only_displacements = tmp_path / "alone"
    only_displacements.mkdir()
    shutil.copy(nacl / "phonopy_disp.yaml", only_displacements)
    with pytest.raises(InputError, match="no forces, and there is no FORCE_SETS beside it"):
        read_labels([only_displacements / "phonopy_disp.yaml"])
    lonely = tmp_path / "lonely"
    lonely.mkdir()
    shutil.copy(nacl / "FORCE_SETS", lonely)
    with pytest.raises(InputError, match="no phonopy_params.yaml or phonopy_disp.yaml or phonopy.yaml beside it"):
        read_labels([lonely / "FORCE_SETS"])


def test_vasp_neb_folder_gives_each_computed_image(tmp_path):
    """00/ … NN/ as VASP leaves them: the end points hold only a POSCAR, the images an OUTCAR or vasprun.xml."""
    outcar, vasprun = ASE_VASP_DATA / "OUTCAR_example_1", ASE_VASP_DATA / "vasprun_pstress.xml"
    neb = tmp_path / "neb"
    for image, output in (("00", None), ("01", outcar), ("02", vasprun), ("03", None)):
        (neb / image).mkdir(parents=True)
        write(neb / image / "POSCAR", read(output or outcar), format="vasp")  # ASE's OUTCAR reader looks at it
        if output is not None:
            shutil.copy(output, neb / image / ("OUTCAR" if output == outcar else "vasprun.xml"))
    structures = read_labels([neb])
    assert [s.atoms.info["neb_image"] for s in structures] == [1, 2]
    assert all(s.atoms.info["config_type"] == "NEB image" for s in structures)
    np.testing.assert_array_equal(structures[0].forces_eV_A, read(outcar, index=-1).get_forces())
    assert structures[0].energy_eV == pytest.approx(read(outcar, index=-1).get_potential_energy())
    assert not structures[1].forces_eV_A.any()  # C2 on symmetry sites
    assert len(files_sha256([neb])) == 64

    (neb / "02" / "vasprun.xml").unlink()  # an intermediate image without output is an error, not a gap
    with pytest.raises(InputError, match="02: NEB image without vasprun.xml or OUTCAR"):
        read_labels([neb])
    (neb / "empty").mkdir()
    with pytest.raises(InputError, match="must be a VASP NEB folder"):
        read_labels([neb / "empty"])
