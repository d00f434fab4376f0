"""Detectron2 model-zoo Faster R-CNN R50-FPN 1x (box AP 37.9): upstream's LazyConfig Mask R-CNN
R50-FPN 1x with the mask branch removed (upstream ships this baseline only as yaml)."""
from detectron2.model_zoo import get_config

_base = get_config("COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_1x.py")
dataloader, model, optimizer, lr_multiplier, train = (
    _base.dataloader,
    _base.model,
    _base.optimizer,
    _base.lr_multiplier,
    _base.train,
)
model.roi_heads.update(mask_in_features=None, mask_pooler=None, mask_head=None)
dataloader.train.mapper.use_instance_mask = False
train.output_dir = "./output/COCO-Detection/faster_rcnn_R_50_FPN_1x"
