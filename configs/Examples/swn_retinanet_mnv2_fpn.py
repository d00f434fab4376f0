"""Your own data (retinanet_mnv2_fpn.py, edit the data there) with SWN: the same config with the
model swapped by swn.swn_model (SWNRetinaNet and its weighting network, the reference code's
settings) and the optimizer by swn.use_swn_optimizer (the same SGD for the detector, Adam lr 1e-3 /
weight decay 1e-4 for the SWN); overrides such as model.weighting.lam=0.25 work on the command line."""
from swn import swn_model, use_swn_optimizer

from .retinanet_mnv2_fpn import dataloader, lr_multiplier, model, optimizer, train, test

use_swn_optimizer(optimizer, swn_module=swn_model(model))
train.output_dir = "./output/Examples/swn_retinanet_mnv2_fpn"
