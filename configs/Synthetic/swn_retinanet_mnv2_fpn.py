"""SWN RetinaNet on the synthetic noisy-box set."""
from ..common.swn import swn_retinanet
from .retinanet_mnv2_fpn import dataloader, lr_multiplier, model, optimizer, train, test

swn_retinanet(model, optimizer)
train.output_dir = "./output/Synthetic/swn_retinanet_mnv2_fpn"
