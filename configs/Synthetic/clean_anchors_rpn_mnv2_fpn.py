"""RPN-only MobileNetV2-FPN trained with CleanAnchors on the synthetic noisy-box set, evaluated by
proposal recall."""
from clean_anchors import clean_anchors_model

from .rpn_mnv2_fpn import dataloader, lr_multiplier, model, optimizer, train

clean_anchors_model(model)  # RPN: top-10 candidates, cleanliness alpha 0.75 / gamma 1, per anchor
train.output_dir = "./output/Synthetic/clean_anchors_rpn_mnv2_fpn"
