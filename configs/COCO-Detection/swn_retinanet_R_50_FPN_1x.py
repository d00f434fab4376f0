"""SWN RetinaNet R50-FPN 1x (paper Table 1: 12 epochs, 16 images per batch, SGD lr 0.01 — Detectron2's
1x RetinaNet schedule), SWN with Adam lr 1e-3 / wd 1e-4 under the same schedule, gradient clipping
at max-norm 35 over both (reference code). Paper, COCO test-dev: 37.2 against 35.9."""
from ..common.swn import swn_retinanet
from .retinanet_R_50_FPN_1x import dataloader, lr_multiplier, model, optimizer, train

swn_retinanet(model, optimizer)
train.clip_grad = dict(enabled=True, max_norm=35.0, norm_type=2.0)
train.output_dir = "./output/COCO-Detection/swn_retinanet_R_50_FPN_1x"
