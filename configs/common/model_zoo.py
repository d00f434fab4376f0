"""Detectron2's own model-zoo LazyConfigs, taken from the installed Detectron2 so that the baselines
stay identical to upstream."""
from detectron2.model_zoo import get_config


def model_zoo_parts(name: str):
    """``(dataloader, model, optimizer, lr_multiplier, train)`` of a model-zoo LazyConfig, e.g.
    ``"COCO-Detection/retinanet_R_50_FPN_1x.py"``."""
    cfg = get_config(name)
    return cfg.dataloader, cfg.model, cfg.optimizer, cfg.lr_multiplier, cfg.train
