"""Analysis of finished runs: diffusion (MSD, D, Arrhenius), RDFs, raw-vs-corrected comparison.

`compare_run(out_dir)` is what `driver compare OUT_DIR` calls.
"""

from driver.analysis.compare import Comparison, compare_run

__all__ = ["Comparison", "compare_run"]
