"""Datasets: the NEON tree-crown tiles, the synthetic noisy-box set, and their registration."""
from .errors import DatasetError
from . import builtin  # noqa: F401  (registers treecrowns_* and synthetic_*)

__all__ = ["DatasetError"]
