"""SWN RetinaNet R50-FPN on VOC 07+12 (SWN paper Table 2: 53.4 against 52.0)."""
from ..common.swn import swn_retinanet
from .retinanet_R_50_FPN import dataloader, lr_multiplier, model, optimizer, train

swn_retinanet(model, optimizer)
train.clip_grad = dict(enabled=True, max_norm=35.0, norm_type=2.0)
train.output_dir = "./output/PascalVOC-Detection/swn_retinanet_R_50_FPN"
