"""containers/driver.def without Apptainer (it cannot be installed on CI machines).

What is real here: the definition file is parsed into its header and sections, build arguments
are substituted the way `apptainer build --build-arg` does, and the section bodies taken FROM THE
FILE are executed with /bin/sh: %setup and %files into a temporary PREFIX, %post's full install
(containers/install.sh: a fresh venv, torch, then a non-editable install of the copied tree and
its `mpi` extra with the pins, from the package registries), %environment + %runscript on the
quick-start recipe, `driver` and `mpiexec` through %environment as `apptainer exec` would,
containers/slurm/multi_gpu_mpi.sbatch's command line with srun and apptainer replaced by stand-ins
(two ranks of the installed MPICH), and %test. The quick-start recipe is cut to 20 steps to keep
the time down. What is not: the docker base image, GPU/--nv, the weights download (FETCH_MODELS=0
here; the fetch plan is run with --dry-run), Slurm, and Apptainer's own parsing and containment.
test_image_sections_* takes ~1.5 min here (2 cores, idle), several on a loaded machine.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import pytest
import yaml

from tests.conftest import M3GNET_NAME, ROOT, SHARED_MODELS, build_small_mace

DEF_FILE = ROOT / "containers" / "driver.def"
SECTION_RE = re.compile(r"^%(\w+)\s*(.*)$")
TEMPLATE_RE = re.compile(r"{{\s*(\w+)\s*}}")


def parse_def(text: str) -> tuple[dict[str, str], dict[str, str]]:
    """Header keywords and section bodies; a repeated section is appended, as Apptainer does."""
    header: dict[str, str] = {}
    sections: dict[str, str] = {}
    current = None
    for line in text.splitlines():
        match = SECTION_RE.match(line)
        if match:
            current = match.group(1)
            sections.setdefault(current, "")
            continue
        if current is None:
            if line.strip() and not line.lstrip().startswith("#"):
                key, sep, value = line.partition(":")
                assert sep, f"header line without 'Keyword:': {line!r}"
                header[key.strip()] = value.strip()
        else:
            sections[current] += line + "\n"
    return header, sections


def build_args(sections: dict[str, str]) -> dict[str, str]:
    args = {}
    for line in sections["arguments"].splitlines():
        if line.strip() and not line.strip().startswith("#"):
            key, _, value = line.strip().partition("=")
            args[key] = value
    return args


def render(text: str, args: dict[str, str]) -> str:
    """As Apptainer substitutes {{ NAME }} with build arguments (a missing one is an error)."""
    return TEMPLATE_RE.sub(lambda m: args[m.group(1)], text)


@pytest.fixture(scope="module")
def definition():
    return parse_def(DEF_FILE.read_text())


def test_definition_parses_into_its_sections(definition):
    header, sections = definition
    assert header["Bootstrap"] == "docker" and header["From"] == "{{ BASE_IMAGE }}"
    for name in ("arguments", "setup", "files", "post", "environment", "runscript", "test", "labels", "help"):
        assert sections.get(name, "").strip(), f"%{name} missing or empty"
    args = build_args(sections)
    assert "cuda" in args["BASE_IMAGE"] and args["BASE_IMAGE"].startswith("pytorch/pytorch:")
    assert {"TORCH", "MACE_SIZES", "M3GNET", "FETCH_MODELS", "PREFIX"} <= set(args)
    assert args["M3GNET"] == M3GNET_NAME
    used = set(TEMPLATE_RE.findall(DEF_FILE.read_text()))
    assert used <= set(args), f"build arguments without a default: {used - set(args)}"

    env = render(sections["environment"], args)
    assert 'DRIVER_MODELS_DIR="/opt/models"' in env and "DRIVER_OFFLINE=1" in env
    assert sections["runscript"].strip() == 'exec driver run "$@"'
    assert "containers/install.sh" in sections["post"] and "fetch_models.py" in sections["post"]
    assert '"$src[mpi]"' in sections["post"], "the image installs the `mpi` extra, as `make setup` does"

    version = re.search(r'^version = "([^"]+)"', (ROOT / "pyproject.toml").read_text(), re.M).group(1)
    labels = dict(line.strip().split(None, 1) for line in sections["labels"].splitlines() if line.strip())
    assert labels["org.opencontainers.image.version"] == version
    assert "{{ M3GNET }}" in labels["umlip-driver.models"] and "{{ MACE_SIZES }}" in labels["umlip-driver.models"]
    assert f"umlip-driver {version}" in sections["help"] and "apptainer run --nv driver.sif" in sections["help"]


def test_makefile_setup_uses_the_same_install_script():
    makefile = (ROOT / "Makefile").read_text()
    assert 'bash containers/install.sh $(VENV) "$(TORCH)" -e ".[test,mpi]"' in makefile


def test_make_sif_without_apptainer_says_so_and_builds_nothing(tmp_path):
    path = "/usr/bin:/bin"
    if shutil.which("apptainer", path=path) or shutil.which("singularity", path=path):
        pytest.skip("apptainer is installed here")
    make = shutil.which("make")
    sif = tmp_path / "x.sif"
    proc = subprocess.run([make, "-C", str(ROOT), "sif", f"SIF={sif}"], env={"PATH": path, "HOME": str(tmp_path)},
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "neither apptainer nor singularity is installed" in proc.stderr
    assert "build" not in proc.stdout and not sif.exists()


def test_fetch_plan_dry_run(definition, tmp_path):
    args = build_args(definition[1])
    proc = subprocess.run(
        [sys.executable, str(ROOT / "containers" / "fetch_models.py"), "fetch", "--out", str(tmp_path / "m"),
         "--m3gnet", args["M3GNET"], "--mace-sizes", "small medium", "--dry-run"],
        capture_output=True, text=True, timeout=60, check=True)
    assert f"m3gnet {M3GNET_NAME} -> {tmp_path / 'm' / M3GNET_NAME}" in proc.stdout
    assert f"mace-mp-0 medium -> {tmp_path / 'm' / 'mace-mp-0-medium.model'}" in proc.stdout
    assert not (tmp_path / "m").exists()


def _clean_env(tmp_path: Path) -> dict[str, str]:
    """The host environment without this dev venv: the image must not lean on .venv."""
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH", "DRIVER_MODELS_DIR")}
    venv_bin = str(ROOT / ".venv" / "bin")
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep) if p and p != venv_bin)
    env["DRIVER_OFFLINE"] = "1"
    env["TMPDIR"] = str(tmp_path)
    return env


def _sh(script: str, *args: str, cwd: Path, env: dict[str, str], timeout: int) -> subprocess.CompletedProcess:
    proc = subprocess.run(["/bin/sh", "-c", script, "sh", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)
    assert proc.returncode == 0, f"rc={proc.returncode}\n--- stdout\n{proc.stdout[-4000:]}\n--- stderr\n{proc.stderr[-4000:]}"
    return proc


def test_image_sections_run_outside_apptainer(definition, tmp_path):
    """%setup, %files, %post (install only), %environment, %runscript and %test, as the image would run them."""
    _, sections = definition
    prefix = tmp_path / "opt"
    args = {**build_args(sections), "PREFIX": str(prefix), "FETCH_MODELS": "0"}
    env = _clean_env(tmp_path)

    # %setup on the host, APPTAINER_ROOTFS being "/" (empty) with PREFIX redirected
    _sh(render(sections["setup"], args), cwd=ROOT, env={**env, "APPTAINER_ROOTFS": ""}, timeout=60)
    # %files: each `source destination` copied from the build directory (the repository root)
    for line in render(sections["files"], args).splitlines():
        if not line.strip():
            continue
        src, dest = (ROOT / line.split()[0], Path(line.split()[1]))
        if src.is_dir():
            shutil.copytree(src, dest, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(src, dest)
    # %post: the real install (fresh venv, torch, non-editable install with the pins), weights skipped
    post = _sh(render(sections["post"], args), cwd=tmp_path, env=env, timeout=420)
    assert "DRIVER_MODELS_DIR" in post.stdout  # `driver models` ran from the new venv
    assert "MPICH Version:" in post.stdout  # the venv's mpi4py loaded its MPICH
    venv_driver = prefix / "venv" / "bin" / "driver"
    assert venv_driver.is_file()
    assert not list((prefix / "venv").glob("lib/python*/site-packages/__editable__*")), "install must not be editable"

    environment = render(sections["environment"], args)
    runtime_env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "TMPDIR": str(tmp_path)}
    # `apptainer exec driver.sif driver ...`: %environment puts the image's driver first on PATH
    where = _sh(environment + 'command -v driver; command -v mpiexec; echo "models=$DRIVER_MODELS_DIR offline=$DRIVER_OFFLINE"',
                cwd=tmp_path, env=runtime_env, timeout=60)
    assert where.stdout.splitlines() == [str(venv_driver), str(venv_driver.parent / "mpiexec"),
                                         f"models={prefix / 'models'} offline=1"]

    # `apptainer run driver.sif quickstart.yaml --out OUT`: %environment, then %runscript, on the
    # quick-start recipe cut to 20 steps (the full 200 take minutes on a loaded 2-core machine)
    recipe = yaml.safe_load((ROOT / "recipes" / "quickstart.yaml").read_text())
    recipe["task"]["steps"] = 20
    recipe["structure"]["file"] = str(ROOT / "recipes" / recipe["structure"]["file"])
    (tmp_path / "quickstart.yaml").write_text(yaml.safe_dump(recipe, sort_keys=False))
    out = tmp_path / "quickstart"
    run = _sh(environment + sections["runscript"], str(tmp_path / "quickstart.yaml"), "--out", str(out),
              cwd=tmp_path, env=runtime_env, timeout=300)
    assert f"Results in {out}/" in run.stdout
    summary = json.loads((out / "summary.json").read_text())
    assert {job["status"] for job in summary["jobs"]} == {"completed"}
    for job in ("raw-T1000K", "corrected-T1000K"):
        with h5py.File(out / f"{job}.h5", "r") as f:
            assert f.attrs["status"] == "completed"
            assert f["particles/all/position/value"].shape[0] == 3  # 20 steps, every 10th + frame 0

    _multi_gpu_sbatch_with_stand_ins(environment, tmp_path / "quickstart.yaml", tmp_path, runtime_env)

    # %test, with a models folder as `fetch` would leave it (real M3GNet weights from ../shared,
    # a small MACE built here under a MACE-MP-0 size name), so its `check` loads them by name
    # through DRIVER_MODELS_DIR: the network download itself is not exercised.
    models = prefix / "models"
    if (SHARED_MODELS / M3GNET_NAME / "model.json").is_file():
        shutil.copytree(SHARED_MODELS / M3GNET_NAME, models / M3GNET_NAME)
    build_small_mace(models / "mace-mp-0-small.model")
    test = _sh(environment + render(sections["test"], args), cwd=tmp_path, env=runtime_env, timeout=300)
    assert "ok mace-mp-0 small" in test.stdout
    if (models / M3GNET_NAME).is_dir():
        assert f"ok m3gnet {M3GNET_NAME}" in test.stdout


def _multi_gpu_sbatch_with_stand_ins(environment: str, recipe: Path, tmp_path: Path, runtime_env: dict) -> None:
    """containers/slurm/multi_gpu_mpi.sbatch, run by bash as Slurm would run it, with two stand-ins:
    `srun` runs its command, `apptainer exec` applies %environment and runs its command. So the
    MPI part is real: the installed venv's Hydra mpiexec (`-launcher fork`, in an environment that
    looks like a Slurm job) starts RANKS=2 ranks of the installed driver on the quick-start recipe."""
    stand_ins = tmp_path / "stand-ins"
    stand_ins.mkdir()
    (tmp_path / "image-environment.sh").write_text(environment)
    (stand_ins / "srun").write_text('#!/bin/sh\nwhile [ "${1#-}" != "$1" ]; do shift; done\nexec "$@"\n')
    (stand_ins / "apptainer").write_text(
        '#!/bin/sh\n[ "$1" = exec ] || exit 64\nshift\n'
        'while [ "${1#-}" != "$1" ]; do case $1 in --bind|-B) shift 2;; *) shift;; esac; done\n'
        f'shift\n. "{tmp_path}/image-environment.sh"\nexec "$@"\n')
    for stand_in in stand_ins.iterdir():
        stand_in.chmod(0o755)
    out = tmp_path / "quickstart-mpi"
    slurm = {"SLURM_JOB_ID": "4242", "SLURM_JOB_NAME": "umlip-mpi", "SLURM_JOB_NODELIST": "gpu-node-7",
             "SLURM_NODELIST": "gpu-node-7", "SLURM_JOB_NUM_NODES": "1", "SLURM_NNODES": "1",
             "SLURM_NTASKS": "1", "SLURM_TASKS_PER_NODE": "1", "SLURM_CPUS_PER_TASK": "2", "USER": "someone"}
    env = {**runtime_env, **slurm, "PATH": f"{stand_ins}:{runtime_env['PATH']}", "RANKS": "2", "SIF": "driver.sif"}
    sbatch = ROOT / "containers" / "slurm" / "multi_gpu_mpi.sbatch"
    proc = subprocess.run(["bash", str(sbatch), str(recipe), str(out)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"rc={proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    assert proc.stdout.count(f"Results in {out}/") == 1  # one report, from rank 0
    assert sorted(p.name for p in (out / "logs").iterdir()) == ["rank-0.log", "rank-1.log"]
    ran = {rank: (out / "logs" / f"rank-{rank}.log").read_text() for rank in (0, 1)}
    assert "running raw-T1000K" in ran[0] and "running corrected-T1000K" in ran[1]  # round-robin
    summary = json.loads((out / "summary.json").read_text())
    assert [(job["job"], job["status"]) for job in summary["jobs"]] == [
        ("raw-T1000K", "completed"), ("corrected-T1000K", "completed")]
    for job in ("raw-T1000K", "corrected-T1000K"):
        with h5py.File(out / f"{job}.h5", "r") as f:
            assert f.attrs["status"] == "completed" and f["parameters"].attrs["mpi_size"] == 2
            assert f["particles/all/position/value"].shape[0] == 3


def test_cpu_definition_is_the_gpu_body_on_a_debian_base():
    """containers/cpu-def.sh: the CPU image (built for real by `make test-image`) differs from
    driver.def only in its base, so the CPU build checks the GPU image's body."""
    proc = subprocess.run(["bash", str(ROOT / "containers" / "cpu-def.sh"), "http://mirror.example/debian"],
                          capture_output=True, text=True, timeout=60, check=True)
    header, sections = parse_def(proc.stdout)
    assert header == {"Bootstrap": "debootstrap", "OSVersion": "bookworm", "MirrorURL": "http://mirror.example/debian",
                      "Include": "python3 python3-venv ca-certificates"}
    gpu_body = DEF_FILE.read_text().split("\n", 2)[2]
    assert proc.stdout.endswith(gpu_body)
    assert sections == parse_def(DEF_FILE.read_text())[1]
    assert build_args(sections)["PIP_CERT"] == "", "no CA bundle in the image unless a build passes one"


def test_image_test_scripts_parse():
    for script in ("cpu-def.sh", "test/apptainer-env.sh", "test/build-cpu-sif.sh", "test/test-image.sh"):
        subprocess.run(["bash", "-n", str(ROOT / "containers" / script)], check=True, timeout=30)
