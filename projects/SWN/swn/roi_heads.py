"""Mask R-CNN's RoI heads with one SWN weighting the box and the mask losses of each RoI."""
from typing import List

import torch
import torch.nn.functional as F
from detectron2.layers import cat
from detectron2.modeling.roi_heads import ROI_HEADS_REGISTRY, StandardROIHeads
from detectron2.modeling.roi_heads.roi_heads import select_foreground_proposals
from detectron2.structures import Instances
from detectron2.utils.events import get_event_storage

from .fast_rcnn import SWNFastRCNNOutputLayers
from .network import SampleWeightingNetwork
from .weighting import SWNConfig

__all__ = ["SWNROIHeads", "per_instance_mask_loss"]


def per_instance_mask_loss(pred_mask_logits: torch.Tensor, instances: List[Instances]) -> torch.Tensor:
    """Detectron2's ``mask_rcnn_loss`` without the final mean: the mean binary cross-entropy of each
    foreground RoI's mask, (F,) for the F RoIs of ``instances`` in order (their mean is the stock
    loss); logs the same ``mask_rcnn/*`` statistics.

    Args:
        pred_mask_logits: (F, C or 1, M, M).
        instances: per image, the foreground proposals with ``gt_masks`` and ``gt_classes``.
    """
    side = pred_mask_logits.size(2)
    present = [x for x in instances if len(x) > 0]
    if not present:
        return pred_mask_logits.new_zeros((0,))
    gt_masks = cat([x.gt_masks.crop_and_resize(x.proposal_boxes.tensor, side) for x in present], dim=0)
    gt_masks = gt_masks.to(pred_mask_logits.device)
    if pred_mask_logits.size(1) == 1:
        logits = pred_mask_logits[:, 0]
    else:
        gt_classes = cat([x.gt_classes for x in present], dim=0).to(torch.int64)
        logits = pred_mask_logits[torch.arange(len(gt_classes), device=gt_classes.device), gt_classes]
    gt_bool = gt_masks if gt_masks.dtype == torch.bool else gt_masks > 0.5
    with torch.no_grad():
        incorrect = (logits > 0.0) != gt_bool
        num_pos = gt_bool.sum().item()
        storage = get_event_storage()
        storage.put_scalar("mask_rcnn/accuracy", 1 - incorrect.sum().item() / max(incorrect.numel(), 1.0))
        storage.put_scalar(
            "mask_rcnn/false_positive", (incorrect & ~gt_bool).sum().item() / max(gt_bool.numel() - num_pos, 1.0)
        )
        storage.put_scalar("mask_rcnn/false_negative", (incorrect & gt_bool).sum().item() / max(num_pos, 1.0))
    loss = F.binary_cross_entropy_with_logits(logits, gt_masks.to(torch.float32), reduction="none")
    return loss.mean(dim=(1, 2))


@ROI_HEADS_REGISTRY.register()
class SWNROIHeads(StandardROIHeads):
    """``StandardROIHeads`` for SWN Mask R-CNN: the box predictor must be a
    :class:`SWNFastRCNNOutputLayers` whose SWN has ``num_tasks=3``; in training the per-RoI mask
    loss (0 for background RoIs) is the SWN's fifth input and its third output ``m_mask`` weights
    each foreground RoI's mask loss (regulariser ``lam * mean_pos(m_mask)``). With ``num_tasks=2``
    or without a mask head it is ``StandardROIHeads`` with the SWN box predictor. Inference is stock.

    Registered for yacs configs too (``MODEL.ROI_HEADS.NAME: SWNROIHeads``): built from a yacs
    config it makes its box predictor an :class:`SWNFastRCNNOutputLayers` with the reference
    defaults (3 tasks with ``MODEL.MASK_ON``, else 2).
    """

    @classmethod
    def _init_box_head(cls, cfg, input_shape):
        ret = super()._init_box_head(cfg, input_shape)
        ret["box_predictor"] = SWNFastRCNNOutputLayers(
            cfg,
            ret["box_head"].output_shape,
            swn=SampleWeightingNetwork(num_tasks=3 if cfg.MODEL.MASK_ON else 2),
            weighting=SWNConfig(cls_average="pos_neg"),
        )
        return ret

    def forward(self, images, features, proposals, targets=None):
        if not self.training or not self.mask_on or self.box_predictor.swn.num_tasks != 3:
            return super().forward(images, features, proposals, targets)
        if not isinstance(self.box_predictor, SWNFastRCNNOutputLayers):
            raise TypeError("SWNROIHeads needs box_predictor=SWNFastRCNNOutputLayers(swn=SampleWeightingNetwork(num_tasks=3))")
        if self.keypoint_on or self.train_on_pred_boxes:
            raise NotImplementedError("SWNROIHeads weights box and mask losses; keypoints / train_on_pred_boxes are not supported")
        assert targets, "'targets' argument is required during training"
        proposals = self.label_and_sample_proposals(proposals, targets)

        box_features = self.box_pooler(
            [features[f] for f in self.box_in_features], [x.proposal_boxes for x in proposals]
        )
        predictions = self.box_predictor(self.box_head(box_features))
        # select_foreground_proposals keeps the per-image order, that of the box predictor's
        # foreground RoIs
        fg_proposals, _ = select_foreground_proposals(proposals, self.num_classes)
        mask_features = self.mask_pooler(
            [features[f] for f in self.mask_in_features], [x.proposal_boxes for x in fg_proposals]
        )
        mask_loss = per_instance_mask_loss(self.mask_head.layers(mask_features), fg_proposals)  # (F,)
        losses = self.box_predictor.losses(predictions, proposals, mask_loss=mask_loss)
        losses["loss_mask"] = losses["loss_mask"] * self.mask_head.loss_weight
        return proposals, losses
