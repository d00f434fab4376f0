"""Faster R-CNN with a CleanAnchors RPN on the synthetic noisy-box set."""
from clean_anchors import clean_anchors_model

from .faster_rcnn_mnv2_fpn import dataloader, lr_multiplier, model, optimizer, train, test

clean_anchors_model(model)  # RPN: top-10 candidates, cleanliness alpha 0.75 / gamma 1, per anchor
train.output_dir = "./output/Synthetic/clean_anchors_faster_rcnn_mnv2_fpn"
