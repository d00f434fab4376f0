"""Detectron2 model-zoo Mask R-CNN R50-FPN 1x (box AP 38.6, mask AP 35.2), taken unchanged from the
installed Detectron2. Needs COCO under $DETECTRON2_DATASETS/coco."""
from ..common.model_zoo import model_zoo_parts, swn_reference_box_head

dataloader, model, optimizer, lr_multiplier, train = model_zoo_parts(
    "COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_1x.py"
)
swn_reference_box_head(model)  # box-head smooth-L1 beta 1.0: paired with the SWN configs
train.output_dir = "./output/COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_1x"
