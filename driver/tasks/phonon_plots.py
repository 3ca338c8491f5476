"""Band structure and DOS pictures, one job or raw and corrected overlaid."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def plot_data(result) -> dict:
    """What the pictures draw, from a job's PhononResult as stored (driver.results.read_result)."""
    return {"band_distances": result.band_distances, "band_frequencies_THz": result.band_frequencies_THz,
            "band_segment_lengths": result.band_segment_lengths, "dos_frequencies_THz": result.dos_frequencies_THz,
            "dos_states_per_THz": result.dos_states_per_THz, "labels": result.band_labels,
            "connections": result.band_connections}


def _tick_positions(data: dict) -> tuple[list[float], list[str]]:
    """Special-point positions along the path; a jump (disconnected segment) shares one tick 'A|B'."""
    distances, lengths = data["band_distances"], data["band_segment_lengths"]
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    labels = iter(data["labels"])
    ticks, names = [distances[0]], [next(labels)]
    for start, length, connected in zip(starts, lengths, data["connections"], strict=True):
        end_label = next(labels)
        ticks.append(distances[start + length - 1])
        names.append(end_label)
        if not connected:
            following = next(labels, None)
            if following is not None:
                names[-1] = f"{end_label}|{following}"
    return ticks, names


def plot_phonons(path: Path, runs: list[tuple[str, dict]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (bands, dos) = plt.subplots(1, 2, figsize=(8, 4.5), dpi=120, sharey=True,
                                        gridspec_kw={"width_ratios": [3, 1]})
    colours = {"raw": "tab:blue", "corrected": "tab:orange"}
    for name, data in runs:
        colour = colours.get(name.split("-")[0], None)
        lengths = data["band_segment_lengths"]
        start = 0
        for number, length in enumerate(lengths):
            segment = slice(start, start + length)
            bands.plot(data["band_distances"][segment], data["band_frequencies_THz"][segment], color=colour, lw=1,
                       label=name if number == 0 else None)
            start += length
        dos.plot(data["dos_states_per_THz"], data["dos_frequencies_THz"], color=colour, lw=1)
    ticks, names = _tick_positions(runs[0][1])
    bands.set_xticks(ticks, names)
    for tick in ticks:
        bands.axvline(tick, color="grey", lw=0.5)
    bands.axhline(0, color="black", lw=0.5)
    low = min(0.0, *(d["band_frequencies_THz"].min() for _, d in runs))
    high = max(d["band_frequencies_THz"].max() for _, d in runs)
    margin = 0.05 * (high - low)
    bands.set(xlim=(ticks[0], ticks[-1]), ylim=(low - margin, high + margin), ylabel="frequency (THz)")
    handles, labels = bands.get_legend_handles_labels()
    unique = dict(zip(labels, handles, strict=True))
    bands.legend(unique.values(), unique.keys(), loc="lower right", fontsize=8)
    dos.set(xlabel="DOS (states/THz)")
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
