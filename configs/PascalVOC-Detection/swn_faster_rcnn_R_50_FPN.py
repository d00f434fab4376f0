"""SWN Faster R-CNN R50-FPN on VOC 07+12 (SWN paper Table 2: 52.5 against 51.0)."""
from detectron2.config import LazyCall as L

from swn import SampleWeightingNetwork, SWNFastRCNNOutputLayers, SWNWeighting

from ..common.swn import use_swn_optimizer
from .faster_rcnn_R_50_FPN import dataloader, lr_multiplier, model, optimizer, train

model.roi_heads.box_predictor._target_ = SWNFastRCNNOutputLayers
model.roi_heads.box_predictor.swn = L(SampleWeightingNetwork)(num_tasks=2, init_std=1e-4)
model.roi_heads.box_predictor.weighting = L(SWNWeighting)(lam=0.5, form="exp(-m)", cls_average="pos_neg")
use_swn_optimizer(optimizer, swn_module="roi_heads.box_predictor.swn")
train.clip_grad = dict(enabled=True, max_norm=35.0, norm_type=2.0)
train.output_dir = "./output/PascalVOC-Detection/swn_faster_rcnn_R_50_FPN"
