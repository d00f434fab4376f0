"""CleanAnchors RetinaNet on the tree-crown tiles: the baseline config with the meta-architecture
swapped and the reference code's focal alpha; same data, schedule and seed."""
from clean_anchors import clean_anchors_model

from .retinanet_mnv2_fpn import dataloader, lr_multiplier, model, optimizer, train, test

clean_anchors_model(model)  # top-30 candidates, cleanliness alpha 0.75 / gamma 1, focal alpha 0.5
train.output_dir = "./output/TreeCrowns/clean_anchors_retinanet_mnv2_fpn"
