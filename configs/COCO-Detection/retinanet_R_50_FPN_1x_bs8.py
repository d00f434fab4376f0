"""The CleanAnchors comparison baseline: stock RetinaNet R50-FPN on the reference code's schedule
(8 images per batch, LR 0.005, 180k iterations, steps 120k/160k, multi-scale 640-800; the same
epochs as 16 images / 90k) with the reference fork's smooth-L1 beta 0.1. The CleanAnchors config
changes only the method on top of this one."""
from detkit.modeling import GlobalNormalizerRetinaNet

from .retinanet_R_50_FPN_1x import dataloader, lr_multiplier, model, optimizer, train

model._target_ = GlobalNormalizerRetinaNet  # the loss normaliser counts the positives of all processes
model.smooth_l1_beta = 0.1  # the reference fork's Base-RetinaNet (Detectron2 0.1.1's default)

dataloader.train.total_batch_size = 8
# Detectron2's COCO loader already jitters the short side over (640, 672, ..., 800).
optimizer.lr = 0.005
train.max_iter = 180000
lr_multiplier.scheduler.milestones = [120000, 160000, 180000]
lr_multiplier.warmup_length = 1000 / train.max_iter
train.checkpointer.period = 10000
train.eval_period = 20000
train.output_dir = "./output/COCO-Detection/retinanet_R_50_FPN_1x_bs8"
