"""Datasets: the NEON tree-crown tiles, the synthetic noisy-box set, and their registration;
users' own COCO-format data (:func:`register_coco_dataset`) and the checks the training loaders run
(:func:`validated_dataset_dicts`)."""
from .errors import DatasetError
from .coco_json import register_coco_dataset
from .validation import validated_dataset_dicts
from . import builtin  # noqa: F401  (registers treecrowns_* and synthetic_*)

__all__ = ["DatasetError", "register_coco_dataset", "validated_dataset_dicts"]
