"""RPN-only R50-FPN trained with CleanAnchors (paper Table 5: AR@100/300/1000 51.1/57.0/60.3 against
43.3/51.6/56.9), evaluated by proposal recall."""
from detectron2.config import LazyCall as L

from clean_anchors import CleanAnchorsRPN, CleanlinessConfig

from .rpn_R_50_FPN_1x import dataloader, lr_multiplier, model, optimizer, train

model.proposal_generator._target_ = CleanAnchorsRPN
model.proposal_generator.topn = 10
model.proposal_generator.cleanliness = L(CleanlinessConfig)(alpha=0.75, gamma=1.0, multiplicity="anchors")
train.output_dir = "./output/COCO-Detection/clean_anchors_rpn_R_50_FPN_1x"
