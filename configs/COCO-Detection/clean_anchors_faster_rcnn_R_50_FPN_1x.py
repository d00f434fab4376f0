"""Faster R-CNN R50-FPN whose RPN is trained with CleanAnchors (paper Table 6: 37.8 vs 36.8 AP).
The paper trains Faster R-CNN with 8 images per batch at LR 0.01 for 180k iterations."""
from clean_anchors import clean_anchors_model

from .faster_rcnn_R_50_FPN_1x import dataloader, lr_multiplier, model, optimizer, train

clean_anchors_model(model)  # RPN: top-10 candidates, cleanliness alpha 0.75 / gamma 1, per anchor

dataloader.train.total_batch_size = 8
optimizer.lr = 0.01
train.max_iter = 180000
lr_multiplier.scheduler.milestones = [120000, 160000, 180000]
lr_multiplier.warmup_length = 1000 / train.max_iter
train.output_dir = "./output/COCO-Detection/clean_anchors_faster_rcnn_R_50_FPN_1x"
