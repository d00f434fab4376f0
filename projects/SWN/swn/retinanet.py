"""RetinaNet whose per-anchor losses are weighted by a sample weighting network (SWN, CVPR 2020)."""
import torch
from detectron2.layers import cat
from detectron2.modeling.meta_arch import RetinaNet
from detectron2.structures import Boxes
from detectron2.structures.boxes import matched_pairwise_iou
from fvcore.nn import sigmoid_focal_loss_jit, smooth_l1_loss

from detkit.modeling.dense_labels import NORMALIZERS, dense_labels
from detkit.modeling.loss_normalizer import GlobalLossNormalizer

from .loss import average_m, sample_weights
from .network import SampleWeightingNetwork
from .weighting import SWNWeighting, log_weights

__all__ = ["SWNRetinaNet"]


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
        weighting: a :class:`SWNWeighting` (lambda, loss form, averaging rule, samples, input
            gradients, which losses are weighted, on/off).
        normalizer: the loss normaliser (:func:`detkit.modeling.dense_labels.dense_labels`):
            ``"ema"`` (default: Detectron2's EMA of the positive count, the normaliser of the stock
            RetinaNet it is compared with) or ``"batch"`` (the reference mmdetection code: this
            batch's positives, ``max(P_i, 1)`` per image; pair it with a baseline of the same).
        global_loss_normalizer: count the positives of all DDP processes (default; exactly
            Detectron2's per-process EMA in one process), see :mod:`detkit.modeling.loss_normalizer`.
    """

    def __init__(
        self, *, swn: SampleWeightingNetwork = None, weighting: SWNWeighting = None, normalizer: str = "ema", **kwargs
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
        self.weighting = weighting if weighting is not None else SWNWeighting()

    def losses(self, anchors, pred_logits, gt_labels, pred_anchor_deltas, gt_boxes):
        """Arguments as ``RetinaNet.losses``. Returns loss_cls, loss_box_reg and loss_swn_reg."""
        w = self.weighting
        num_images = len(gt_labels)
        logits = cat(pred_logits, dim=1)  # (N, R, K)
        deltas = cat(pred_anchor_deltas, dim=1)  # (N, R, 4)
        gt_labels, valid_mask, pos_mask, targets, normalizer = dense_labels(
            self, gt_labels, self.num_classes, logits.dtype, normalizer=self.normalizer
        )
        cls_loss = sigmoid_focal_loss_jit(
            logits[valid_mask], targets[valid_mask],
            alpha=self.focal_loss_alpha, gamma=self.focal_loss_gamma, reduction="none",
        ).sum(dim=1)  # (V,)

        pos_anchors = Boxes.cat(anchors).tensor.expand(num_images, -1, -1)[pos_mask]  # (P, 4)
        pos_gt_boxes = torch.stack(gt_boxes)[pos_mask]
        pos_deltas = deltas[pos_mask]
        gt_deltas = self.box2box_transform.get_deltas(pos_anchors, pos_gt_boxes)
        reg_loss = smooth_l1_loss(pos_deltas, gt_deltas, beta=self.smooth_l1_beta, reduction="none")  # (P, 4)

        # The SWN's samples: every anchor (reference) or the valid ones; S of them.
        samples = torch.ones_like(valid_mask) if w.samples == "all" else valid_mask  # (N, R)
        valid_in_samples, pos_in_samples = valid_mask[samples], pos_mask[samples]  # (S,)
        with torch.set_grad_enabled(torch.is_grad_enabled() and w.detach_inputs == "losses"):
            pred_boxes = self.box2box_transform.apply_deltas(pos_deltas, pos_anchors)
            pos_iou = matched_pairwise_iou(Boxes(pred_boxes), Boxes(pos_gt_boxes))
            pos_labels = gt_labels[pos_mask]
            pos_prob = logits[pos_mask].gather(1, pos_labels[:, None]).squeeze(1).sigmoid()
        num_samples = int(valid_in_samples.shape[0])
        cls_inputs = cls_loss.detach().new_zeros(num_samples).index_put((valid_in_samples.nonzero()[:, 0],), cls_loss.detach())
        pos_index = (pos_in_samples.nonzero()[:, 0],)
        reg_inputs = reg_loss.new_zeros((num_samples, 4)).index_put(pos_index, reg_loss.detach())
        iou = pos_iou.new_zeros(num_samples).index_put(pos_index, pos_iou)
        prob = pos_prob.new_zeros(num_samples).index_put(pos_index, pos_prob)

        if w.enabled:
            m = self.swn(cls_inputs, reg_inputs, iou, prob, detach_iou_prob=w.detach_inputs == "all")  # (S, 2)
            m_cls = average_m(m[:, 0], pos_in_samples, w.cls_average) if w.weight_cls else m.new_zeros(num_samples)
            m_reg = m[pos_in_samples, 1] if w.weight_reg else m.new_zeros(int(pos_in_samples.sum()))
        else:
            m_cls, m_reg = cls_loss.new_zeros(num_samples), reg_loss.new_zeros(reg_loss.shape[0])
        cls_weights = sample_weights(m_cls, w.form)  # (S,)
        reg_weights = sample_weights(m_reg, w.form)  # (P,)
        log_weights(cls_weights, reg_weights, m_cls, m_reg, pos_in_samples)
        return {
            "loss_cls": (cls_weights[valid_in_samples] * cls_loss).sum() / normalizer,
            "loss_box_reg": (reg_weights[:, None] * reg_loss).sum() / normalizer,
            "loss_swn_reg": w.regulariser(m_cls, m_reg, pos_in_samples),
        }
