"""NEB endpoints: from two files, or built from one host structure for a vacancy or interstitial hop.

Each builder also names the hopping atom (`hop_atom`, its index in the endpoints) and the hop
length, which the NEB sanity checks (driver.tasks.neb_sanity) measure endpoint relaxation against."""

from __future__ import annotations

from typing import Literal

import numpy as np
from ase import Atoms
from ase.geometry import find_mic
from pydantic import ConfigDict, Field, ValidationInfo, field_validator, model_validator

from driver.errors import InputError
from driver.schema import Strict, bounded, resolve_existing
from driver.structure import check_finite_geometry, read_with_ase

Fraction = bounded(ge=0, le=1)  # a fractional coordinate inside the cell
NEAREST_TIE_A = 1e-6  # distances (or moves) this close to the extreme one tie with it: the lowest index wins


class VacancyHop(Strict):
    """The ion at site `from` hops into the vacancy left by removing the same-species atom at `to`."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False, populate_by_name=True)
    species: str = Field(description="element of the hopping ion; both sites must hold it")
    from_site: bounded(int, ge=0) = Field(alias="from", description="index of the hopping atom in the (repeated) "
                                          "structure")
    to_site: bounded(int, ge=0) | Literal["nearest"] = Field(
        "nearest", alias="to", description="index of the atom removed to leave the vacancy; nearest: the closest "
        "same-species atom (minimum image)")


class InterstitialHop(Strict):
    """An extra ion of `species` hops between two interstitial sites (fractional coordinates)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False, populate_by_name=True)
    species: str = Field(description="element of the added interstitial ion, e.g. Li")
    from_fractional: tuple[Fraction, Fraction, Fraction] = Field(
        alias="from", description="fractional coordinates of the initial site in the (repeated) cell")
    to_fractional: tuple[Fraction, Fraction, Fraction] = Field(
        alias="to", description="fractional coordinates of the final site; the ion takes the minimum-image path")


class EndpointsSpec(Strict):
    """Where a band starts and ends: exactly one of a final endpoint file, a vacancy hop or an
    interstitial hop (the NEB task's spec extends this)."""

    final: str | None = Field(None, description="final endpoint file; `structure` is then the initial one")
    vacancy_hop: VacancyHop | None = Field(
        None, description="both endpoints from `structure`: an ion hops into a same-species vacancy")
    interstitial_hop: InterstitialHop | None = Field(
        None, description="both endpoints from `structure` plus one interstitial ion at two sites")

    @field_validator("final")
    @classmethod
    def _final_exists(cls, value: str | None, info: ValidationInfo) -> str | None:
        return resolve_existing(value, info, "final endpoint file")

    @model_validator(mode="after")
    def _one_endpoint_rule(self) -> EndpointsSpec:
        given = [name for name in ("final", "vacancy_hop", "interstitial_hop") if getattr(self, name) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of 'final', 'vacancy_hop' or 'interstitial_hop', got {given or 'none'}")
        return self


def nearest_same_species(atoms: Atoms, index: int) -> int:
    """Index of the closest atom of the same element (minimum image)."""
    symbol = atoms[index].symbol
    candidates = [i for i, a in enumerate(atoms) if a.symbol == symbol and i != index]
    if not candidates:
        raise InputError(f"task.vacancy_hop.to: no other {symbol} atom to hop to")
    distances = atoms.get_distances(index, candidates, mic=True)
    # Symmetry-equivalent neighbours are equally near up to round-off: the lowest index among them,
    # so the choice never depends on the last bit of a distance.
    return candidates[int(np.flatnonzero(distances <= distances.min() + NEAREST_TIE_A)[0])]


def vacancy_hop_endpoints(host: Atoms, hop: VacancyHop) -> tuple[Atoms, Atoms, dict]:
    """Initial: host without the atom at `to`. Final: the same, with the ion `from` moved onto `to`."""
    n = len(host)
    if hop.from_site >= n:
        raise InputError(f"task.vacancy_hop.from: site {hop.from_site} does not exist ({n} atoms)")
    if host[hop.from_site].symbol != hop.species:
        raise InputError(f"task.vacancy_hop.from: atom {hop.from_site} is {host[hop.from_site].symbol}, not {hop.species}")
    to_site = nearest_same_species(host, hop.from_site) if hop.to_site == "nearest" else hop.to_site
    if to_site >= n or to_site == hop.from_site:
        raise InputError(f"task.vacancy_hop.to: site {to_site} is not another atom of the structure ({n} atoms)")
    if host[to_site].symbol != hop.species:
        raise InputError(f"task.vacancy_hop.to: atom {to_site} is {host[to_site].symbol}, not {hop.species}")
    # Move along the shortest (minimum-image) vector, so the path never crosses the cell.
    hop_vector, hop_length = find_mic(host.positions[to_site] - host.positions[hop.from_site], host.cell, host.pbc)
    initial = host.copy()
    final = host.copy()
    final.positions[hop.from_site] += hop_vector
    del initial[to_site]
    del final[to_site]
    hop_atom = hop.from_site - (1 if to_site < hop.from_site else 0)  # its index once `to` is removed
    return initial, final, {"hop_from_site": hop.from_site, "hop_to_site": to_site, "hop_atom": hop_atom,
                            "hop_length_A": float(hop_length)}


def interstitial_hop_endpoints(host: Atoms, hop: InterstitialHop) -> tuple[Atoms, Atoms, dict]:
    endpoints = []
    for fractional in (hop.from_fractional, hop.to_fractional):
        atoms = host.copy()
        atoms.append(hop.species)
        atoms.positions[-1] = np.asarray(fractional) @ host.cell[:]
        endpoints.append(atoms)
    vector, length = find_mic(endpoints[1].positions[-1] - endpoints[0].positions[-1], host.cell, host.pbc)
    endpoints[1].positions[-1] = endpoints[0].positions[-1] + vector
    return endpoints[0], endpoints[1], {"hop_atom": len(host), "hop_length_A": float(length)}


def file_endpoints(initial: Atoms, final_file: str) -> tuple[Atoms, Atoms, dict]:
    final = read_with_ase(final_file, -1, "task.final: cannot read structure")
    if final.get_chemical_symbols() != initial.get_chemical_symbols():
        raise InputError(f"{final_file}: task.final: atoms differ from the initial structure in number or order")
    check_finite_geometry(final, f"{final_file}: task.final")
    final.calc = None
    _, lengths = find_mic(final.positions - initial.positions, initial.cell, initial.pbc)
    # The atom that moves most is the hopping one; equal moves (a concerted hop) go to the lowest index.
    hop_atom = int(np.flatnonzero(lengths >= lengths.max() - NEAREST_TIE_A)[0])
    return initial.copy(), final, {"hop_atom": hop_atom, "hop_length_A": float(lengths[hop_atom])}


def build_endpoints(structure: Atoms, task: EndpointsSpec) -> tuple[Atoms, Atoms, dict]:
    if task.vacancy_hop is not None:
        return vacancy_hop_endpoints(structure, task.vacancy_hop)
    if task.interstitial_hop is not None:
        return interstitial_hop_endpoints(structure, task.interstitial_hop)
    return file_endpoints(structure, task.final)
