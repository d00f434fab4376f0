"""The Fast R-CNN box predictor of Faster R-CNN trained with SWN sample weights (the RPN is untouched)."""
import torch
from detectron2.layers import cat, cross_entropy, nonzero_tuple
from detectron2.modeling.roi_heads import FastRCNNOutputLayers
from detectron2.modeling.roi_heads.fast_rcnn import _log_classification_stats
from detectron2.structures import Boxes
from detectron2.structures.boxes import matched_pairwise_iou
from fvcore.nn import smooth_l1_loss

from .loss import average_m, sample_weights
from .network import SampleWeightingNetwork
from .weighting import SWNWeighting, log_weights

__all__ = ["SWNFastRCNNOutputLayers"]


class SWNFastRCNNOutputLayers(FastRCNNOutputLayers):
    """Detectron2's ``FastRCNNOutputLayers`` whose per-RoI losses are weighted by an SWN.

    Per sampled RoI the SWN sees the softmax cross-entropy, the 4-d smooth-L1 of the ground-truth
    class's deltas, the IoU of that class's decoded box with its ground truth and the softmax
    probability of the ground-truth class; for background RoIs the last three are 0 (reference
    code: not the probability of the background class). ``m_cls`` is averaged
    separately over positives and negatives (reference code); the normalisers are the stock ones
    (cross-entropy mean over RoIs, box loss / #RoIs). Inference is stock.

    Args (besides FastRCNNOutputLayers'): ``swn``, ``weighting`` as in :class:`swn.SWNRetinaNet`;
    ``weighting.cls_average`` defaults to "pos_neg" here.
    """

    def __init__(self, *args, swn: SampleWeightingNetwork = None, weighting: SWNWeighting = None, **kwargs):
        super().__init__(*args, **kwargs)
        if self.use_sigmoid_ce or self.box_reg_loss_type != "smooth_l1":
            raise ValueError("SWNFastRCNNOutputLayers supports softmax cross-entropy with smooth-L1 box loss only")
        self.swn = swn if swn is not None else SampleWeightingNetwork()
        self.weighting = weighting if weighting is not None else SWNWeighting(cls_average="pos_neg")

    def per_roi_losses(self, predictions, proposals):
        """Unreduced losses and SWN inputs of R sampled RoIs.

        Returns dict: ``cls`` (R,) cross-entropy; ``reg`` (F, 4) smooth-L1 of the F foreground RoIs;
        ``fg`` (R,) bool; ``reg_inputs`` (R, 4), ``iou`` (R,), ``prob`` (R,) SWN inputs, 0 for
        background RoIs (``iou`` and ``prob`` detached unless ``weighting.detach_inputs="losses"``).
        """
        scores, proposal_deltas = predictions
        gt_classes = cat([p.gt_classes for p in proposals], dim=0) if len(proposals) else torch.empty(0)
        _log_classification_stats(scores, gt_classes)
        if len(proposals):
            proposal_boxes = cat([p.proposal_boxes.tensor for p in proposals], dim=0)
            gt_boxes = cat([(p.gt_boxes if p.has("gt_boxes") else p.proposal_boxes).tensor for p in proposals], dim=0)
        else:
            proposal_boxes = gt_boxes = torch.empty((0, 4), device=proposal_deltas.device)

        cls = cross_entropy(scores, gt_classes, reduction="none")  # (R,)
        fg = (gt_classes >= 0) & (gt_classes < self.num_classes)
        fg_inds = nonzero_tuple(fg)[0]
        if proposal_deltas.shape[1] == 4:  # class-agnostic regression
            fg_deltas = proposal_deltas[fg_inds]
        else:
            fg_deltas = proposal_deltas.view(-1, self.num_classes, 4)[fg_inds, gt_classes[fg_inds]]
        gt_deltas = self.box2box_transform.get_deltas(proposal_boxes[fg_inds], gt_boxes[fg_inds])
        reg = smooth_l1_loss(fg_deltas, gt_deltas, beta=self.smooth_l1_beta, reduction="none")  # (F, 4)

        reg_inputs = reg.new_zeros((cls.shape[0], 4)).index_put((fg_inds,), reg.detach())
        with torch.set_grad_enabled(torch.is_grad_enabled() and self.weighting.detach_inputs == "losses"):
            decoded = self.box2box_transform.apply_deltas(fg_deltas, proposal_boxes[fg_inds])
            fg_iou = matched_pairwise_iou(Boxes(decoded), Boxes(gt_boxes[fg_inds])).to(cls.dtype)
            iou = cls.new_zeros(cls.shape).index_put((fg_inds,), fg_iou)
            fg_prob = scores[fg_inds].softmax(dim=1).gather(1, gt_classes[fg_inds, None]).squeeze(1)
            prob = cls.new_zeros(cls.shape).index_put((fg_inds,), fg_prob.to(cls.dtype))  # 0 for background
        return dict(cls=cls, reg=reg, fg=fg, reg_inputs=reg_inputs, iou=iou, prob=prob)

    def weighted_losses(self, per_roi, m=None, mask_loss=None):
        """Stock-normalised losses weighted by the SWN output ``m`` (R, num_tasks), or unweighted
        when ``m`` is None (SWN off). ``mask_loss`` (F,): per-foreground-RoI mask losses of Mask
        R-CNN, weighted by ``m[fg, 2]`` into ``loss_mask`` (mean over RoIs, as stock)."""
        w, fg = self.weighting, per_roi["fg"]
        cls, reg = per_roi["cls"], per_roi["reg"]
        weighted = m is not None and w.enabled
        if weighted:
            m_cls = average_m(m[:, 0], fg, w.cls_average) if w.weight_cls else m.new_zeros(m.shape[0])
            m_reg = m[fg, 1] if w.weight_reg else m.new_zeros(reg.shape[0])
        else:
            m_cls, m_reg = cls.new_zeros(cls.shape), reg.new_zeros(reg.shape[0])
        cls_weights, reg_weights = sample_weights(m_cls, w.form), sample_weights(m_reg, w.form)
        num_rois = max(cls.shape[0], 1)
        losses = {
            "loss_cls": (cls_weights * cls).sum() / num_rois,
            "loss_box_reg": (reg_weights[:, None] * reg).sum() / num_rois,
        }
        losses = {k: v * self.loss_weight.get(k, 1.0) for k, v in losses.items()}
        m_mask = mask_weights = None
        if mask_loss is not None:
            m_mask = m[fg, 2] if weighted else mask_loss.new_zeros(mask_loss.shape)
            mask_weights = sample_weights(m_mask, w.form)
            losses["loss_mask"] = (mask_weights * mask_loss).sum() / max(mask_loss.shape[0], 1)
        log_weights(cls_weights, reg_weights, m_cls, m_reg, fg, mask_weights=mask_weights, m_mask=m_mask)
        losses["loss_swn_reg"] = w.regulariser(m_cls, m_reg, fg, m_mask=m_mask)
        return losses

    def losses(self, predictions, proposals):
        """As ``FastRCNNOutputLayers.losses``, plus ``loss_swn_reg``."""
        per_roi = self.per_roi_losses(predictions, proposals)
        m = None
        if self.weighting.enabled:
            m = self.swn(
                per_roi["cls"], per_roi["reg_inputs"], per_roi["iou"], per_roi["prob"],
                detach_iou_prob=self.weighting.detach_inputs == "all",
            )
        return self.weighted_losses(per_roi, m)
