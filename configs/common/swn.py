"""Turn a config's SGD into SWN's optimizer: Detectron2's SGD for the detector plus Adam (lr 1e-3,
weight decay 1e-4) for the sample weighting network, one object under one LR schedule (and one
gradient clipping). Usage in a config: ``use_swn_optimizer(optimizer, swn_module="swn")``."""
from swn import build_swn_sgd, swn_optimizer_params


def use_swn_optimizer(optimizer, swn_module="swn", swn_lr=1e-3, swn_weight_decay=1e-4):
    optimizer._target_ = build_swn_sgd
    optimizer.params._target_ = swn_optimizer_params
    optimizer.params.swn_module = swn_module
    optimizer.swn_lr = swn_lr
    optimizer.swn_weight_decay = swn_weight_decay
    return optimizer
