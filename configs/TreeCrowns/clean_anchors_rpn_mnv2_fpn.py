"""RPN-only MobileNetV2-FPN trained with CleanAnchors (top-10 candidates, soft objectness labels and
re-weighting; NoisyAnchors Table 5) on the tree-crown tiles, evaluated by proposal recall."""
from clean_anchors import clean_anchors_model

from .rpn_mnv2_fpn import dataloader, lr_multiplier, model, optimizer, train

clean_anchors_model(model)  # RPN: top-10 candidates, cleanliness alpha 0.75 / gamma 1, per anchor
train.output_dir = "./output/TreeCrowns/clean_anchors_rpn_mnv2_fpn"
