"""Tasks: each takes atoms with any ASE calculator attached and a writer; none knows the model."""
