"""One module per experiment family; each registers its recipes with ``circuits.experiments.experiment``."""
