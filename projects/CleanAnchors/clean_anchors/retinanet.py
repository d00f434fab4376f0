"""RetinaNet trained with cleanliness soft labels and re-weighting (noisy anchors, CVPR 2020)."""
import functools
from typing import List, NamedTuple, Optional

import torch
from detectron2.layers import cat
from detectron2.modeling.box_regression import _dense_box_regression_loss
from detectron2.modeling.meta_arch import RetinaNet
from detectron2.structures import Boxes, Instances
from detectron2.utils.events import get_event_storage
from fvcore.nn import sigmoid_focal_loss_jit
from torch import Tensor

from detkit.modeling.dense_labels import NORMALIZERS, dense_targets, loss_normalizer
from detkit.modeling.loss_normalizer import GlobalLossNormalizer

from .cleanliness import at_least_float32, soft_focal_loss
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

__all__ = ["CleanAnchorsRetinaNet", "CandidateLabels", "CleanAnchorsSamples", "label_candidates", "clean_anchors_samples"]


class CandidateLabels(NamedTuple):
    """Per-image labels of a batch (``label_anchors``' outputs, plus the top-N list counts)."""

    gt_labels: List[Tensor]  # N x (R,) in {-1 (ignored), 0..K-1, K (background)}
    gt_boxes: List[Tensor]  # N x (R, 4) matched boxes (undefined for background)
    num_lists: Optional[List[Tensor]]  # N x (R,) in how many top-N lists each anchor is; None: IoU labels


def label_candidates(
    anchors: List[Boxes], gt_instances: List[Instances], topn: int, cleanliness: CleanlinessConfig, num_classes: int
) -> CandidateLabels:
    """The top-N candidates of each ground truth as foreground, every other anchor background
    (label ``num_classes``); no anchor is ignored. No side effect.

    Args:
        anchors: list[Boxes] per level (R anchors in all); gt_instances: N ``Instances`` with
            ``gt_boxes`` / ``gt_classes``.
    """
    anchors = Boxes.cat(anchors)
    gt_labels, matched_gt_boxes, num_lists = [], [], []
    for gt in gt_instances:  # a loop over images, never over anchors
        matched, lists = match_candidates(gt.gt_boxes.tensor, anchors.tensor, topn, cleanliness)
        num_lists.append(lists)
        if len(gt) > 0:
            index = matched.clamp(min=0)
            gt_labels.append(torch.where(matched >= 0, gt.gt_classes[index], torch.full_like(index, num_classes)))
            matched_gt_boxes.append(gt.gt_boxes.tensor[index])
        else:
            gt_labels.append(torch.full_like(matched, num_classes))
            matched_gt_boxes.append(torch.zeros_like(anchors.tensor))
    return CandidateLabels(gt_labels, matched_gt_boxes, num_lists)


class CleanAnchorsSamples(NamedTuple):
    """Everything :class:`CleanAnchorsRetinaNet` trains one batch with, per anchor, before the
    reduction (N images, R anchors each, V valid anchors, P positives)."""

    valid_mask: Tensor  # (N, R) bool
    pos_mask: Tensor  # (N, R) bool
    targets: Tensor  # (N, R, K) classification targets: the positives' class entry is its soft label
    positives: PositiveAnchors  # the positives' anchors, deltas, boxes, list counts
    pos_labels: Tensor  # (P,) their classes
    scores: CandidateScores  # (P,) loc_a, cls_c, soft labels, re-weighting factors r
    cls_loss: Tensor  # (V,) focal loss (soft, with soft labels) summed over classes, with gradient
    box_loss: Tensor  # (P,) box-regression loss, with gradient
    weights: Tensor  # (V,) what the re-weighting multiplies cls_loss by (1 for negatives)


