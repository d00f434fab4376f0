"""The Fast R-CNN box predictor of Faster R-CNN trained with SWN sample weights (the RPN is untouched)."""
from typing import NamedTuple, Optional

import torch
from detectron2.layers import cat, cross_entropy, nonzero_tuple
from detectron2.modeling.roi_heads import FastRCNNOutputLayers
from detectron2.modeling.roi_heads.fast_rcnn import _log_classification_stats
from detectron2.structures import Boxes
from detectron2.structures.boxes import matched_pairwise_iou
from fvcore.nn import smooth_l1_loss
from torch import Tensor

from .loss import weighted_sum
from .network import SampleWeightingNetwork
from .retinanet import SWNInputs
from .weighting import SampleWeights, SWNConfig, log_weights

__all__ = ["SWNFastRCNNOutputLayers", "RoISWNSamples"]


class RoISWNSamples(NamedTuple):
    """Everything :class:`SWNFastRCNNOutputLayers` trains one batch with, per sampled RoI, before the
    reduction (R RoIs, F of them foreground)."""

    gt_classes: Tensor  # (R,) in 0..K (K: background)
    fg: Tensor  # (R,) bool, foreground RoIs
    cls_loss: Tensor  # (R,) softmax cross-entropy (with gradient)
    reg_loss: Tensor  # (F, 4) per-coordinate smooth-L1 of the ground-truth class's deltas (with gradient)
    mask_loss: Optional[Tensor]  # (F,) Mask R-CNN's per-RoI mask loss, as given
    inputs: SWNInputs  # the SWN's inputs (R rows; prob and iou 0 for background)
    m: Optional[Tensor]  # (R, num_tasks) the SWN's output; None when the SWN is off
    weights: SampleWeights


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

    def __init__(self, *args, swn: SampleWeightingNetwork = None, weighting: SWNConfig = None, **kwargs):
        super().__init__(*args, **kwargs)
        if self.use_sigmoid_ce or self.box_reg_loss_type != "smooth_l1":
            raise ValueError("SWNFastRCNNOutputLayers supports softmax cross-entropy with smooth-L1 box loss only")
        self.swn = swn if swn is not None else SampleWeightingNetwork()
        self.weighting = weighting if weighting is not None else SWNConfig(cls_average="pos_neg")

    def training_samples(self, predictions, proposals, mask_loss: Optional[Tensor] = None) -> RoISWNSamples:
        """The per-RoI losses, SWN inputs, output and weights :meth:`losses` reduces; no side effect.

        Args:
            predictions, proposals: as ``FastRCNNOutputLayers.losses`` (sampled, labelled RoIs).
            mask_loss: (F,) per-foreground-RoI mask losses of Mask R-CNN (in the order of the
                foreground RoIs), the SWN's fifth input and the third task's loss.
        """
        scores, proposal_deltas = predictions
        gt_classes = cat([p.gt_classes for p in proposals], dim=0) if len(proposals) else torch.empty(0)
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

        w = self.weighting
        reg_inputs = reg.new_zeros((cls.shape[0], 4)).index_put((fg_inds,), reg.detach())
        with torch.set_grad_enabled(torch.is_grad_enabled() and w.detach_inputs == "losses"):
            decoded = self.box2box_transform.apply_deltas(fg_deltas, proposal_boxes[fg_inds])
            fg_iou = matched_pairwise_iou(Boxes(decoded), Boxes(gt_boxes[fg_inds])).to(cls.dtype)
            iou = cls.new_zeros(cls.shape).index_put((fg_inds,), fg_iou)
            fg_prob = scores[fg_inds].softmax(dim=1).gather(1, gt_classes[fg_inds, None]).squeeze(1)
            prob = cls.new_zeros(cls.shape).index_put((fg_inds,), fg_prob.to(cls.dtype))  # 0 for background
        mask_inputs = None
        if mask_loss is not None:
            mask_inputs = mask_loss.new_zeros(cls.shape)
            mask_inputs[fg] = mask_loss.detach()
        image_index = torch.repeat_interleave(
            torch.arange(len(proposals), device=cls.device),
            torch.as_tensor([len(p) for p in proposals], device=cls.device, dtype=torch.long),
        )
        inputs = SWNInputs(cls, reg_inputs, iou, prob, fg, image_index, mask_inputs)
        m = None
        if w.enabled:
            m = self.swn(cls, reg_inputs, iou, prob, loss_mask=mask_inputs, detach_iou_prob=w.detach_inputs == "all")
        weights = w.weights(m, fg, cls, reg, mask_loss)
        return RoISWNSamples(gt_classes, fg, cls, reg, mask_loss, inputs, m, weights)

    def losses(self, predictions, proposals, mask_loss: Optional[Tensor] = None):
        """As ``FastRCNNOutputLayers.losses`` (stock normalisers: mean over RoIs), SWN-weighted, plus
        ``loss_swn_reg``; with ``mask_loss`` (see :meth:`training_samples`) also the weighted
        ``loss_mask`` (mean over foreground RoIs, as stock)."""
        s = self.training_samples(predictions, proposals, mask_loss)
        _log_classification_stats(predictions[0], s.gt_classes)
        num_rois = max(s.cls_loss.shape[0], 1)
        losses = {
            "loss_cls": weighted_sum(s.cls_loss, s.weights.cls) / num_rois,
            "loss_box_reg": weighted_sum(s.reg_loss, s.weights.reg) / num_rois,
        }
        losses = {k: v * self.loss_weight.get(k, 1.0) for k, v in losses.items()}
        if mask_loss is not None:
            losses["loss_mask"] = weighted_sum(mask_loss, s.weights.mask) / max(mask_loss.shape[0], 1)
        log_weights(s.weights, s.fg)
        losses["loss_swn_reg"] = self.weighting.regulariser(s.weights, s.fg)
        return losses
