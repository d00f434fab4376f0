"""CleanAnchors RetinaNet R101-FPN, reference 1x schedule (ImageNet R-101 from Detectron2's zoo)."""
from .clean_anchors_retinanet_R_50_FPN_1x import dataloader, lr_multiplier, model, optimizer, train

model.backbone.bottom_up.stages.depth = 101
train.init_checkpoint = "detectron2://ImageNetPretrained/MSRA/R-101.pkl"
train.output_dir = "./output/COCO-Detection/clean_anchors_retinanet_R_101_FPN_1x"
