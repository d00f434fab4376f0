"""Detectron2 model-zoo RetinaNet R50-FPN 1x (box AP 37.4), taken unchanged from the installed
Detectron2 so that it stays identical to upstream. Needs COCO under $DETECTRON2_DATASETS/coco and
internet for the ImageNet R-50 weights (detectron2://ImageNetPretrained/MSRA/R-50.pkl)."""
from detectron2.model_zoo import get_config

_base = get_config("COCO-Detection/retinanet_R_50_FPN_1x.py")
dataloader, model, optimizer, lr_multiplier, train = (
    _base.dataloader,
    _base.model,
    _base.optimizer,
    _base.lr_multiplier,
    _base.train,
)
train.output_dir = "./output/COCO-Detection/retinanet_R_50_FPN_1x"
