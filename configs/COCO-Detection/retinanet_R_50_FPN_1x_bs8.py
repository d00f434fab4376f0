"""The CleanAnchors comparison baseline: stock RetinaNet R50-FPN on the reference code's schedule
(8 images per batch, LR 0.005, 180k iterations, steps 120k/160k, multi-scale 640-800)."""
from detkit.modeling import GlobalNormalizerRetinaNet

from .clean_anchors_retinanet_R_50_FPN_1x import dataloader, lr_multiplier, model, optimizer, train

model._target_ = GlobalNormalizerRetinaNet  # smooth-L1 beta 0.1 and the global count stay paired
del model.topn, model.cleanliness, model.normalizer
model.focal_loss_alpha = 0.25
train.output_dir = "./output/COCO-Detection/retinanet_R_50_FPN_1x_bs8"
