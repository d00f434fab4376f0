"""Detectron2 model-zoo RetinaNet R50-FPN 1x (box AP 37.4), taken from the installed Detectron2,
with two changes that make it the SWN comparison baseline (swn_retinanet_R_50_FPN_1x.py):
smooth-L1 beta 0.11 (the SWN reference code's RetinaNet; upstream's LazyConfig has 0.0, plain L1)
and the positive count of all processes in the loss normaliser (identical in one process).
Needs COCO under $DETECTRON2_DATASETS/coco and internet for the ImageNet R-50 weights
(detectron2://ImageNetPretrained/MSRA/R-50.pkl)."""
from detkit.modeling import GlobalNormalizerRetinaNet

from ..common.model_zoo import model_zoo_parts

dataloader, model, optimizer, lr_multiplier, train = model_zoo_parts(
    "COCO-Detection/retinanet_R_50_FPN_1x.py"
)
model._target_ = GlobalNormalizerRetinaNet
model.global_loss_normalizer = True  # False: Detectron2's per-process count
model.smooth_l1_beta = 0.11
train.output_dir = "./output/COCO-Detection/retinanet_R_50_FPN_1x"
