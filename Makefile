# Two commands on a fresh machine: `make run` and `make test`.
# TORCH selects the torch requirement installed before everything else; the default is the CPU
# build found on these machines. GPU users: make run TORCH="torch==2.13.0 --index-url <your CUDA index>"
PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
RECIPE ?= recipes/quickstart.yaml
PYTEST_ARGS ?=
SIF ?= driver.sif
BUILD_ARGS ?=
APPTAINER ?= $(shell command -v apptainer || command -v singularity)

BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

DEVICE ?= gpu

.PHONY: setup run test test-slow bench bench-torchsim lint docs docs-figures docs-screenshots docs-howtos clean sif sif-cpu test-image gpu-wheels gpu-check

setup: $(STAMP)

# One install step for the dev venv and the Apptainer image (%post): containers/install.sh creates
# the venv, installs TORCH, then the project with the pins of containers/constraints.txt.
$(STAMP): pyproject.toml Makefile containers/install.sh containers/constraints.txt
	PYTHON="$(PYTHON)" bash containers/install.sh $(VENV) "$(TORCH)" -e ".[test,mpi]"
	touch $@

run: setup
	$(BIN)/driver run $(RECIPE) --overwrite

test: setup
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# The random-kill campaign (tests/test_kill_campaign.py): real runs SIGKILLed at random instants
# and resumed, counts written to bench/kill_campaign.json (docs/explanation/restart.md).
test-slow: setup
	$(BIN)/python -m pytest -m slow -s $(PYTEST_ARGS)

bench: setup
	$(BIN)/python bench/batch_eval.py
	$(BIN)/python bench/task_batching.py
	$(BIN)/python bench/replica_md.py
	$(BIN)/python bench/md_overhead.py
	$(BIN)/python bench/mpi_scaling.py
	$(BIN)/python bench/scaling.py
	$(BIN)/python bench/memory.py
	$(BIN)/python bench/profile_md.py
	$(BIN)/python bench/stock_vs_driver.py
	$(BIN)/python bench/diffusion_analysis.py
	PYTHONPATH=$(CURDIR)/.bench-site $(BIN)/python bench/torchsim_mace.py || echo "bench: torchsim_mace skipped (make bench-torchsim installs TorchSim)"
	$(BIN)/python bench/summary.py

# TorchSim 0.3.0 (the batched-MD reference bench/torchsim_mace.py compares against), into the
# bench's own folder: never a dependency of the project or its venv.
bench-torchsim: setup
	$(BIN)/python -m pip install --quiet --no-deps --target .bench-site torch-sim-atomistic==0.3.0 vesin \
	    vesin-torch tables numexpr blosc2 py-cpuinfo

# ruff, and import-linter's contracts (pyproject.toml: the package's layers, no import cycle)
lint: setup
	$(BIN)/python -m pip install --quiet -c containers/constraints.txt ruff
	$(BIN)/ruff check driver tests bench
	$(BIN)/lint-imports --no-cache

# The documentation site (mkdocs.yml, docs/): the generated reference pages must equal what the
# code generates now (docs/generate.py --check; `python docs/generate.py` rewrites them), then
# `mkdocs build --strict` into build/site (a broken link or anchor fails it).
DOCS_TOOLS := mkdocs mkdocs-material mkdocstrings mkdocstrings-python
docs: setup
	$(BIN)/python -m pip install --quiet -c containers/constraints.txt $(DOCS_TOOLS)
	$(BIN)/python docs/generate.py --check
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet
	@echo "make docs: build/site/index.html"

# Every how-to page's commands, run as written (docs/howtos.py; HOWTOS_ARGS="--skip diffusion"
# leaves out the 12-minute study); docs-figures: the same, then the figures the pages show are
# copied from what the commands wrote into docs/figures (about 20 minutes on 2 cores).
HOWTOS_ARGS ?=
docs-howtos: setup
	$(BIN)/python docs/howtos.py $(HOWTOS_ARGS)

docs-figures: setup
	$(BIN)/python docs/howtos.py --figures

# Every page of the built site opened in headless Chromium (Debian's chromium package) and
# screenshotted into build/screenshots, with checks that its code blocks, tables and images render

docs-screenshots: docs
	$(BIN)/python docs/screenshots.py

clean:
	rm -rf $(VENV) runs .pytest_cache build

# The cluster image (containers/driver.def); e.g. make sif BUILD_ARGS='--build-arg MACE_SIZES="small medium"'
sif:
	@if [ -z "$(APPTAINER)" ]; then echo "make sif: neither apptainer nor singularity is installed here; build $(SIF) on a machine with Apptainer (https://apptainer.org)" >&2; exit 2; fi
	$(APPTAINER) build $(BUILD_ARGS) $(SIF) containers/driver.def

# The one-shot GPU check (bench/gpu/README.md). gpu-wheels: the packages the lent GPU machine lacks,
# as cp312 wheels, into .whl/device (+ the M3GNet weights into .whl/models): carry both.
# gpu-check: the device command (bash bench/gpu/check.sh gpu); DEVICE=cpu: the CPU rehearsal in a
# fresh venv (bench/gpu/rehearse.sh), tiny grid, a few minutes.
gpu-wheels:
	PYTHON="$(PYTHON)" bash bench/gpu/fetch_wheels.sh device

gpu-check:
	@if [ "$(DEVICE)" = cpu ]; then PYTHON="$(PYTHON)" TORCH="$(TORCH)" bash bench/gpu/rehearse.sh; \
	else bash bench/gpu/check.sh gpu; fi

# The CPU image, built here with real Apptainer (containers/test/apptainer-env.sh makes a Debian sid
# root holding it when the machine has none): driver.def's body on a Debian base
# (containers/cpu-def.sh), torch from the CPU wheel pip finds here. containers/test/build-cpu-sif.sh
# reuses an image built from identical inputs on this machine (UMLIP_SIF_CACHE=0: always build).
SIF_CPU ?= build/driver-cpu.sif
sif-cpu:
	bash containers/test/build-cpu-sif.sh $(SIF_CPU)

# End-to-end checks of the CPU image with real Apptainer, as an ordinary user, from a working
# directory outside the repository (containers/test/test-image.sh; PASS/FAIL per check).
test-image: setup sif-cpu
	@set -e; start=$$(date +%s); tmp=$$(mktemp -d /tmp/umlip-image-test.XXXXXX); chmod 755 $$tmp; \
	bash containers/test/test-image.sh --bad-recipe $$tmp; \
	(cd $$tmp && $(abspath $(BIN))/driver run bad.yaml >/dev/null 2>expected.err) && rc=0 || rc=$$?; \
	test $$rc = 2 || { echo "test-image: the host's driver gave exit $$rc on a bad recipe, not 2" >&2; exit 1; }; \
	chmod 644 $$tmp/expected.err; \
	bash containers/test/apptainer-env.sh --bind $(CURDIR) --bind $$tmp \
	    "bash containers/test/test-image.sh $(abspath $(SIF_CPU)) $$tmp/expected.err" && rc=0 || rc=$$?; \
	rm -rf $$tmp; echo "make test-image: checks $$(( $$(date +%s) - start )) s (the image build is timed above)"; exit $$rc
