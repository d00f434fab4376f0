"""SWN Faster R-CNN (SWN on the Fast R-CNN box head) on the tree-crown tiles; same schedule as the
baseline faster_rcnn_mnv2_fpn.py."""
from ..common.swn import swn_rcnn
from .faster_rcnn_mnv2_fpn import dataloader, lr_multiplier, model, optimizer, train, test

swn_rcnn(model, optimizer)
train.output_dir = "./output/TreeCrowns/swn_faster_rcnn_mnv2_fpn"
