"""Run every how-to page's commands as written, and make the docs' figures from what they wrote.

    python docs/howtos.py                     # every page (about 20 minutes on 2 CPU cores)
    python docs/howtos.py --skip diffusion    # all but docs/how-to/diffusion.md
    python docs/howtos.py --only neb phonons  # some pages
    python docs/howtos.py --figures           # and copy the figures the pages show into docs/figures

The commands are the ```bash blocks of docs/how-to/*.md, run from the repository root with the
venv's `driver` first on PATH, line by line as a reader would paste them (`set -e`: the first
failing command fails its page). Blocks a reader cannot run on a plain CPU (a cluster, a GPU, their
own files) are fenced as ```text instead. `make docs-howtos` runs this; `.ci/run` runs it without
the 12-minute diffusion study.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HOWTOS = ROOT / "docs" / "how-to"
FIGURES = ROOT / "docs" / "figures"
BASH_BLOCK = re.compile(r"^```bash\n(.*?)^```", re.MULTILINE | re.DOTALL)

# docs/figures/<name>.png <- what a how-to page's commands write (the page shows it)
FIGURE_SOURCES = {
    "parity": ("fit-correction", "runs/howto/parity.png"),
    "phonon_bands": ("phonons", "runs/si_phonons/phonons_raw_vs_corrected.png"),
    "neb_mep": ("neb", "runs/li2o_vacancy_neb/compare_neb.png"),
    "md_msd": ("md", "runs/quickstart/compare_msd.png"),
    "arrhenius": ("diffusion", "runs/li3n_diffusion_cpu/compare_diffusion_arrhenius.png"),
}


def commands(page: Path) -> str:
    """The page's ```bash blocks, joined: what a reader pastes, in order."""
    return "\n".join(block.strip() for block in BASH_BLOCK.findall(page.read_text()))


def run_page(page: Path, env: dict[str, str]) -> tuple[int, float]:
    script = commands(page)
    start = time.monotonic()
    print(f"== {page.relative_to(ROOT)}", flush=True)
    for line in script.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            print(f"$ {line}", flush=True)
    completed = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=ROOT, env=env)
    return completed.returncode, time.monotonic() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="run the how-to pages' commands as written")
    parser.add_argument("--only", nargs="+", default=None, help="page names (without .md)")
    parser.add_argument("--skip", nargs="+", default=[], help="page names (without .md)")
    parser.add_argument("--figures", action="store_true", help="copy the pages' figures into docs/figures")
    args = parser.parse_args(argv)
    pages = sorted(HOWTOS.glob("*.md"))
    names = {page.stem for page in pages}
    unknown = (set(args.only or []) | set(args.skip)) - names
    if unknown:
        print(f"docs/howtos.py: no how-to page {sorted(unknown)}; pages: {sorted(names)}", file=sys.stderr)
        return 2
    chosen = [p for p in pages if (args.only is None or p.stem in args.only) and p.stem not in args.skip]
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    results = []
    for page in chosen:
        if not commands(page):
            continue
        code, seconds = run_page(page, env)
        results.append((page.stem, code, seconds))
        print(f"== {page.stem}: {'ran' if code == 0 else f'FAILED (exit {code})'} in {seconds:.0f} s", flush=True)
    if args.figures:
        FIGURES.mkdir(parents=True, exist_ok=True)
        ran = {name for name, code, _ in results if code == 0}
        for figure, (page, source) in FIGURE_SOURCES.items():
            if page in ran:
                shutil.copyfile(ROOT / source, FIGURES / f"{figure}.png")
                print(f"docs/figures/{figure}.png <- {source}")
    print("\n".join(f"{name:16s} {'ran' if code == 0 else 'FAILED'} {seconds:6.0f} s" for name, code, seconds in results))
    failed = [name for name, code, _ in results if code]
    if failed:
        print(f"docs/howtos.py: commands failed on {', '.join(failed)} (see above)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