def clean_anchors_samples(
    model: RetinaNet,
    cleanliness: CleanlinessConfig,
    anchors: List[Boxes],
    pred_logits: List[Tensor],
    gt_labels: List[Tensor],
    pred_anchor_deltas: List[Tensor],
    gt_boxes: List[Tensor],
    num_lists: Optional[List[Tensor]] = None,
) -> CleanAnchorsSamples:
    """The per-anchor quantities of :meth:`CleanAnchorsRetinaNet.losses` (with soft labels or
    re-weighting on), for any RetinaNet ``model`` (its focal alpha / gamma, box loss and
    transform). Arguments as ``RetinaNet.losses`` plus ``num_lists`` (see :class:`CandidateLabels`);
    no side effect. Under AMP the soft targets, focal losses and statistics are float32."""
    cfg = cleanliness
    logits = cat(pred_logits, dim=1)  # (N, R, K)
    labels, valid_mask, pos_mask, targets = dense_targets(gt_labels, model.num_classes, logits.dtype)
    logits, targets = at_least_float32(logits, targets)
    positives = positive_anchors(anchors, pos_mask, cat(pred_anchor_deltas, dim=1), gt_boxes, num_lists)
    pos_labels = labels[pos_mask]  # (P,)
    scores = candidate_scores(
        model.box2box_transform,
        anchors=positives.anchors,
        pred_deltas=positives.pred_deltas,
        gt_boxes=positives.gt_boxes,
        gt_class_logits=logits[pos_mask].gather(1, pos_labels[:, None]).squeeze(1),
        image_index=positives.image_index,
        cfg=cfg,
        num_lists=positives.num_lists,
    )
    if cfg.soft_labels:
        pos_targets = targets[pos_mask]
        pos_targets.scatter_(1, pos_labels[:, None], scores.soft_labels[:, None].to(logits.dtype))
        targets[pos_mask] = pos_targets
        focal = soft_focal_loss
    else:
        focal = functools.partial(sigmoid_focal_loss_jit, reduction="none")
    cls_loss = focal(
        logits[valid_mask], targets[valid_mask], alpha=model.focal_loss_alpha, gamma=model.focal_loss_gamma
    ).sum(dim=1)  # (V,) summed over classes
    box_loss = per_anchor_box_loss(
        model.box2box_transform, positives.anchors, positives.pred_deltas, positives.gt_boxes,
        model.box_reg_loss_type, model.smooth_l1_beta,
    )  # (P,)
    weights = torch.ones_like(cls_loss)  # background anchors keep weight 1
    weights[pos_mask[valid_mask]] = scores.weights.to(cls_loss.dtype)
    return CleanAnchorsSamples(valid_mask, pos_mask, targets, positives, pos_labels, scores, cls_loss, box_loss, weights)


