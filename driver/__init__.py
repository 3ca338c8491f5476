"""umlip-driver: run MD, NEB and phonons with universal ML potentials, raw or softening-corrected."""

__version__ = "0.1.0"
