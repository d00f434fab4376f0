"""RetinaNet whose per-anchor losses are weighted by a sample weighting network (SWN, CVPR 2020)."""
import torch
from detectron2.layers import cat
from detectron2.modeling.meta_arch import RetinaNet
from detectron2.structures import Boxes
from detectron2.structures.boxes import matched_pairwise_iou
from fvcore.nn import sigmoid_focal_loss_jit, smooth_l1_loss

from detkit.modeling.dense_labels import dense_labels

from .loss import average_m, sample_weights
from .network import SampleWeightingNetwork
from .weighting import SWNWeighting, log_weights

__all__ = ["SWNRetinaNet"]


class SWNRetinaNet(RetinaNet):
    """Detectron2's RetinaNet trained with SWN sample weights; inference is stock RetinaNet's.

    Per valid anchor, the SWN sees the focal loss summed over classes, the 4-d smooth-L1 of the box
    deltas, the IoU of the decoded predicted box with its ground truth and the sigmoid probability
    of the ground-truth class (the last three 0 for negatives). Its output ``m_cls`` is averaged
    over all anchors of the batch (reference code: without it training "could fail occasionally"),
    ``m_reg`` stays per positive; losses are multiplied by ``exp(-m)`` (or ``exp(-2m)``) and
    normalised as stock RetinaNet's; the regulariser ``lam * (mean m_cls + mean_pos m_reg)`` is its
    own loss entry ``loss_swn_reg``.

    Args (besides RetinaNet's):
        swn: the :class:`SampleWeightingNetwork` (default: the reference configuration).
        weighting: a :class:`SWNWeighting` (lambda, loss form, averaging rule, which losses are
            weighted, on/off).
    """

    def __init__(self, *, swn: SampleWeightingNetwork = None, weighting: SWNWeighting = None, **kwargs):
        super().__init__(**kwargs)
        if self.box_reg_loss_type != "smooth_l1":
            raise ValueError(
                f"SWNRetinaNet needs box_reg_loss_type='smooth_l1' (the SWN reads 4-d box losses), "
                f"got {self.box_reg_loss_type!r}"
            )
        self.swn = swn if swn is not None else SampleWeightingNetwork()
        self.weighting = weighting if weighting is not None else SWNWeighting()

    def losses(self, anchors, pred_logits, gt_labels, pred_anchor_deltas, gt_boxes):
        """Arguments as ``RetinaNet.losses``. Returns loss_cls, loss_box_reg and loss_swn_reg."""
        num_images = len(gt_labels)
        logits = cat(pred_logits, dim=1)  # (N, R, K)
        deltas = cat(pred_anchor_deltas, dim=1)  # (N, R, 4)
        gt_labels, valid_mask, pos_mask, targets, normalizer = dense_labels(
            self, gt_labels, self.num_classes, logits.dtype
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

        pos_in_valid = pos_mask[valid_mask]  # (V,)
        with torch.no_grad():
            pred_boxes = self.box2box_transform.apply_deltas(pos_deltas, pos_anchors)
            iou = cls_loss.new_zeros(cls_loss.shape)
            iou[pos_in_valid] = matched_pairwise_iou(Boxes(pred_boxes), Boxes(pos_gt_boxes)).to(iou.dtype)
            prob = cls_loss.new_zeros(cls_loss.shape)
            pos_labels = gt_labels[pos_mask]
            prob[pos_in_valid] = logits[pos_mask].gather(1, pos_labels[:, None]).squeeze(1).sigmoid().to(prob.dtype)
            reg_inputs = reg_loss.new_zeros((cls_loss.shape[0], 4))
            reg_inputs[pos_in_valid] = reg_loss.detach()

        w = self.weighting
        if w.enabled:
            m = self.swn(cls_loss, reg_inputs, iou, prob)  # (V, 2); inputs detached inside
            m_cls = average_m(m[:, 0], pos_in_valid, w.cls_average) if w.weight_cls else m.new_zeros(m.shape[0])
            m_reg = m[pos_in_valid, 1] if w.weight_reg else m.new_zeros(int(pos_in_valid.sum()))
        else:
            m_cls, m_reg = cls_loss.new_zeros(cls_loss.shape), reg_loss.new_zeros(reg_loss.shape[0])
        cls_weights = sample_weights(m_cls, w.form)
        reg_weights = sample_weights(m_reg, w.form)
        log_weights(cls_weights, reg_weights, m_cls, m_reg, pos_in_valid)
        return {
            "loss_cls": (cls_weights * cls_loss).sum() / normalizer,
            "loss_box_reg": (reg_weights[:, None] * reg_loss).sum() / normalizer,
            "loss_swn_reg": w.regulariser(m_cls, m_reg, pos_in_valid),
        }
