"""SWN RetinaNet on the tree-crown tiles: the baseline config with the meta-architecture swapped and
the SWN's Adam added to the optimizer; same data, schedule and seed."""
from ..common.swn import swn_retinanet
from .retinanet_mnv2_fpn import dataloader, lr_multiplier, model, optimizer, train, test

swn_retinanet(model, optimizer)
train.output_dir = "./output/TreeCrowns/swn_retinanet_mnv2_fpn"
