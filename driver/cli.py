"""Command line: thin over the library; known errors become one line and an exit code.

Heavy libraries (torch, the models) are imported only by the commands that need them, so
`driver validate` answers in a second.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import warnings
from pathlib import Path

from driver import __version__, faults
from driver.errors import DriverError, InputError
from driver.memory import tune_allocator

EXIT_INTERRUPTED = 130


def _cmd_validate(args: argparse.Namespace) -> int:
    from driver.recipe import load_recipe
    from driver.runner import check_inputs, plan_jobs

    for path in args.recipes:
        recipe, _ = load_recipe(path)
        try:
            atoms, correction = check_inputs(recipe)
        except InputError as exc:
            raise InputError(f"{path}: {exc}") from None

        jobs = ", ".join(job.name for job in plan_jobs(recipe))
        print(f"{path}: ok ({atoms.get_chemical_formula()}, {len(atoms)} atoms, {recipe.model.name}; jobs: {jobs})")
        for line in correction.warning_lines() if correction is not None else []:  # as `driver run` warns
            print(f"{path}: WARNING: {line}")
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    from driver import interrupt
    from driver.recipe import load_recipe
    from driver.report import format_report
    from driver.runner import run_recipe

    recipe, text = load_recipe(args.recipe)
    # Slurm preempts with SIGTERM: like Ctrl-C, it checkpoints, closes and marks the files.
    previous_handlers = interrupt.install()
    try:
        report = run_recipe(recipe, text, out=args.out, overwrite=args.overwrite, resume=args.resume)
    finally:
        interrupt.restore(previous_handlers)
    if report.rank == 0:  # under mpirun, one report for the whole run
        print(format_report(report))
    return 1 if report.failed else 0


def _cmd_inspect(args: argparse.Namespace) -> int:
    from driver.inspect_h5 import describe

    for path in args.files:
        print(describe(path))
    return 0


def _cmd_fit(args: argparse.Namespace) -> int:
    from driver.fit.run import UntrustedCorrection, format_fit_report, run_fit

    spec = _model_spec(args)
    out = Path(args.out)
    _refuse_existing(out, args.overwrite)
    try:
        stats, _ = run_fit(spec, args.labels, out, energy_key=args.energy_key, forces_key=args.forces_key,
                           plot=Path(args.plot) if args.plot else None, resamples=args.bootstrap, seed=args.seed,
                           group_key=args.group_key, accept_untrusted=args.accept_untrusted)
    except UntrustedCorrection as refused:
        print(format_fit_report(refused.stats, None))  # the numbers behind the refusal; the reason is on stderr
        raise
    print(format_fit_report(stats, out))
    return 0


def _cmd_finetune(args: argparse.Namespace) -> int:
    from driver.finetune import finetune
    from driver.labels import read_labels

    spec = _model_spec(args)
    out_dir = Path(args.out)
    _refuse_existing(out_dir / "finetune.yaml", args.overwrite)
    labels = read_labels(args.labels, energy_key=args.energy_key, forces_key=args.forces_key)
    report = finetune(spec, labels, out_dir, epochs=args.epochs, learning_rate=args.lr, batch_size=args.batch_size,
                      val_fraction=args.val_fraction, seed=args.seed)
    print(f"fine-tuned {report.family} on {report.n_train} structure(s), {report.epochs} epochs, "
          f"{report.seconds:.0f} s on {report.device}")
    print(f"  force MAE on training structures: {report.force_mae_train_before:.4f} -> "
          f"{report.force_mae_train_after:.4f} eV/Å")
    if report.n_val:
        print(f"  force MAE on {report.n_val} held-out structure(s): {report.force_mae_val_before:.4f} -> "
              f"{report.force_mae_val_after:.4f} eV/Å")
    for note in report.notes:
        print(f"  note: {note}")
    print(f"written {report.checkpoint} and {out_dir / 'finetune.yaml'}; use it in a recipe as\n"
          f"  model: {{name: {report.family}, checkpoint: {report.checkpoint}}}")
    return 0


def _cmd_sample(args: argparse.Namespace) -> int:
    from driver.models import load_model
    from driver.sample import check_options, sample, write_candidates
    from driver.specs import StructureSpec
    from driver.structure import load_structure

    check_options(args.rattle, args.md_temperature, args.timestep_fs)
    structure_path = Path(args.structure)
    if not structure_path.is_file():
        raise InputError(f"{structure_path}: structure file not found")
    atoms = load_structure(StructureSpec.model_construct(file=str(structure_path), index=-1,
                                                        supercell=tuple(args.supercell) if args.supercell else None))
    out_dir = Path(args.out)
    _refuse_existing(out_dir / "candidates.extxyz", args.overwrite)
    spec = _model_spec(args)
    model = load_model(spec)
    selected = sample(atoms, model, amplitudes_A=args.rattle, per_amplitude=args.per_amplitude,
                      md_temperature_K=args.md_temperature, md_steps=args.md_steps, md_every=args.md_every,
                      timestep_fs=args.timestep_fs, select=args.select,
                      min_distance_fraction=args.min_distance_fraction, seed=args.seed)
    xyz, vasp_dir = write_candidates(selected, out_dir)
    print(f"{len(selected)} candidates, most informative first (model mean |F|):")
    for number, candidate in enumerate(selected):
        print(f"  {number:03d} {candidate.origin:<24} mean |F| {candidate.mean_force_eV_A:.2f} eV/Å, "
              f"max {candidate.max_force_eV_A:.2f}, closest pair {candidate.min_distance_A:.2f} Å")
    print(f"written {xyz} and {vasp_dir}/NNN_*/POSCAR; label them with DFT, then: driver fit --labels ...")
    return 0


def _cmd_compare(args: argparse.Namespace) -> int:
    from driver.compare import compare_run

    charges = {}
    for item in args.charge or []:
        symbol, _, value = item.partition("=")
        try:
            charges[symbol.strip()] = float(value)
        except ValueError:
            raise InputError(f"--charge {item}: expected SYMBOL=CHARGE, e.g. Li=1") from None
    comparison = compare_run(args.out_dir, charges=charges or None)
    print(comparison.format())
    return 0


def _model_spec(args: argparse.Namespace):
    """The ModelSpec the options of `_add_model_options` describe."""
    from driver.models.spec import spec_from_cli

    return spec_from_cli(args.model, family=args.family, variant=args.variant, dtype=args.dtype,
                         device=args.device, models_dir=args.models_dir)


def _refuse_existing(path: Path, overwrite: bool) -> None:
    """Earlier results are never replaced silently."""
    if path.exists() and not overwrite:
        raise InputError(f"{path}: exists; pass --overwrite to replace it")


def _add_model_options(parser: argparse.ArgumentParser) -> None:
    from driver.registry import family_names

    names = family_names()
    parser.add_argument("--model", required=True, help=f"{' | '.join(names)}, or a checkpoint path")
    parser.add_argument("--family", choices=names, help="family of a checkpoint path")
    parser.add_argument("--variant", help="chgnet version, matgl model name or MACE-MP size")
    parser.add_argument("--dtype", choices=["float32", "float64"], default="float32",
                        help="float32 (every family) or float64 (where the family runs in it)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--models-dir", help="folder holding named model weights")


def _add_label_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--labels", nargs="+", required=True,
                        help="DFT-labelled structures: files ASE reads (extxyz, OUTCAR, vasprun.xml), phonopy's "
                        "phonopy_disp.yaml + FORCE_SETS (or phonopy_params.yaml), or a VASP NEB folder (00/ .. NN/)")
    parser.add_argument("--energy-key", help="info key of the reference energy (default: REF_energy, "
                        "DFT_energy, ... or the file's calculator results)")
    parser.add_argument("--forces-key", help="array key of the reference forces (default: REF_forces, ... "
                        "or the file's calculator results)")


def _cmd_models(args: argparse.Namespace) -> int:
    from driver.models.catalog import describe_models

    print(describe_models())
    return 0


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="driver", description="Simulations with universal ML potentials, "
                                     "raw or with the PES-softening correction.")
    parser.add_argument("--version", action="version", version=f"umlip-driver {__version__}")
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and results")
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="run a recipe")
    run.add_argument("recipe")
    run.add_argument("--out", help="output folder (default: the recipe's output.directory or runs/<name>)")
    existing = run.add_mutually_exclusive_group()
    existing.add_argument("--overwrite", action="store_true", help="replace results of an earlier run")
    existing.add_argument("--resume", action="store_true",
                          help="continue an earlier run: skip finished jobs, continue the others from "
                               "their last checkpoint (starts the run if there is nothing yet)")
    run.set_defaults(handler=_cmd_run)

    validate = commands.add_parser("validate", help="check recipes without running them")
    validate.add_argument("recipes", nargs="+")
    validate.set_defaults(handler=_cmd_validate)

    inspect = commands.add_parser("inspect", help="show what an output .h5 file holds")
    inspect.add_argument("files", nargs="+")
    inspect.set_defaults(handler=_cmd_inspect)

    fit = commands.add_parser("fit", help="fit the softening scale from DFT-labelled structures")
    _add_model_options(fit)
    _add_label_options(fit)
    fit.add_argument("--out", default="correction.yaml", help="correction file to write (default correction.yaml)")
    fit.add_argument("--overwrite", action="store_true", help="replace an existing correction file")
    fit.add_argument("--plot", help="write a parity plot (PNG) of model vs DFT forces, raw and corrected, "
                     "beside the slope per |DFT force| bin")
    fit.add_argument("--group-key", default="config_type",
                     help="info key naming each structure's group, for slopes per group (default config_type)")
    fit.add_argument("--accept-untrusted", action="store_true",
                     help="write a correction that fails the trust rules anyway (recorded in the file)")
    fit.add_argument("--bootstrap", type=_positive_int, default=1000, help="bootstrap resamples (default 1000)")
    fit.add_argument("--seed", type=int, default=0)
    fit.set_defaults(handler=_cmd_fit)

    tune = commands.add_parser("finetune", help="fine-tune the pretrained model on DFT-labelled structures")
    _add_model_options(tune)
    _add_label_options(tune)
    tune.add_argument("--out", required=True, help="folder for the checkpoint and finetune.yaml")
    tune.add_argument("--epochs", type=_positive_int, default=10)
    tune.add_argument("--lr", type=float, default=1e-3, help="learning rate (default 1e-3)")
    tune.add_argument("--batch-size", type=_positive_int, default=2)
    tune.add_argument("--val-fraction", type=float, default=0.2, help="held out when >= 4 structures (default 0.2)")
    tune.add_argument("--seed", type=int, default=0)
    tune.add_argument("--overwrite", action="store_true")
    tune.set_defaults(handler=_cmd_finetune)

    sample = commands.add_parser("sample", help="make high-energy candidate structures to label with DFT")
    sample.add_argument("structure", help="starting structure (any file ASE reads)")
    _add_model_options(sample)
    sample.add_argument("--supercell", nargs=3, type=_positive_int, metavar=("A", "B", "C"))
    sample.add_argument("--rattle", nargs="*", type=float, default=[0.05, 0.1, 0.2],
                        help="Gaussian displacement amplitudes in Å (default 0.05 0.1 0.2)")
    sample.add_argument("--per-amplitude", type=_positive_int, default=4)
    sample.add_argument("--md-temperature", type=float, help="also take snapshots of raw-model MD at this T (K)")
    sample.add_argument("--md-steps", type=_positive_int, default=200)
    sample.add_argument("--md-every", type=_positive_int, default=20)
    sample.add_argument("--timestep-fs", type=float, default=2.0)
    sample.add_argument("--select", type=_positive_int, default=10, help="how many candidates to keep")
    sample.add_argument("--min-distance-fraction", type=float, default=0.7,
                        help="drop candidates with a pair closer than this fraction of the start's shortest")
    sample.add_argument("--out", default="candidates", help="output folder (default candidates/)")
    sample.add_argument("--overwrite", action="store_true")
    sample.add_argument("--seed", type=int, default=0)
    sample.set_defaults(handler=_cmd_sample)

    compare = commands.add_parser("compare", help="raw vs corrected: tables, plots and report.md of a finished run")
    compare.add_argument("out_dir", help="output folder of `driver run` (holds summary.json)")
    compare.add_argument("--charge", action="append", metavar="SYMBOL=CHARGE",
                         help="ionic charge for Nernst-Einstein (repeatable; default: oxidation states guessed "
                         "from the composition)")
    compare.set_defaults(handler=_cmd_compare)

    models = commands.add_parser("models", help="list model families and where weights are found")
    models.set_defaults(handler=_cmd_models)
    return parser


def _quiet_known_library_warnings() -> None:
    """Warnings the user cannot act on; everything else still shows."""
    warnings.filterwarnings("ignore", message="Converting a tensor with requires_grad")
    warnings.filterwarnings("ignore", message=".*TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD")
    warnings.filterwarnings("ignore", message=".*torch.load.*weights_only")
    warnings.filterwarnings("ignore", message="Only FixAtoms and FixCartesian is supported by Pymatgen")


def _exit_now_if_files_abandoned(code: int) -> None:
    """A job file whose writes failed (disk full) is left unclosed (driver.output.H5MDWriter.close);
    end without the h5py destructors that would report the failure again and crash at exit."""
    from driver.output import ABANDONED

    if ABANDONED:
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _quiet_known_library_warnings()
    tune_allocator()  # large cells: no page-faulting of every model call's buffers (driver.memory)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO,
                        format="%(asctime)s %(message)s", datefmt="%H:%M:%S", stream=sys.stderr)
    try:
        faults.check()  # a mistyped DRIVER_FAULT_AT is one line before anything runs
        return args.handler(args)
    except DriverError as exc:
        print(f"error: {exc}", file=sys.stderr)
        _exit_now_if_files_abandoned(exc.exit_code)
        return exc.exit_code
    except KeyboardInterrupt:
        if args.command == "run":
            print("interrupted: checkpoint written, files closed, summary.json marks the interrupted job; "
                  f"continue with: driver run {args.recipe}{f' --out {args.out}' if args.out else ''} --resume", file=sys.stderr)
        else:
            print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # `driver inspect f.h5 | head`: the reader left; not an error of ours
        sys.stderr.close()
        return 0


if __name__ == "__main__":
    sys.exit(main())
