"""Data: toy 2-D generators with exact densities, VI targets, bundled images, tabular files,
and tables larger than memory (memory-mapped .npy, CSV in chunks: :mod:`.streaming`)."""

from .images import DIGITS_LEVELS, digits, read_idx
from .streaming import ArrayRows, CsvRows, csv_chunks, csv_to_npy, open_npy, scan_rows
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

__all__ = [
    "DIGITS_LEVELS",
    "EIGHT_SCHOOLS_SIGMA",
    "EIGHT_SCHOOLS_Y",
    "ENERGIES",
    "OPTIMAL_NLL",
    "TOY_DATASETS",
    "ArrayRows",
    "CsvRows",
    "Standardizer",
    "VITarget",
    "check_rows",
    "checkerboard",
    "csv_chunks",
    "csv_to_npy",
    "digits",
    "eight_gaussians",
    "eight_schools",
    "energy",
    "energy_target",
    "funnel",
    "load_table",
    "open_npy",
    "read_idx",
    "rings",
    "scan_rows",
    "spirals",
    "toy_data",
    "toy_log_density",
    "two_moons",
]
