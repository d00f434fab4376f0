"""Detectron2 model-zoo Faster R-CNN R50-FPN 1x (box AP 37.9): upstream's LazyConfig Mask R-CNN
R50-FPN 1x with the mask branch removed (upstream ships this baseline only as yaml)."""
from ..common.model_zoo import model_zoo_parts

dataloader, model, optimizer, lr_multiplier, train = model_zoo_parts(
    "COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_1x.py"
)
model.roi_heads.update(mask_in_features=None, mask_pooler=None, mask_head=None)
dataloader.train.mapper.use_instance_mask = False
train.output_dir = "./output/COCO-Detection/faster_rcnn_R_50_FPN_1x"
