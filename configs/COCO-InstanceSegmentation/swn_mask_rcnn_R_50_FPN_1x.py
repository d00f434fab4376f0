"""SWN Mask R-CNN R50-FPN 1x (paper Table 1: 12 epochs, 16 images per batch, SGD lr 0.02): one SWN
with a third input/output weights each RoI's classification, box and mask losses (reference code);
Adam lr 1e-3 / wd 1e-4 under the same schedule, gradient clipping at max-norm 35.
Paper, COCO test-dev: box 39.0 against 37.5."""
from ..common.swn import swn_rcnn
from .mask_rcnn_R_50_FPN_1x import dataloader, lr_multiplier, model, optimizer, train

swn_rcnn(model, optimizer)
train.clip_grad = dict(enabled=True, max_norm=35.0, norm_type=2.0)
train.output_dir = "./output/COCO-InstanceSegmentation/swn_mask_rcnn_R_50_FPN_1x"
