"""Data: toy 2-D generators with exact densities, VI targets, bundled images, tabular files."""

from .images import DIGITS_LEVELS, digits, read_idx
from .tabular import Standardizer, check_rows, load_table
from .targets import (
    EIGHT_SCHOOLS_SIGMA,
    EIGHT_SCHOOLS_Y,
    ENERGIES,
    VITarget,
    eight_schools,
    energy,
    energy_target,
    funnel,
)
from .toy import (
    OPTIMAL_NLL,
    TOY_DATASETS,
    checkerboard,
    eight_gaussians,
    rings,
    spirals,
    toy_data,
    toy_log_density,
    two_moons,
)
from .vi_targets_suite import (
    VI_TARGETS,
    constrained,
    gaussian,
    gaussian_mixture,
    hierarchical,
    logistic_regression,
    logistic_regression_reference,
)

__all__ = [
    "DIGITS_LEVELS",
    "EIGHT_SCHOOLS_SIGMA",
    "EIGHT_SCHOOLS_Y",
    "ENERGIES",
    "OPTIMAL_NLL",
    "TOY_DATASETS",
    "VI_TARGETS",
    "Standardizer",
    "VITarget",
    "check_rows",
    "checkerboard",
    "constrained",
    "digits",
    "eight_gaussians",
    "eight_schools",
    "energy",
    "energy_target",
    "funnel",
    "gaussian",
    "gaussian_mixture",
    "hierarchical",
    "load_table",
    "logistic_regression",
    "logistic_regression_reference",
    "read_idx",
    "rings",
    "spirals",
    "toy_data",
    "toy_log_density",
    "two_moons",
]
