"""RetinaNet whose per-anchor losses are weighted by a sample weighting network (SWN, CVPR 2020)."""
from typing import List, NamedTuple, Optional

import torch
from detectron2.layers import cat
from detectron2.modeling.meta_arch import RetinaNet
from detectron2.structures import Boxes
from detectron2.structures.boxes import matched_pairwise_iou
from fvcore.nn import sigmoid_focal_loss_jit, smooth_l1_loss
from torch import Tensor

from detkit.modeling.dense_labels import NORMALIZERS, dense_targets, loss_normalizer
from detkit.modeling.loss_normalizer import GlobalLossNormalizer

from .loss import weighted_sum
from .network import SampleWeightingNetwork
from .weighting import SampleWeights, SWNConfig, log_weights

__all__ = ["SWNRetinaNet", "SWNInputs", "DenseSWNSamples", "dense_swn_samples"]


class SWNInputs(NamedTuple):
    """The SWN's inputs, one row per SWN sample of a batch (S rows: every anchor, or the valid ones
    with ``weighting.samples="valid"``; in order of images, then anchors), all detached except
    ``iou`` / ``prob`` with ``weighting.detach_inputs="losses"``. Ignored anchors have four 0
    inputs, negatives three."""

    cls_loss: Tensor  # (S,) focal loss summed over classes
    reg_loss: Tensor  # (S, 4) smooth-L1 of the 4 box deltas (0 for negatives)
    iou: Tensor  # (S,) IoU of the decoded predicted box with its ground truth (0 for negatives)
    prob: Tensor  # (S,) sigmoid probability of the ground-truth class (0 for negatives)
    pos: Tensor  # (S,) bool, positive anchors
    image_index: Tensor  # (S,) long, the image of the batch
    mask_loss: Optional[Tensor] = None  # (S,) Mask R-CNN's per-RoI mask loss (0 for background)


class DenseSWNSamples(NamedTuple):
    """Everything :class:`SWNRetinaNet` trains one batch with, per sample, before the reduction
    (N images, R anchors each, V valid anchors, P positives, S SWN samples)."""

    valid_mask: Tensor  # (N, R) bool, anchors not ignored by the matcher
    pos_mask: Tensor  # (N, R) bool, positive anchors
    valid: Tensor  # (S,) bool, which SWN samples are valid anchors (all True with samples="valid")
    cls_loss: Tensor  # (V,) focal loss of each valid anchor, summed over classes (with gradient)
    reg_loss: Tensor  # (P, 4) per-coordinate smooth-L1 of each positive (with gradient)
    inputs: SWNInputs  # the SWN's inputs (S rows)
    m: Optional[Tensor]  # (S, 2) the SWN's output; None when the SWN is off (or absent)
    weights: SampleWeights  # the loss weights (cls (S,), reg (P,)) the switches make of m


def dense_swn_samples(
    model: RetinaNet,
    swn: Optional[SampleWeightingNetwork],
    weighting: SWNConfig,
    anchors: List[Boxes],
    pred_logits: List[Tensor],
    gt_labels: List[Tensor],
    pred_anchor_deltas: List[Tensor],
    gt_boxes: List[Tensor],
) -> DenseSWNSamples:
    """The per-sample quantities of :meth:`SWNRetinaNet.losses`, for any RetinaNet ``model`` (its
    focal alpha / gamma, smooth-L1 beta and box transform) and any SWN (None: weights 1, the
    baseline of the analysis pictures). Arguments as ``RetinaNet.losses``; no side effect.
    """
    w = weighting
    if model.box_reg_loss_type != "smooth_l1":
        raise ValueError(
            f"the SWN reads 4-d smooth-L1 box losses; this {type(model).__name__} has "
            f"box_reg_loss_type={model.box_reg_loss_type!r}"
        )
    num_images = len(gt_labels)
    logits = cat(pred_logits, dim=1)  # (N, R, K)
    deltas = cat(pred_anchor_deltas, dim=1)  # (N, R, 4)
    gt_labels, valid_mask, pos_mask, targets = dense_targets(gt_labels, model.num_classes, logits.dtype)
    cls_loss = sigmoid_focal_loss_jit(
        logits[valid_mask], targets[valid_mask],
        alpha=model.focal_loss_alpha, gamma=model.focal_loss_gamma, reduction="none",
    ).sum(dim=1)  # (V,)

    pos_anchors = Boxes.cat(anchors).tensor.expand(num_images, -1, -1)[pos_mask]  # (P, 4)
    pos_gt_boxes = torch.stack(gt_boxes)[pos_mask]
    pos_deltas = deltas[pos_mask]
    gt_deltas = model.box2box_transform.get_deltas(pos_anchors, pos_gt_boxes)
    reg_loss = smooth_l1_loss(pos_deltas, gt_deltas, beta=model.smooth_l1_beta, reduction="none")  # (P, 4)

    # The SWN's samples: every anchor (reference) or the valid ones; S of them.
    samples = torch.ones_like(valid_mask) if w.samples == "all" else valid_mask  # (N, R)
    valid_in_samples, pos_in_samples = valid_mask[samples], pos_mask[samples]  # (S,)
    with torch.set_grad_enabled(torch.is_grad_enabled() and w.detach_inputs == "losses"):
        pred_boxes = model.box2box_transform.apply_deltas(pos_deltas, pos_anchors)
        pos_iou = matched_pairwise_iou(Boxes(pred_boxes), Boxes(pos_gt_boxes))
        pos_labels = gt_labels[pos_mask]
        pos_prob = logits[pos_mask].gather(1, pos_labels[:, None]).squeeze(1).sigmoid()
    num_samples = int(valid_in_samples.shape[0])
    pos_index = (pos_in_samples.nonzero()[:, 0],)
    inputs = SWNInputs(
        cls_loss=cls_loss.detach().new_zeros(num_samples).index_put((valid_in_samples.nonzero()[:, 0],), cls_loss.detach()),
        reg_loss=reg_loss.new_zeros((num_samples, 4)).index_put(pos_index, reg_loss.detach()),
        iou=pos_iou.new_zeros(num_samples).index_put(pos_index, pos_iou),
        prob=pos_prob.new_zeros(num_samples).index_put(pos_index, pos_prob),
        pos=pos_in_samples,
        image_index=samples.nonzero()[:, 0],
    )
    m = None
    if w.enabled and swn is not None:
        m = swn(inputs.cls_loss, inputs.reg_loss, inputs.iou, inputs.prob, detach_iou_prob=w.detach_inputs == "all")
    weights = w.weights(m, pos_in_samples, cls_loss, reg_loss)
    return DenseSWNSamples(valid_mask, pos_mask, valid_in_samples, cls_loss, reg_loss, inputs, m, weights)


