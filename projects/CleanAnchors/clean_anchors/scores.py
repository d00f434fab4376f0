"""Cleanliness scores of a batch's candidate anchors, from the detector's own predictions, and the
switches that choose between the paper's and the reference code's readings."""
import logging
from dataclasses import dataclass
from typing import List, NamedTuple, Optional

import torch
from detectron2.layers import ciou_loss, diou_loss
from detectron2.structures import Boxes, pairwise_iou
from detectron2.structures.boxes import matched_pairwise_iou
from detectron2.utils.events import get_event_storage
from detectron2.utils.logger import log_first_n
from fvcore.nn import giou_loss, smooth_l1_loss
from torch import Tensor

from .cleanliness import MATCHING, TopNCandidates, at_least_float32, rescale_to_sum, reweight, soft_labels, topn_candidates_by_chunks

__all__ = [
    "CleanlinessConfig",
    "PositiveAnchors",
    "positive_anchors",
    "CandidateScores",
    "candidate_scores",
    "match_candidates",
    "per_anchor_box_loss",
    "log_cleanliness",
    "box_pairwise_iou",
]


@dataclass
class CleanlinessConfig:
    """Hyper-parameters and switches of the method (defaults: the authors' released code).

    Attributes:
        alpha: weight of localisation in the cleanliness score (paper Eq. 3 / 4), 0.75.
        gamma: exponent of the re-weighting factor (paper Eq. 4; the code has none: 1.0).
        soft_labels: use cleanliness soft labels as the positives' classification targets.
        reweighting: multiply both losses by the re-weighting factor r.
        soft_label_mode: "official" (mean-normalise, combine, min-max rescale to [mean(loc_a), 1])
            or "paper" (alpha * loc_a + (1 - alpha) * cls_c).
        statistics: "image" (means and min-max over each image's positives, the code) or "batch".
        rescale_losses: rescale each re-weighted loss so that its batch sum is unchanged (the code).
        eps: clamp of f(x) = 1 / (1 - x) at x <= 1 - eps (the code has none and can give inf).
        matching: ground truth of a candidate: "all_gts" (the code's ``MatcherTopN``: the highest-IoU
            ground truth of the image, even one whose top-N list does not contain the anchor) or
            "own_lists" (the best among the lists that contain it).
        multiplicity: "pairs" (the code keeps (ground truth, anchor) pairs: an anchor in k top-N
            lists counts k times in every per-image mean of the soft labels and weights; its losses
            count once) or "anchors" (each positive counts once).
    """

    alpha: float = 0.75
    gamma: float = 1.0
    soft_labels: bool = True
    reweighting: bool = True
    soft_label_mode: str = "official"
    statistics: str = "image"
    rescale_losses: bool = True
    eps: float = 1e-6
    matching: str = "all_gts"
    multiplicity: str = "pairs"

    def __post_init__(self):
        if self.matching not in MATCHING:
            raise ValueError(f"CleanlinessConfig.matching must be one of {MATCHING}, got {self.matching!r}")
        if self.multiplicity not in ("pairs", "anchors"):
            raise ValueError(f"CleanlinessConfig.multiplicity must be 'pairs' or 'anchors', got {self.multiplicity!r}")
        if self.soft_label_mode not in ("official", "paper"):
            raise ValueError(f"CleanlinessConfig.soft_label_mode must be 'official' or 'paper', got {self.soft_label_mode!r}")
        if self.statistics not in ("image", "batch"):
            raise ValueError(f"CleanlinessConfig.statistics must be 'image' or 'batch', got {self.statistics!r}")
        if not 0.0 <= self.alpha <= 1.0:
            raise ValueError(f"CleanlinessConfig.alpha must be in [0, 1], got {self.alpha}")
        if not self.gamma > 0:  # also NaN
            raise ValueError(
                f"CleanlinessConfig.gamma (model.cleanliness.gamma) must be > 0, got {self.gamma}: a negative "
                "exponent inverts the re-weighting (the cleanest anchors would get the smallest weights), 0 "
                "makes every weight 1. The authors' code uses 1.0."
            )
        if not 0.0 < self.eps < 1.0:
            raise ValueError(
                f"CleanlinessConfig.eps (model.cleanliness.eps) must be in (0, 1), got {self.eps}: it bounds "
                "f(x) = 1 / (1 - x) at x = 1 - eps (1e-6 by default); 0 lets a perfect IoU give an infinite weight."
            )

    def combine(self, loss: Tensor, weights: Tensor) -> Tensor:
        """Sum of ``weights * loss`` (per-sample losses), rescaled to the unweighted sum if asked; in
        float32 whatever the losses' dtype (a half-precision sum of many losses overflows)."""
        loss, weights = at_least_float32(loss, weights)
        weighted = loss * weights
        if self.rescale_losses:
            weighted = rescale_to_sum(weighted, loss)
        return weighted.sum()


class PositiveAnchors(NamedTuple):
    """The positive anchors of a batch (P of them, in (image, anchor) order) with what the method's
    statistics and losses read of them."""

    image_index: Tensor  # (P,) long, the image of the batch
    anchors: Tensor  # (P, 4) XYXY
    pred_deltas: Tensor  # (P, 4) the head's box deltas (with gradient)
    gt_boxes: Tensor  # (P, 4) matched ground-truth boxes
    num_lists: Optional[Tensor]  # (P,) in how many top-N lists each one is (None: not top-N candidates)


