"""Evaluation helpers shared by both projects."""
from .coco import build_coco_evaluator
from .iou_metrics import IoUMetricsCOCOEvaluator, build_iou_metrics_evaluator, iou_metrics
from .confidence_iou import (
    analyze_checkpoint,
    confidence_iou_analysis,
    iou_with_matched_gt,
    pearson,
    top_fraction_stats,
)
from .pr_curves import coco_precision, plot_pr_curves, pr_curve, write_pr_curves
from .proposal_recall import ProposalRecallEvaluator, build_proposal_recall_evaluator, proposal_recall

__all__ = [
    "IoUMetricsCOCOEvaluator",
    "ProposalRecallEvaluator",
    "analyze_checkpoint",
    "build_coco_evaluator",
    "build_iou_metrics_evaluator",
    "build_proposal_recall_evaluator",
    "coco_precision",
    "confidence_iou_analysis",
    "iou_metrics",
    "iou_with_matched_gt",
    "pearson",
    "plot_pr_curves",
    "pr_curve",
    "proposal_recall",
    "top_fraction_stats",
    "write_pr_curves",
]
