"""CleanAnchors RetinaNet on the tree-crown tiles: the baseline config with the meta-architecture
swapped and the reference code's focal alpha; same data, schedule and seed."""
from detectron2.config import LazyCall as L

from clean_anchors import CleanAnchorsRetinaNet, CleanlinessConfig

from .retinanet_mnv2_fpn import dataloader, lr_multiplier, model, optimizer, train, test

model._target_ = CleanAnchorsRetinaNet
model.topn = 30
model.cleanliness = L(CleanlinessConfig)(alpha=0.75, gamma=1.0)
model.focal_loss_alpha = 0.5
train.output_dir = "./output/TreeCrowns/clean_anchors_retinanet_mnv2_fpn"