def positive_anchors(
    anchors: List[Boxes], pos_mask: Tensor, pred_deltas: Tensor, gt_boxes: List[Tensor], num_lists=None
) -> PositiveAnchors:
    """Gather the positives of a batch: ``anchors`` list[Boxes] per level (R in all), ``pos_mask``
    (N, R) bool, ``pred_deltas`` (N, R, 4), ``gt_boxes`` list of N (R, 4), ``num_lists`` list of N
    (R,) or None."""
    num_images = pos_mask.shape[0]
    return PositiveAnchors(
        image_index=pos_mask.nonzero()[:, 0],
        anchors=Boxes.cat(anchors).tensor.expand(num_images, -1, -1)[pos_mask],
        pred_deltas=pred_deltas[pos_mask],
        gt_boxes=torch.stack(gt_boxes)[pos_mask],
        num_lists=None if num_lists is None else torch.stack(num_lists)[pos_mask],
    )


class CandidateScores(NamedTuple):
    """Per-candidate (P,) tensors, all without gradient."""

    loc_a: Tensor  # IoU of the decoded predicted box with the matched ground truth
    cls_c: Tensor  # predicted probability of the ground-truth class (or objectness)
    soft_labels: Tensor  # classification targets
    weights: Tensor  # re-weighting factors r


@torch.no_grad()
def candidate_scores(
    box2box_transform,
    anchors: Tensor,
    pred_deltas: Tensor,
    gt_boxes: Tensor,
    gt_class_logits: Tensor,
    image_index: Tensor,
    cfg: CleanlinessConfig,
    num_lists: Optional[Tensor] = None,
) -> CandidateScores:
    """Cleanliness of P candidate anchors.

    Args:
        box2box_transform: decodes ``pred_deltas`` (P, 4) relative to ``anchors`` (P, 4).
        gt_boxes: (P, 4) matched ground-truth boxes.
        gt_class_logits: (P,) logit of each candidate's ground-truth class.
        image_index: (P,) image of each candidate; statistics are per image when
            ``cfg.statistics == "image"``.
        num_lists: (P,) in how many top-N lists each candidate is; its weight in the means when
            ``cfg.multiplicity == "pairs"`` (None: once each, as for candidates from another
            assigner).
    """
    pred_boxes = box2box_transform.apply_deltas(pred_deltas.detach().float(), anchors.float())
    loc_a = matched_pairwise_iou(Boxes(pred_boxes), Boxes(gt_boxes.float())).clamp(0.0, 1.0)
    cls_c = gt_class_logits.detach().float().sigmoid()
    targets, weights = torch.ones_like(loc_a), torch.ones_like(loc_a)
    groups = image_index if cfg.statistics == "image" else torch.zeros_like(image_index)
    counts = num_lists if cfg.multiplicity == "pairs" else None
    for g in torch.unique(groups):  # a loop over images, never over anchors
        m = groups == g
        c = None if counts is None else counts[m]
        targets[m] = soft_labels(loc_a[m], cls_c[m], cfg.alpha, cfg.soft_label_mode, cfg.eps, counts=c)
        weights[m] = reweight(loc_a[m], cls_c[m], cfg.alpha, cfg.gamma, cfg.eps, counts=c)
    return CandidateScores(loc_a, cls_c, targets, weights)


def match_candidates(gt_boxes: Tensor, anchors: Tensor, topn: int, cfg: CleanlinessConfig) -> TopNCandidates:
    """The top-N candidates of one image as training makes them (chunked over ground truths, with
    ``cfg.matching``): ``gt_boxes`` (G, 4), ``anchors`` (A, 4) -> :class:`TopNCandidates`. Warns
    (once) when ``topn`` reaches the anchor count: every anchor is then a candidate, none background."""
    if len(gt_boxes) > 0 and topn >= anchors.shape[0]:
        log_first_n(
            logging.WARNING,
            f"CleanAnchors: topn={topn} is at or above this image's {anchors.shape[0]} anchors: every anchor is a "
            "candidate of some ground truth and none is background, so the classifier never sees a negative. "
            "Lower model.topn (the authors use 30 for RetinaNet's ~100k anchors at 800 px).",
            n=1,
        )
    return topn_candidates_by_chunks(gt_boxes, anchors, topn, box_pairwise_iou, matching=cfg.matching)


def box_pairwise_iou(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """Detectron2's ``pairwise_iou`` of (N, 4) and (M, 4) XYXY tensors: (N, M)."""
    return pairwise_iou(Boxes(boxes1), Boxes(boxes2))


def per_anchor_box_loss(box2box_transform, anchors, pred_deltas, gt_boxes, loss_type="smooth_l1", beta=0.0):
    """Box-regression loss of each of P anchors, (P,): Detectron2's dense box losses with
    reduction "none" (smooth-L1 summed over the 4 deltas, or GIoU / DIoU / CIoU)."""
    if loss_type == "smooth_l1":
        gt_deltas = box2box_transform.get_deltas(anchors, gt_boxes)
        return smooth_l1_loss(pred_deltas, gt_deltas, beta=beta, reduction="none").sum(dim=1)
    losses = {"giou": giou_loss, "diou": diou_loss, "ciou": ciou_loss}
    if loss_type not in losses:
        raise ValueError(f"Invalid dense box regression loss type '{loss_type}'")
    pred_boxes = box2box_transform.apply_deltas(pred_deltas, anchors)
    return losses[loss_type](pred_boxes, gt_boxes, reduction="none")


def log_cleanliness(scores: CandidateScores, prefix: str = "clean_anchors") -> None:
    """Mean / min / max of loc_a, cls_c, soft labels and weights into the EventStorage."""
    storage = get_event_storage()
    for name in ("loc_a", "cls_c", "soft_labels", "weights"):
        value = getattr(scores, name)
        if value.numel() == 0:
            continue
        storage.put_scalars(
            **{
                f"{prefix}/{name}_mean": value.mean().item(),
                f"{prefix}/{name}_min": value.min().item(),
                f"{prefix}/{name}_max": value.max().item(),
            },
            smoothing_hint=False,
        )
