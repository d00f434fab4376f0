"""The RPN of Faster R-CNN trained with cleanliness soft labels and re-weighting (paper Tables 5-6).

The paper applies the method "only for RPNs" and gives no further detail (the reference code has
no two-stage path). What this module chooses, each a constructor argument:

* candidates: the ``topn`` highest-IoU anchors of each ground truth (default 10: the RPN has 3
  anchors per location where RetinaNet has 9, and RetinaNet's N is 30), matched by
  ``cleanliness.matching`` as in the one-stage code; all other anchors are negatives (no 0.3-0.7
  ignore band). ``assigner="iou"`` keeps the stock 0.3/0.7 matcher instead;
* statistics: over each image's *sampled* positives, each counted once
  (``cleanliness.multiplicity`` must be ``"anchors"``: the sampling draws anchors, not the
  one-stage code's (ground truth, anchor) pairs);
* sampling: the stock RPN's 256 anchors per image, at most half positive, drawn from candidates and
  negatives; the loss normaliser stays 256 x images;
* loc_a: IoU of the decoded proposal with its ground truth; cls_c: sigmoid of the objectness logit;
* soft labels replace the positives' objectness target 1 in the (plain, non-focal) binary
  cross-entropy, so for the RPN the minimiser is p = soft label;
* re-weighting multiplies the objectness loss of sampled positives and their box loss by r
  (negatives weight 1), each rescaled to keep its batch sum (as in the one-stage method).
"""
from typing import List, NamedTuple

import torch
import torch.nn.functional as F
from detectron2.layers import cat
from detectron2.modeling.proposal_generator import RPN
from detectron2.structures import Boxes, Instances
from detectron2.utils.events import get_event_storage
from torch import Tensor

from .scores import (
    CandidateScores,
    CleanlinessConfig,
    PositiveAnchors,
    candidate_scores,
    log_cleanliness,
    match_candidates,
    per_anchor_box_loss,
    positive_anchors,
)

__all__ = ["CleanAnchorsRPN", "RPNSamples"]


class RPNSamples(NamedTuple):
    """Everything :class:`CleanAnchorsRPN` trains one batch with, per sampled anchor, before the
    reduction (N images, R anchors each, V sampled, P sampled positives)."""

    valid_mask: Tensor  # (N, R) bool, the sampled anchors
    pos_mask: Tensor  # (N, R) bool, the sampled positives
    targets: Tensor  # (N, R) objectness targets: soft labels for the positives (with soft_labels), else 0/1
    positives: PositiveAnchors
    scores: CandidateScores  # (P,)
    objectness_loss: Tensor  # (V,) binary cross-entropy, with gradient
    localization_loss: Tensor  # (P,) box loss, with gradient
    weights: Tensor  # (V,) what the re-weighting multiplies the objectness loss by (1 for negatives)


