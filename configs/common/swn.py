"""Turn a baseline config into its SWN version (reference-code defaults): the model part that
carries the sample weighting network, and the optimizer that trains it — Detectron2's SGD for the
detector plus Adam (lr 1e-3, weight decay 1e-4) for the SWN, one object under one LR schedule and
one gradient clipping."""
from detectron2.config import LazyCall as L

from swn import (
    SampleWeightingNetwork,
    SWNFastRCNNOutputLayers,
    SWNRetinaNet,
    SWNROIHeads,
    SWNWeighting,
    build_swn_sgd,
    swn_optimizer_params,
)


def use_swn_optimizer(optimizer, swn_module="swn", swn_lr=1e-3, swn_weight_decay=1e-4):
    optimizer._target_ = build_swn_sgd
    optimizer.params._target_ = swn_optimizer_params
    optimizer.params.swn_module = swn_module
    optimizer.swn_lr = swn_lr
    optimizer.swn_weight_decay = swn_weight_decay
    return optimizer


def swn_retinanet(model, optimizer):
    """RetinaNet → SWNRetinaNet (m_cls averaged over all anchors)."""
    model._target_ = SWNRetinaNet
    model.swn = L(SampleWeightingNetwork)(num_tasks=2, embed_dim=64, shared_head=True, clamp=2.0, init_std=1e-4)
    model.weighting = L(SWNWeighting)(lam=0.5, form="exp(-m)", cls_average="all")
    use_swn_optimizer(optimizer, swn_module="swn")


def swn_rcnn(model, optimizer):
    """Faster / Mask R-CNN → SWN on the Fast R-CNN box predictor (m_cls averaged over positives and
    negatives separately); with a mask head, SWNROIHeads and a 3-task SWN also weight the mask loss."""
    has_mask = model.roi_heads.get("mask_head", None) is not None
    if has_mask:
        model.roi_heads._target_ = SWNROIHeads
    model.roi_heads.box_predictor._target_ = SWNFastRCNNOutputLayers
    model.roi_heads.box_predictor.swn = L(SampleWeightingNetwork)(num_tasks=3 if has_mask else 2, init_std=1e-4)
    model.roi_heads.box_predictor.weighting = L(SWNWeighting)(lam=0.5, form="exp(-m)", cls_average="pos_neg")
    use_swn_optimizer(optimizer, swn_module="roi_heads.box_predictor.swn")
