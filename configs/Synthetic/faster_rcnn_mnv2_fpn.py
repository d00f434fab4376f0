"""Faster R-CNN, MobileNetV2-FPN, on the synthetic noisy-box set (3 classes, 128x128)."""
from ..common.cpu_schedule import lr_multiplier, optimizer, train
from ..common.data.synthetic import dataloader, test
from ..common.models.faster_rcnn_mnv2_fpn import model

model.roi_heads.num_classes = 3
model.proposal_generator.anchor_generator.sizes = [[8], [16], [32], [64], [128]]
optimizer.lr = 0.02
train.output_dir = "./output/Synthetic/faster_rcnn_mnv2_fpn"
