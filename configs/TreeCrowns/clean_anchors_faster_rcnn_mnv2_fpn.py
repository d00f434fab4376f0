"""Faster R-CNN whose RPN is trained with CleanAnchors (paper Table 6), on the tree-crown tiles."""
from detectron2.config import LazyCall as L

from clean_anchors import CleanAnchorsRPN, CleanlinessConfig

from .faster_rcnn_mnv2_fpn import dataloader, lr_multiplier, model, optimizer, train, test

model.proposal_generator._target_ = CleanAnchorsRPN
model.proposal_generator.topn = 10
model.proposal_generator.cleanliness = L(CleanlinessConfig)(alpha=0.75, gamma=1.0, multiplicity="anchors")
train.output_dir = "./output/TreeCrowns/clean_anchors_faster_rcnn_mnv2_fpn"
