"""The CleanAnchors comparison baseline: stock RetinaNet R50-FPN on the reference code's schedule
(8 images per batch, LR 0.005, 180k iterations, steps 120k/160k, multi-scale 640-800)."""
from .clean_anchors_retinanet_R_50_FPN_1x import dataloader, lr_multiplier, model, optimizer, train
from detectron2.modeling.meta_arch import RetinaNet

model._target_ = RetinaNet
del model.topn, model.cleanliness
model.focal_loss_alpha = 0.25
train.output_dir = "./output/COCO-Detection/retinanet_R_50_FPN_1x_bs8"
