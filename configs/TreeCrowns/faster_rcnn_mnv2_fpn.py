"""Baseline: Detectron2 Faster R-CNN, MobileNetV2-FPN, NEON tree-crown tiles, 500 iterations on a CPU."""
from ..common.cpu_schedule import lr_multiplier, optimizer, train
from ..common.data.treecrowns import dataloader, test
from ..common.models.faster_rcnn_mnv2_fpn import model

optimizer.lr = 0.02
train.output_dir = "./output/TreeCrowns/faster_rcnn_mnv2_fpn"
