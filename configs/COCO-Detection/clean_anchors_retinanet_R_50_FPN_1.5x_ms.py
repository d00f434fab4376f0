"""CleanAnchors RetinaNet R50-FPN, 1.5x schedule with multi-scale training (paper Table 2):
270k iterations at 8 images per batch, steps at 180k/240k."""
from .clean_anchors_retinanet_R_50_FPN_1x import dataloader, lr_multiplier, model, optimizer, train

train.max_iter = 270000
lr_multiplier.scheduler.milestones = [180000, 240000, 270000]
lr_multiplier.warmup_length = 1000 / train.max_iter
train.output_dir = "./output/COCO-Detection/clean_anchors_retinanet_R_50_FPN_1.5x_ms"
