"""SWN Faster R-CNN (SWN on the Fast R-CNN box head) on the synthetic noisy-box set."""
from detectron2.config import LazyCall as L

from swn import SampleWeightingNetwork, SWNFastRCNNOutputLayers, SWNWeighting

from ..common.swn import use_swn_optimizer
from .faster_rcnn_mnv2_fpn import dataloader, lr_multiplier, model, optimizer, train

model.roi_heads.box_predictor._target_ = SWNFastRCNNOutputLayers
model.roi_heads.box_predictor.swn = L(SampleWeightingNetwork)(num_tasks=2, init_std=1e-4)
model.roi_heads.box_predictor.weighting = L(SWNWeighting)(lam=0.5, form="exp(-m)", cls_average="pos_neg")
use_swn_optimizer(optimizer, swn_module="roi_heads.box_predictor.swn")
train.output_dir = "./output/Synthetic/swn_faster_rcnn_mnv2_fpn"