class SWNRetinaNet(GlobalLossNormalizer, RetinaNet):
    """Detectron2's RetinaNet trained with SWN sample weights; inference is stock RetinaNet's.

    Per anchor, the SWN sees the focal loss summed over classes, the 4-d smooth-L1 of the box
    deltas, the IoU of the decoded predicted box with its ground truth and the sigmoid probability
    of the ground-truth class (the last three 0 for negatives; all four 0 for the anchors the
    matcher ignores). It runs on every anchor of the batch, the ignored ones included
    (``weighting.samples="all"``, reference code; ``"valid"`` leaves them out). Its output
    ``m_cls`` is averaged over all those anchors (reference code: without it training "could fail
    occasionally"), ``m_reg`` stays per positive; losses are multiplied by ``exp(-m)`` (or
    ``exp(-2m)``) and normalised as stock RetinaNet's; the regulariser
    ``lam * (mean m_cls + mean_pos m_reg)`` is its own loss entry ``loss_swn_reg``.

    Args (besides RetinaNet's):
        swn: the :class:`SampleWeightingNetwork` (default: the reference configuration).
        weighting: a :class:`SWNConfig` (lambda, loss form, averaging rule, samples, input
            gradients, which losses are weighted, on/off).
        normalizer: the loss normaliser (:func:`detkit.modeling.dense_labels.loss_normalizer`):
            ``"ema"`` (default: Detectron2's EMA of the positive count, the normaliser of the stock
            RetinaNet it is compared with) or ``"batch"`` (the reference mmdetection code: this
            batch's positives, ``max(P_i, 1)`` per image; pair it with a baseline of the same).
        global_loss_normalizer: count the positives of all DDP processes (default; exactly
            Detectron2's per-process EMA in one process), see :mod:`detkit.modeling.loss_normalizer`.
    """

    def __init__(
        self, *, swn: SampleWeightingNetwork = None, weighting: SWNConfig = None, normalizer: str = "ema", **kwargs
    ):
        super().__init__(**kwargs)
        if normalizer not in NORMALIZERS:
            raise ValueError(f"SWNRetinaNet: normalizer must be one of {NORMALIZERS}, got {normalizer!r}")
        self.normalizer = normalizer
        if self.box_reg_loss_type != "smooth_l1":
            raise ValueError(
                f"SWNRetinaNet needs box_reg_loss_type='smooth_l1' (the SWN reads 4-d box losses), "
                f"got {self.box_reg_loss_type!r}"
            )
        self.swn = swn if swn is not None else SampleWeightingNetwork()
        self.weighting = weighting if weighting is not None else SWNConfig()

    def training_samples(self, anchors, pred_logits, gt_labels, pred_anchor_deltas, gt_boxes) -> DenseSWNSamples:
        """The per-sample losses, SWN inputs, outputs and weights :meth:`losses` reduces
        (:func:`dense_swn_samples` with this model's SWN and switches); no side effect."""
        return dense_swn_samples(
            self, self.swn, self.weighting, anchors, pred_logits, gt_labels, pred_anchor_deltas, gt_boxes
        )

    def losses(self, anchors, pred_logits, gt_labels, pred_anchor_deltas, gt_boxes):
        """Arguments as ``RetinaNet.losses``. Returns loss_cls, loss_box_reg and loss_swn_reg."""
        s = self.training_samples(anchors, pred_logits, gt_labels, pred_anchor_deltas, gt_boxes)
        normalizer = loss_normalizer(self, s.pos_mask, self.normalizer)
        log_weights(s.weights, s.inputs.pos)
        return {
            "loss_cls": weighted_sum(s.cls_loss, s.weights.cls[s.valid]) / normalizer,
            "loss_box_reg": weighted_sum(s.reg_loss, s.weights.reg) / normalizer,
            "loss_swn_reg": self.weighting.regulariser(s.weights, s.inputs.pos),
        }
