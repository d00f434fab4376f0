"""CleanAnchors RetinaNet R50-FPN with the reference code's 1x schedule: its baseline
`retinanet_R_50_FPN_1x_bs8.py` (8 images per batch, LR 0.005, 180k iterations with steps at
120k/160k, multi-scale training 640-800, smooth-L1 beta 0.1) plus the method: focal alpha 0.5,
top-30 candidates, cleanliness alpha 0.75, the reference loss normaliser.
Paper / reference: 38.6 COCO val AP against 36.5 for its baseline."""
from clean_anchors import clean_anchors_model

from .retinanet_R_50_FPN_1x_bs8 import dataloader, lr_multiplier, model, optimizer, train

clean_anchors_model(model)  # top-30 candidates, cleanliness alpha 0.75 / gamma 1, focal alpha 0.5
model.normalizer = "ema_raw"  # the reference code's loss normaliser: max(1, EMA of the raw positive count)
train.output_dir = "./output/COCO-Detection/clean_anchors_retinanet_R_50_FPN_1x"
