"""SWN Mask R-CNN R50-FPN 1x (paper Table 1: 12 epochs, 16 images per batch, SGD lr 0.02): one SWN
with a third input/output weights each RoI's classification, box and mask losses (reference code);
Adam lr 1e-3 / wd 1e-4 under the same schedule, gradient clipping at max-norm 35.
Paper, COCO test-dev: box 39.0 against 37.5."""
from detectron2.config import LazyCall as L

from swn import SampleWeightingNetwork, SWNFastRCNNOutputLayers, SWNROIHeads, SWNWeighting

from ..common.swn import use_swn_optimizer
from .mask_rcnn_R_50_FPN_1x import dataloader, lr_multiplier, model, optimizer, train

model.roi_heads._target_ = SWNROIHeads
model.roi_heads.box_predictor._target_ = SWNFastRCNNOutputLayers
model.roi_heads.box_predictor.swn = L(SampleWeightingNetwork)(num_tasks=3, init_std=1e-4)
model.roi_heads.box_predictor.weighting = L(SWNWeighting)(lam=0.5, form="exp(-m)", cls_average="pos_neg")
use_swn_optimizer(optimizer, swn_module="roi_heads.box_predictor.swn")
train.clip_grad = dict(enabled=True, max_norm=35.0, norm_type=2.0)
train.output_dir = "./output/COCO-InstanceSegmentation/swn_mask_rcnn_R_50_FPN_1x"
