"""SWN RetinaNet R50-FPN on VOC 07+12 (SWN paper Table 2: 53.4 against 52.0)."""
from detectron2.config import LazyCall as L

from swn import SampleWeightingNetwork, SWNRetinaNet, SWNWeighting

from ..common.swn import use_swn_optimizer
from .retinanet_R_50_FPN import dataloader, lr_multiplier, model, optimizer, train

model._target_ = SWNRetinaNet
model.swn = L(SampleWeightingNetwork)(num_tasks=2, embed_dim=64, shared_head=True, clamp=2.0, init_std=1e-4)
model.weighting = L(SWNWeighting)(lam=0.5, form="exp(-m)", cls_average="all")
use_swn_optimizer(optimizer, swn_module="swn")
train.clip_grad = dict(enabled=True, max_norm=35.0, norm_type=2.0)
train.output_dir = "./output/PascalVOC-Detection/swn_retinanet_R_50_FPN"
