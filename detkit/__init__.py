"""Shared toolkit of the CleanAnchors and SWN Detectron2 projects.

Importing :mod:`detkit` registers the built-in datasets (``treecrowns_*``, ``synthetic_*``) in
Detectron2's DatasetCatalog; the data themselves are produced lazily on first use.
"""
from . import data  # noqa: F401  (registers datasets)

__version__ = "0.1.0"
