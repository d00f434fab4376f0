"""Detectron2 model-zoo Faster R-CNN R50-FPN 1x (box AP 37.9): upstream's LazyConfig Mask R-CNN
R50-FPN 1x with the mask branch removed (upstream ships this baseline only as yaml)."""
from ..common.model_zoo import faster_rcnn_parts, swn_reference_box_head

dataloader, model, optimizer, lr_multiplier, train = faster_rcnn_parts()
swn_reference_box_head(model)  # box-head smooth-L1 beta 1.0: paired with the SWN configs
train.output_dir = "./output/COCO-Detection/faster_rcnn_R_50_FPN_1x"
