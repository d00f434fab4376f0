"""RPN-only R50-FPN (Detectron2's ProposalNetwork; model zoo: AR@1000 58.0), evaluated by proposal
recall. The baseline of paper Table 5."""
from detectron2.config import LazyCall as L
from detectron2.modeling.meta_arch import ProposalNetwork

from .faster_rcnn_R_50_FPN_1x import dataloader, lr_multiplier, model, optimizer, train

model = L(ProposalNetwork)(
    backbone=model.backbone,
    proposal_generator=model.proposal_generator,
    pixel_mean=model.pixel_mean,
    pixel_std=model.pixel_std,
)
model.proposal_generator.post_nms_topk = (2000, 1000)
train.output_dir = "./output/COCO-Detection/rpn_R_50_FPN_1x"