class CleanAnchorsRPN(RPN):
    """Detectron2's RPN with top-N candidates, cleanliness soft objectness targets and re-weighting.
    Proposals at inference are unchanged (a checkpoint loads into a stock ``RPN``).

    Args (besides RPN's):
        topn: candidates per ground truth.
        assigner: "topn" or "iou" (the stock ``anchor_matcher``).
        cleanliness: a :class:`CleanlinessConfig` with ``multiplicity="anchors"`` (the default here).
    """

    def __init__(self, *, topn: int = 10, assigner: str = "topn", cleanliness: CleanlinessConfig = None, **kwargs):
        super().__init__(**kwargs)
        if assigner not in ("topn", "iou"):
            raise ValueError(f"CleanAnchorsRPN: assigner must be 'topn' or 'iou', got {assigner!r}")
        if isinstance(topn, bool) or not isinstance(topn, int) or topn < 1:
            raise ValueError(
                f"CleanAnchorsRPN: topn (model.proposal_generator.topn) must be a whole number >= 1, got {topn!r}: it is how many "
                "anchors of highest IoU become each ground truth's candidates (positives); 0 would train "
                "without any positive."
            )
        self.topn = topn
        self.assigner = assigner
        self.cleanliness = cleanliness if cleanliness is not None else CleanlinessConfig(multiplicity="anchors")
        if self.cleanliness.multiplicity != "anchors":
            raise ValueError(
                "CleanAnchorsRPN: cleanliness.multiplicity must be 'anchors' (the RPN samples anchors, "
                f"each counted once), got {self.cleanliness.multiplicity!r}; set "
                "model.proposal_generator.cleanliness.multiplicity='anchors'"
            )

    @torch.no_grad()
    def label_and_sample_anchors(self, anchors: List[Boxes], gt_instances: List[Instances]):
        """As ``RPN.label_and_sample_anchors``; with ``assigner="topn"`` the candidates are label 1
        and every other anchor label 0 before the usual 256-anchor sampling."""
        if self.assigner == "iou":
            return super().label_and_sample_anchors(anchors, gt_instances)
        anchors = Boxes.cat(anchors)
        gt_labels, matched_gt_boxes = [], []
        num_candidates, num_gt = 0, 0
        for gt in gt_instances:
            matched, _ = match_candidates(gt.gt_boxes.tensor, anchors.tensor, self.topn, self.cleanliness)
            labels = (matched >= 0).to(torch.int8)
            if self.anchor_boundary_thresh >= 0:
                labels[~anchors.inside_box(gt.image_size, self.anchor_boundary_thresh)] = -1
            num_candidates += int((matched >= 0).sum())
            num_gt += len(gt)
            gt_labels.append(self._subsample_labels(labels))
            if len(gt) == 0:
                matched_gt_boxes.append(torch.zeros_like(anchors.tensor))
            else:
                matched_gt_boxes.append(gt.gt_boxes.tensor[matched.clamp(min=0)])
        get_event_storage().put_scalar("clean_anchors/rpn_candidates_per_gt", num_candidates / max(num_gt, 1))
        return gt_labels, matched_gt_boxes

    def training_samples(self, anchors, pred_objectness_logits, gt_labels, pred_anchor_deltas, gt_boxes) -> RPNSamples:
        """The per-anchor soft targets, cleanliness, losses and weights :meth:`losses` reduces
        (arguments as ``RPN.losses``); no side effect."""
        cfg = self.cleanliness
        gt_labels = torch.stack(gt_labels)  # (N, R)
        pos_mask = gt_labels == 1
        valid_mask = gt_labels >= 0
        logits = cat(pred_objectness_logits, dim=1)  # (N, R)
        positives = positive_anchors(anchors, pos_mask, cat(pred_anchor_deltas, dim=1), gt_boxes)
        scores = candidate_scores(
            self.box2box_transform,
            anchors=positives.anchors,
            pred_deltas=positives.pred_deltas,
            gt_boxes=positives.gt_boxes,
            gt_class_logits=logits[pos_mask],
            image_index=positives.image_index,
            cfg=cfg,
        )
        targets = gt_labels.to(logits.dtype)
        if cfg.soft_labels:
            targets[pos_mask] = scores.soft_labels.to(logits.dtype)
        objectness = F.binary_cross_entropy_with_logits(logits[valid_mask], targets[valid_mask], reduction="none")
        localization = per_anchor_box_loss(
            self.box2box_transform, positives.anchors, positives.pred_deltas, positives.gt_boxes,
            self.box_reg_loss_type, self.smooth_l1_beta,
        )
        weights = torch.ones_like(objectness)
        weights[pos_mask[valid_mask]] = scores.weights.to(objectness.dtype)
        return RPNSamples(valid_mask, pos_mask, targets, positives, scores, objectness, localization, weights)

    def losses(self, anchors, pred_objectness_logits, gt_labels, pred_anchor_deltas, gt_boxes):
        """As ``RPN.losses`` (same arguments and loss names), with soft targets and weights."""
        cfg = self.cleanliness
        if not (cfg.soft_labels or cfg.reweighting):
            return super().losses(anchors, pred_objectness_logits, gt_labels, pred_anchor_deltas, gt_boxes)
        s = self.training_samples(anchors, pred_objectness_logits, gt_labels, pred_anchor_deltas, gt_boxes)
        num_images = len(gt_labels)
        storage = get_event_storage()
        storage.put_scalar("rpn/num_pos_anchors", s.pos_mask.sum().item() / num_images)
        storage.put_scalar("rpn/num_neg_anchors", (s.valid_mask & ~s.pos_mask).sum().item() / num_images)
        log_cleanliness(s.scores, prefix="clean_anchors/rpn")
        if cfg.reweighting:
            objectness_loss = cfg.combine(s.objectness_loss, s.weights)
            localization_loss = cfg.combine(s.localization_loss, s.scores.weights.to(s.localization_loss.dtype))
        else:
            objectness_loss, localization_loss = s.objectness_loss.sum(), s.localization_loss.sum()
        normalizer = self.batch_size_per_image * num_images
        losses = {"loss_rpn_cls": objectness_loss / normalizer, "loss_rpn_loc": localization_loss / normalizer}
        return {k: v * self.loss_weight.get(k, 1.0) for k, v in losses.items()}
