"""SWN RetinaNet on the synthetic noisy-box set."""
from detectron2.config import LazyCall as L

from swn import SampleWeightingNetwork, SWNRetinaNet, SWNWeighting

from ..common.swn import use_swn_optimizer
from .retinanet_mnv2_fpn import dataloader, lr_multiplier, model, optimizer, train

model._target_ = SWNRetinaNet
model.swn = L(SampleWeightingNetwork)(num_tasks=2, embed_dim=64, shared_head=True, clamp=2.0, init_std=1e-4)
model.weighting = L(SWNWeighting)(lam=0.5, form="exp(-m)", cls_average="all")
use_swn_optimizer(optimizer, swn_module="swn")
train.output_dir = "./output/Synthetic/swn_retinanet_mnv2_fpn"
