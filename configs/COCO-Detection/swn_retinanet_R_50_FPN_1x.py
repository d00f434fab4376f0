"""SWN RetinaNet R50-FPN 1x (paper Table 1: 12 epochs, 16 images per batch, SGD lr 0.01 — Detectron2's
1x RetinaNet schedule), SWN with Adam lr 1e-3 / wd 1e-4 under the same schedule, gradient clipping
at max-norm 35 over both (reference code). Paper, COCO test-dev: 37.2 against 35.9."""
from detectron2.config import LazyCall as L

from swn import SampleWeightingNetwork, SWNRetinaNet, SWNWeighting

from ..common.swn import use_swn_optimizer
from .retinanet_R_50_FPN_1x import dataloader, lr_multiplier, model, optimizer, train

model._target_ = SWNRetinaNet
model.swn = L(SampleWeightingNetwork)(num_tasks=2, embed_dim=64, shared_head=True, clamp=2.0, init_std=1e-4)
model.weighting = L(SWNWeighting)(lam=0.5, form="exp(-m)", cls_average="all")
use_swn_optimizer(optimizer, swn_module="swn")
train.clip_grad = dict(enabled=True, max_norm=35.0, norm_type=2.0)
train.output_dir = "./output/COCO-Detection/swn_retinanet_R_50_FPN_1x"
