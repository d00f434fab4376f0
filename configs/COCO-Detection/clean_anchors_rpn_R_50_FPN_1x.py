"""RPN-only R50-FPN trained with CleanAnchors (paper Table 5: AR@100/300/1000 51.1/57.0/60.3 against
43.3/51.6/56.9), evaluated by proposal recall."""
from clean_anchors import clean_anchors_model

from .rpn_R_50_FPN_1x import dataloader, lr_multiplier, model, optimizer, train

clean_anchors_model(model)  # RPN: top-10 candidates, cleanliness alpha 0.75 / gamma 1, per anchor
train.output_dir = "./output/COCO-Detection/clean_anchors_rpn_R_50_FPN_1x"
