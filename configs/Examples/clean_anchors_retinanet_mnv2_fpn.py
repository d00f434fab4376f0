"""Your own data (retinanet_mnv2_fpn.py, edit the data there) with CleanAnchors: the same config
with the model swapped by clean_anchors.clean_anchors_model (the authors' settings: top-30
candidates, cleanliness alpha 0.75 / gamma 1, focal alpha 0.5); overrides such as
model.cleanliness.gamma=2.0 work on the command line."""
from clean_anchors import clean_anchors_model

from .retinanet_mnv2_fpn import dataloader, lr_multiplier, model, optimizer, train, test

clean_anchors_model(model)
train.output_dir = "./output/Examples/clean_anchors_retinanet_mnv2_fpn"
