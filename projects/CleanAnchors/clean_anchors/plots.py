"""Pictures of :class:`clean_anchors.analysis.CandidateAnchors` of one image (paper Figs. 1, 3):
candidate boxes coloured by soft label or by re-weighting factor, and both against the anchor's IoU
with its ground truth (what a hard IoU assigner would label by)."""
from typing import Sequence

import numpy as np
from matplotlib.figure import Figure

from detkit.visualization import boxes_on_image_figure

from .analysis import CandidateAnchors

__all__ = ["candidates_of_image", "candidates_in_region", "anchors_figure", "iou_scatter_figure"]

BOX_KINDS = ("anchors", "predictions")


def candidates_of_image(candidates: CandidateAnchors, image: int) -> CandidateAnchors:
    """The candidates of one image of the batch, as numpy arrays."""
    keep = (candidates.image_index == image).cpu()
    return CandidateAnchors(*(t.cpu()[keep].numpy() for t in candidates))


def _centres_inside(boxes: np.ndarray, region: Sequence[float]) -> np.ndarray:
    cx, cy = (boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2
    x0, y0, x1, y1 = region
    return (cx >= x0) & (cx < x1) & (cy >= y0) & (cy < y1)


def candidates_in_region(candidates: CandidateAnchors, gt_boxes: np.ndarray, region: Sequence[float]):
    """The candidates (numpy, one image) whose ground truth's centre lies in ``region``
    ``(x0, y0, x1, y1)``, and those ground-truth boxes (G', 4)."""
    keep = _centres_inside(np.asarray(candidates.gt_boxes).reshape(-1, 4), region)
    return CandidateAnchors(*(t[keep] for t in candidates)), gt_boxes[_centres_inside(gt_boxes, region)]


def anchors_figure(image, candidates: CandidateAnchors, gt_boxes, value: str, boxes: str = "anchors",
                   title: str = "", region: Sequence[float] = None) -> Figure:
    """One image's candidates (from :func:`candidates_of_image`) drawn as thin boxes coloured by
    ``value`` (``"soft_labels"``: plasma; ``"weights"``: blue below 1, red above; the colour scale
    spans the values drawn), with the ground truth dashed cyan, on the desaturated image.

    Args:
        image: (H, W, 3) uint8 RGB, the model's input image.
        boxes: ``"anchors"`` (the candidate anchors themselves) or ``"predictions"`` (the boxes the
            model regresses from them, whose IoU is ``loc_a``).
        region: ``(x0, y0, x1, y1)`` to show only part of the image (pass the candidates of
            :func:`candidates_in_region` with it).
    """
    if boxes not in BOX_KINDS:
        raise ValueError(f"anchors_figure: boxes must be one of {BOX_KINDS}, got {boxes!r}")
    labels = {"soft_labels": "soft label (classification target)", "weights": "re-weighting factor r"}
    if value not in labels:
        raise ValueError(f"anchors_figure: value must be one of {tuple(labels)}, got {value!r}")
    values = getattr(candidates, value)
    drawn = candidates.anchors if boxes == "anchors" else candidates.pred_boxes
    if value == "soft_labels":
        style = dict(cmap="plasma")
    else:  # down-weighted (< 1) blue, up-weighted (> 1) red
        style = dict(cmap="RdYlBu_r", center=1.0)
    return boxes_on_image_figure(
        image, drawn, values, gt_boxes=gt_boxes, title=title, colorbar_label=labels[value],
        linewidth=0.8, region=region, **style,
    )


def iou_scatter_figure(candidates: CandidateAnchors, iou_thresholds: Sequence[float] = (0.4, 0.5),
                       title: str = "") -> Figure:
    """Soft label and re-weighting factor of each candidate against its anchor's IoU with its
    ground truth, points coloured by the predicted probability ``cls_c``; dashed lines at the IoU
    thresholds of a hard assigner (RetinaNet: negative below 0.4, positive from 0.5)."""
    fig = Figure(figsize=(10, 4))
    axes = fig.subplots(1, 2)
    iou = np.asarray(candidates.anchor_iou)
    for ax, name, label in zip(
        axes, ("soft_labels", "weights"), ("soft label (classification target)", "re-weighting factor r")
    ):
        points = ax.scatter(iou, getattr(candidates, name), c=candidates.cls_c, cmap="viridis", vmin=0, vmax=1,
                            s=6, alpha=0.7, linewidths=0)
        for t in iou_thresholds:
            ax.axvline(t, color="grey", linestyle="--", linewidth=0.8)
        ax.set_xlabel("IoU of the anchor with its ground truth")
        ax.set_ylabel(label)
        ax.set_xlim(0, 1)
        if name == "soft_labels":
            ax.set_ylim(-0.02, 1.02)
    fig.colorbar(points, ax=axes, fraction=0.03, pad=0.02).set_label("cls_c: probability of the GT class")
    fig.suptitle(title, fontsize=9)
    return fig
