"""Detectron2 model-zoo RetinaNet R50-FPN 1x (box AP 37.4), taken unchanged from the installed
Detectron2 so that it stays identical to upstream. Needs COCO under $DETECTRON2_DATASETS/coco and
internet for the ImageNet R-50 weights (detectron2://ImageNetPretrained/MSRA/R-50.pkl)."""
from ..common.model_zoo import model_zoo_parts

dataloader, model, optimizer, lr_multiplier, train = model_zoo_parts(
    "COCO-Detection/retinanet_R_50_FPN_1x.py"
)
train.output_dir = "./output/COCO-Detection/retinanet_R_50_FPN_1x"
