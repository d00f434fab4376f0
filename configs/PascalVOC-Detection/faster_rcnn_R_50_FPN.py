"""Faster R-CNN R50-FPN on VOC 07+12 → VOC07 test with Detectron2's VOC settings (16 images per
batch, lr 0.02, 18k iterations, steps 12k/16k, 100 warmup iterations, multi-scale 480-800).
The baseline of SWN paper Table 2 (VOC07 test, COCO-style AP: 51.0)."""
from ..common.data.voc import dataloader
from ..common.model_zoo import faster_rcnn_parts, swn_reference_box_head, voc_schedule

_, model, optimizer, lr_multiplier, train = faster_rcnn_parts()
swn_reference_box_head(model)  # box-head smooth-L1 beta 1.0: paired with the SWN configs
model.roi_heads.num_classes = 20
voc_schedule(lr_multiplier, train)
train.output_dir = "./output/PascalVOC-Detection/faster_rcnn_R_50_FPN"
