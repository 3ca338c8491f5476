"""Where atoms sit: site-to-site hops of the mobile ions, and whether the host lattice still has
sites at all. These are the quality gates of a diffusivity: MSD growth without hops is vibration
(or drift), and a host that has lost its sites has melted or amorphised, so its "D" belongs to a
liquid, not to the crystal the study is about.

Sites are the starting positions (fractional, so they follow the cell under NPT), and the places
atoms come to rest later that no starting site covers (a vacancy's site, the empty half of a
half-occupied sublattice such as an argyrodite's Li 48h): a jump into a site empty at the start is
a hop like any other. An atom sits on the nearest site when it is within CAPTURE_FRACTION of the
site spacing (`site_spacing`); between sites it keeps its last assignment, so a vibration across
the midpoint is not a hop.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

CAPTURE_FRACTION = 0.35  # of the spacing between sites (thermal RMS stays below ~0.2 in a solid)
HOST_ORDERED_FRACTION = 0.6  # a crystal keeps most atoms near a site; a liquid ~0.25-0.35 at this radius
REST_FS = 100.0  # an atom rests on a site when its mean over this long stays put (vibrations average out)
REST_MIN_FRAMES = 4  # frames a resting place is averaged over, at least


def _distances(points_frac: np.ndarray, sites_frac: np.ndarray, cell: np.ndarray, block: int = 64) -> np.ndarray:
    """Minimum-image distances (points, sites) in Å: rounding the fractional difference is exact
    in an orthorhombic cell; a triclinic one also tries the 27 neighbouring images. In blocks of
    points, so that memory stays ~block x sites x 27 x 3 numbers."""
    orthorhombic = np.allclose(cell - np.diag(np.diag(cell)), 0)
    shifts = np.zeros((1, 3)) if orthorhombic else np.array(
        [[i, j, k] for i in (-1, 0, 1) for j in (-1, 0, 1) for k in (-1, 0, 1)], dtype=float) @ cell
    out = np.empty((len(points_frac), len(sites_frac)))
    for start in range(0, len(points_frac), block):
        delta = points_frac[start:start + block, None, :] - sites_frac[None, :, :]
        delta -= np.round(delta)
        cartesian = delta @ cell
        if orthorhombic:
            out[start:start + block] = np.sqrt(np.einsum("psi,psi->ps", cartesian, cartesian))
            continue
        images = cartesian[:, :, None, :] + shifts[None, None, :, :]
        out[start:start + block] = np.sqrt(np.min(np.einsum("pski,pski->psk", images, images), axis=-1))
    return out


def site_spacing(sites_frac: np.ndarray, cell: np.ndarray) -> float:
    """The typical spacing of the sites: the median over sites of the distance to the nearest
    other site (a crystal's nearest-neighbour distance; for disordered starts, a typical one
    rather than the closest pair). Inf for a single site."""
    if len(sites_frac) < 2:
        return float("inf")
    distances = _distances(sites_frac, sites_frac, cell)
    np.fill_diagonal(distances, np.inf)
    return float(np.median(distances.min(axis=1)))


def _fractional(positions: np.ndarray, cell: np.ndarray) -> np.ndarray:
    return positions @ np.linalg.inv(cell)


@dataclass
class Hops:
    total: int
    per_ion: float
    spacing_A: float


def count_hops(positions_A: np.ndarray, cells_A: np.ndarray, frame_fs: float | None = None,
               max_frames: int = 2000) -> Hops:
    """Site-to-site jumps of the atoms in `positions_A` (F, N, 3) among their starting sites
    (frame 0) and the sites they come to rest on later, counted over at most `max_frames` evenly
    spaced frames. A site empty at the start (a vacancy's, the other half of a half-occupied
    sublattice) is learned when an atom rests there: its mean position over REST_FS (`frame_fs`
    apart frames, at least REST_MIN_FRAMES of them) stays within half the capture radius, and lies
    two capture radii or more from every known site (so that capture radii never overlap). Without `frame_fs`, only starting sites count."""
    n_frames, n_atoms = positions_A.shape[:2]
    sites = _fractional(positions_A[0], cells_A[0])
    spacing = site_spacing(sites, cells_A[0])
    if not np.isfinite(spacing):
        return Hops(0, 0.0, spacing)
    capture = CAPTURE_FRACTION * spacing
    frames = np.unique(np.linspace(0, n_frames - 1, min(n_frames, max_frames)).astype(int))
    stride_fs = None if frame_fs is None or len(frames) < 2 else frame_fs * float(np.median(np.diff(frames)))
    block = max(1, round(REST_FS / stride_fs)) if stride_fs else 0
    learn = block >= REST_MIN_FRAMES
    current = np.arange(n_atoms)
    total = 0
    step = block if learn else len(frames)  # without learning: one pass over every frame
    for start in range(0, len(frames), step):
        chunk = frames[start:start + step]
        if learn and len(chunk) >= REST_MIN_FRAMES:
            sites = _learn_sites(positions_A[chunk], cells_A[chunk[len(chunk) // 2]], sites, capture)
        for f in chunk:
            distances = _distances(_fractional(positions_A[f], cells_A[f]), sites, cells_A[f])
            nearest = np.argmin(distances, axis=1)
            settled = distances[np.arange(n_atoms), nearest] < capture
            moved = settled & (nearest != current)
            total += int(moved.sum())
            current = np.where(settled, nearest, current)
    return Hops(total, total / n_atoms, spacing)


def _learn_sites(block_A: np.ndarray, cell: np.ndarray, sites: np.ndarray, capture: float) -> np.ndarray:
    """`sites` with the resting places of this block (B, N, 3) that no known site captures."""
    mean = block_A.mean(axis=0)
    spread = np.sqrt(np.mean(np.sum((block_A - mean) ** 2, axis=-1), axis=0))
    for atom in np.flatnonzero(spread < capture / 2):
        place = _fractional(mean[atom], cell) % 1.0
        if _distances(place[None, :], sites, cell).min() >= 2 * capture:  # capture radii never overlap
            sites = np.vstack([sites, place])
    return sites


def host_site_fraction(positions_A: np.ndarray, cells_A: np.ndarray, last_frames: int = 10,
                       max_atoms: int = 256) -> float:
    """The fraction of host atoms within the capture radius of some starting host site, averaged
    over the last `last_frames` frames (drift removed): ~1 for a crystal at any temperature below
    melting, ~0.3 for a liquid or an amorphised host."""
    sites = _fractional(positions_A[0], cells_A[0])
    spacing = site_spacing(sites, cells_A[0])
    if not np.isfinite(spacing):
        return 1.0
    sample = np.unique(np.linspace(0, len(sites) - 1, min(len(sites), max_atoms)).astype(int))
    fractions = []
    for f in range(max(0, len(positions_A) - last_frames), len(positions_A)):
        shifted = positions_A[f] - (positions_A[f].mean(axis=0) - positions_A[0].mean(axis=0))
        distances = _distances(_fractional(shifted[sample], cells_A[f]), sites, cells_A[f])
        fractions.append(float(np.mean(distances.min(axis=1) < CAPTURE_FRACTION * spacing)))
    return float(np.mean(fractions))
