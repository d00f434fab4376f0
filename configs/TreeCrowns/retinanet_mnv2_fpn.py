"""Baseline: Detectron2 RetinaNet, MobileNetV2-FPN, NEON tree-crown tiles, 500 iterations on a CPU."""
from ..common.cpu_schedule import lr_multiplier, optimizer, train
from ..common.data.treecrowns import dataloader, test
from ..common.models.retinanet_mnv2_fpn import model

train.output_dir = "./output/TreeCrowns/retinanet_mnv2_fpn"
