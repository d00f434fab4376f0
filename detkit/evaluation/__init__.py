"""Evaluation helpers shared by both projects."""
from .coco import build_coco_evaluator

__all__ = ["build_coco_evaluator"]