class CleanAnchorsRetinaNet(GlobalLossNormalizer, RetinaNet):
    """Detectron2's RetinaNet with the losses of "Learning from Noisy Anchors" (Li et al.).

    Candidates are the ``topn`` anchors of each ground truth (no IoU threshold, no ignore band);
    their classification targets are cleanliness soft labels and both losses are re-weighted by
    ``r``. Inference is unchanged: a checkpoint loads into stock ``RetinaNet``.

    With ``assigner="iou"``, ``soft_labels=False``, ``reweighting=False`` and
    ``normalizer="ema"`` the losses are exactly those of stock RetinaNet (with the
    same normaliser: :class:`~detkit.modeling.GlobalNormalizerRetinaNet` or, with
    ``global_loss_normalizer=False``, ``RetinaNet``).

    Args (besides RetinaNet's; set ``focal_loss_alpha=0.5`` as the reference configs do):
        topn: candidates per ground truth (paper's N, 30).
        assigner: ``"topn"`` (the method) or ``"iou"`` (RetinaNet's ``anchor_matcher``, 0.4/0.5).
        cleanliness: a :class:`CleanlinessConfig` (alpha, gamma, on/off switches, soft-label mode,
            candidate matching and multiplicity, statistics per image or per batch, loss-sum
            rescaling).
        normalizer: the loss normaliser (:func:`detkit.modeling.dense_labels.loss_normalizer`):
            ``"ema_raw"`` (the authors' code: the EMA, initial 100 and momentum 0.9, of the positive
            count, 0 for a batch without positives; the losses are divided by ``max(1, EMA)``),
            ``"ema"`` (Detectron2's RetinaNet: the EMA of ``max(count, 1)``) or ``"batch"``.
        global_loss_normalizer: count the positives of all DDP processes (default; exactly
            Detectron2's per-process EMA in one process), see :mod:`detkit.modeling.loss_normalizer`.
    """

    def __init__(
        self,
        *,
        topn: int = 30,
        assigner: str = "topn",
        cleanliness: CleanlinessConfig = None,
        normalizer: str = "ema_raw",
        **kwargs,
    ):
        super().__init__(**kwargs)
        if assigner not in ("topn", "iou"):
            raise ValueError(f"CleanAnchorsRetinaNet: assigner must be 'topn' or 'iou', got {assigner!r}")
        if isinstance(topn, bool) or not isinstance(topn, int) or topn < 1:
            raise ValueError(
                f"CleanAnchorsRetinaNet: topn (model.topn) must be a whole number >= 1, got {topn!r}: it is how many "
                "anchors of highest IoU become each ground truth's candidates (positives); 0 would train "
                "without any positive."
            )
        if normalizer not in NORMALIZERS:
            raise ValueError(f"CleanAnchorsRetinaNet: normalizer must be one of {NORMALIZERS}, got {normalizer!r}")
        self.topn = topn
        self.assigner = assigner
        self.cleanliness = cleanliness if cleanliness is not None else CleanlinessConfig()
        self.normalizer = normalizer

    def forward_training(self, images, features, predictions, gt_instances):
        pred_logits, pred_anchor_deltas = self._transpose_dense_predictions(
            predictions, [self.num_classes, 4]
        )
        anchors = self.anchor_generator(features)
        if self.assigner == "topn":
            gt_labels, gt_boxes, num_lists = self.label_candidates(anchors, gt_instances)
        else:
            (gt_labels, gt_boxes), num_lists = self.label_anchors(anchors, gt_instances), None
        return self.losses(anchors, pred_logits, gt_labels, pred_anchor_deltas, gt_boxes, num_lists)

    @torch.no_grad()
    def label_candidates(self, anchors, gt_instances) -> CandidateLabels:
        """Like ``label_anchors``, with the top-N candidates of each ground truth as foreground and
        every other anchor as background (label K); no anchor is ignored (:func:`label_candidates`);
        logs the candidates per ground truth.

        Returns:
            list[Tensor] (R,) labels in {0..K}, list[Tensor] (R, 4) matched boxes (undefined for
            background), list[Tensor] (R,) in how many top-N lists each anchor is, one per image;
            R = anchors over all levels.
        """
        labels = label_candidates(anchors, gt_instances, self.topn, self.cleanliness, self.num_classes)
        num_candidates = sum(int((x != self.num_classes).sum()) for x in labels.gt_labels)
        num_gt = sum(len(gt) for gt in gt_instances)
        get_event_storage().put_scalar("clean_anchors/candidates_per_gt", num_candidates / max(num_gt, 1))
        return labels

    def training_samples(
        self, anchors, pred_logits, gt_labels, pred_anchor_deltas, gt_boxes, num_lists=None
    ) -> CleanAnchorsSamples:
        """The per-anchor targets, cleanliness, losses and weights :meth:`losses` reduces
        (:func:`clean_anchors_samples` with this model's switches); no side effect."""
        return clean_anchors_samples(
            self, self.cleanliness, anchors, pred_logits, gt_labels, pred_anchor_deltas, gt_boxes, num_lists
        )

    def losses(self, anchors, pred_logits, gt_labels, pred_anchor_deltas, gt_boxes, num_lists=None):
        """
        Args, as ``RetinaNet.losses``: anchors list[Boxes] per level; pred_logits /
        pred_anchor_deltas list of (N, Hi*Wi*A, K or 4) per level; gt_labels list of N (R,) in
        {-1, 0..K}; gt_boxes list of N (R, 4); plus num_lists: list of N (R,) top-N list counts
        from :meth:`label_candidates` (None: each positive counts once in the statistics).

        Returns:
            {"loss_cls", "loss_box_reg"}, each divided by the loss normaliser (``normalizer``).
        """
        cfg = self.cleanliness
        if not (cfg.soft_labels or cfg.reweighting):
            # RetinaNet.losses line for line, so that the switched-off method is bit-identical.
            logits = cat(pred_logits, dim=1)  # (N, R, K)
            gt_labels, valid_mask, pos_mask, targets = dense_targets(gt_labels, self.num_classes, logits.dtype)
            normalizer = loss_normalizer(self, pos_mask, self.normalizer)
            loss_cls = sigmoid_focal_loss_jit(
                logits[valid_mask], targets[valid_mask],
                alpha=self.focal_loss_alpha, gamma=self.focal_loss_gamma, reduction="sum",
            )
            loss_box_reg = _dense_box_regression_loss(
                anchors, self.box2box_transform, pred_anchor_deltas, gt_boxes, pos_mask,
                box_reg_loss_type=self.box_reg_loss_type, smooth_l1_beta=self.smooth_l1_beta,
            )
            return {"loss_cls": loss_cls / normalizer, "loss_box_reg": loss_box_reg / normalizer}

        s = self.training_samples(anchors, pred_logits, gt_labels, pred_anchor_deltas, gt_boxes, num_lists)
        normalizer = loss_normalizer(self, s.pos_mask, self.normalizer)
        log_cleanliness(s.scores)
        if cfg.reweighting:
            loss_cls = cfg.combine(s.cls_loss, s.weights)
            loss_box_reg = cfg.combine(s.box_loss, s.scores.weights.to(s.box_loss.dtype))
        else:
            loss_cls, loss_box_reg = s.cls_loss.sum(), s.box_loss.sum()
        return {"loss_cls": loss_cls / normalizer, "loss_box_reg": loss_box_reg / normalizer}
