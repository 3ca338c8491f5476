"""The recipe's leaf sections (structure, model, correction, output, run): plain validated specs
that every layer may read. This module imports only the schema helpers (and, inside a validator,
the model registry), so that nothing it defines drags the tasks or the models in: the recipe
(driver.recipe) assembles these with the task kinds' own specs.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from driver.schema import Bool, Int, Strict, bounded, resolve_existing

MAX_SOFTENING_SCALE = 5.0  # correction.scale and a correction file's softening_scale: at most this

MAX_ATOMS = 20_000  # structure.max_atoms's default: beyond it a run on CPU takes days per step batch


class StructureSpec(Strict):
    """The starting structure: any file ASE reads, optionally repeated into a supercell."""

    file: str = Field(description="structure file in any format ASE reads; a relative path is from the recipe's folder")
    index: Int = Field(-1, description="frame to take from a multi-frame file")
    supercell: tuple[Int, Int, Int] | None = Field(
        None, description="repeat the cell [na, nb, nc] times along its vectors (ASE's repeat); null: as read")
    max_atoms: bounded(int, ge=1, le=10**7) = Field(
        MAX_ATOMS, description="refuse a structure (after `supercell`) or a phonon supercell with more atoms; "
        "raise it on purpose for a larger one")

    @field_validator("file")
    @classmethod
    def _file_exists(cls, value: str, info: ValidationInfo) -> str:
        return resolve_existing(value, info, "structure file")

    @field_validator("supercell")
    @classmethod
    def _positive_repeats(cls, value):
        if value is not None and min(value) < 1:
            raise ValueError(f"repeats must be >= 1, got {list(value)}")
        if value is not None and max(value) > 1000:
            raise ValueError(f"repeats must be <= 1000, got {list(value)}")
        return value


class ModelSpec(Strict):
    """Which uMLIP to load, from where, on which device and in which precision."""

    name: str = Field(description="model family, one of those registered (built in: chgnet, m3gnet, mace-mp-0)")
    variant: str | None = Field(
        None,
        description="chgnet version (0.3.0), matgl model name, or MACE-MP size (small, medium, ...)",
    )
    checkpoint: str | None = Field(None, description="fine-tuned weights file or folder")
    models_dir: str | None = Field(None, description="folder holding model weights")
    device: str = Field("auto", description="torch device: cpu, cuda, cuda:N, or auto (GPU local rank mod GPU count "
                        "where torch sees a GPU, else cpu)")
    dtype: Literal["float32", "float64"] = Field("float32", description="precision the model runs in "
                                                  "(chgnet: float32 only)")

    @field_validator("name")
    @classmethod
    def _known_family(cls, value: str) -> str:
        from driver.registry import (
            family_names,  # the registry imports this module only to type-check
        )

        if value not in family_names():
            raise ValueError(f"unknown model {value!r}; known: {', '.join(family_names())}")
        return value

    @field_validator("checkpoint")
    @classmethod
    def _checkpoint_exists(cls, value: str | None, info: ValidationInfo) -> str | None:
        return resolve_existing(value, info, "checkpoint")

    @field_validator("models_dir")
    @classmethod
    def _models_dir_exists(cls, value: str | None, info: ValidationInfo) -> str | None:
        return resolve_existing(value, info, "models directory")

    @field_validator("device")
    @classmethod
    def _device_form(cls, value: str) -> str:
        if value == "auto" or value == "cpu" or value == "cuda" or value.startswith("cuda:"):
            return value
        raise ValueError(f"must be auto, cpu, cuda or cuda:N, got {value!r}")


class CorrectionSpec(Strict):
    """The softening correction: a scale given inline, or a file written by `driver fit`."""

    scale: bounded(gt=0, le=MAX_SOFTENING_SCALE, warn_below=0.3, warn_above=1.5,
                   why="fitted scales of uMLIPs lie near 0.6-1.0") | None = Field(
        None, description="softening scale s given inline: E' = E0 + (E - E0)/s, forces and stress / s; "
        "exactly one of scale and file")
    file: str | None = Field(None, description="correction file written by `driver fit` (its softening_scale, "
                             "checked against the model); exactly one of scale and file")

    @field_validator("file")
    @classmethod
    def _file_exists(cls, value: str | None, info: ValidationInfo) -> str | None:
        return resolve_existing(value, info, "correction file")

    @model_validator(mode="after")
    def _exactly_one(self) -> CorrectionSpec:
        if (self.scale is None) == (self.file is None):
            raise ValueError("give exactly one of 'scale' or 'file'")
        return self


class OutputSpec(Strict):
    """Where and how often results are written; datasets are chunked and extended as frames come."""

    directory: str | None = Field(None, description="default: runs/<name> in the working folder")
    write_every: bounded(int, ge=1, le=10**9) = Field(10, description="MD steps between stored frames")
    flush_every: bounded(int, ge=1, le=10**6) = Field(10, description="stored frames between flushes to disk")
    checkpoint_every: bounded(int, ge=1, le=10**9) = Field(100, description="MD steps between restart checkpoints (driver run --resume)")
    compression: Literal["gzip", "lzf"] | None = Field(
        None, description="HDF5 compression of the stored series (gzip smaller, lzf faster); null: uncompressed")
    forces: Bool = Field(True, description="store per-atom forces with every trajectory frame")
    velocities: Bool = Field(True, description="store per-atom velocities with every trajectory frame")
    trajectory: Bool = Field(True, description="false: MD stores observables only, no position/velocity/force "
                             "frames after the first (the start); checkpoints still allow --resume")
    magmoms: Bool = Field(False, description="store per-atom magnetic moments with every frame (CHGNet predicts "
                          "them; computed only for stored frames, never for the dynamics)")


class RunSpec(Strict):
    """How the jobs of a run are executed (not what they compute)."""

    batch_replicas: Bool = Field(False, description="integrate this rank's MD jobs side by side, all replicas "
                                 "evaluated in one batched model call per step (driver.replicas)")
    share_structures: Bool = Field(False, description="under MPI, every rank runs every NEB or phonon job "
                                   "together, each evaluating its share of the images or displaced "
                                   "supercells; rank 0 writes the files (World.map_shared)")
