"""Analysis of MD trajectories: diffusion (MSD, D, Arrhenius), RDFs, and the figures of a
comparison. Tasks' `driver compare` sections (driver.tasks.md_compare) build on it; the command
itself is driver.compare.
"""
