"""CleanAnchors RetinaNet R50-FPN with the reference code's 1x schedule: 8 images per batch,
LR 0.005, 180k iterations with steps at 120k/160k (the same epochs as 16 images / 90k), multi-scale
training 640-800, focal alpha 0.5, top-30 candidates, cleanliness alpha 0.75.
Paper / reference: 38.6 COCO val AP against 36.5 for its baseline."""
from detectron2.config import LazyCall as L

from clean_anchors import CleanAnchorsRetinaNet, CleanlinessConfig

from .retinanet_R_50_FPN_1x import dataloader, lr_multiplier, model, optimizer, train

model._target_ = CleanAnchorsRetinaNet
model.topn = 30
model.cleanliness = L(CleanlinessConfig)(alpha=0.75, gamma=1.0)
model.focal_loss_alpha = 0.5
model.smooth_l1_beta = 0.1  # the reference fork's Base-RetinaNet (Detectron2 0.1.1's default)
model.normalizer = "ema_raw"  # the reference code's loss normaliser: max(1, EMA of the raw positive count)

dataloader.train.total_batch_size = 8
# Detectron2's COCO loader already jitters the short side over (640, 672, ..., 800).
optimizer.lr = 0.005
train.max_iter = 180000
lr_multiplier.scheduler.milestones = [120000, 160000, 180000]
lr_multiplier.warmup_length = 1000 / train.max_iter
train.checkpointer.period = 10000
train.eval_period = 20000
train.output_dir = "./output/COCO-Detection/clean_anchors_retinanet_R_50_FPN_1x"
