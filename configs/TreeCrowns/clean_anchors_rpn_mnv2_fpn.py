"""RPN-only MobileNetV2-FPN trained with CleanAnchors (top-10 candidates, soft objectness labels and
re-weighting; NoisyAnchors Table 5) on the tree-crown tiles, evaluated by proposal recall."""
from detectron2.config import LazyCall as L

from clean_anchors import CleanAnchorsRPN, CleanlinessConfig

from .rpn_mnv2_fpn import dataloader, lr_multiplier, model, optimizer, train

model.proposal_generator._target_ = CleanAnchorsRPN
model.proposal_generator.topn = 10
model.proposal_generator.cleanliness = L(CleanlinessConfig)(alpha=0.75, gamma=1.0, multiplicity="anchors")
train.output_dir = "./output/TreeCrowns/clean_anchors_rpn_mnv2_fpn"
