"""RPN-only MobileNetV2-FPN (Detectron2's ProposalNetwork) on the tree-crown tiles, evaluated by
proposal recall AR@100/300/1000 for all/small/medium/large crowns (the tree-crown counterpart of the
RPN baseline of NoisyAnchors Table 5). Backbone, RPN, data and schedule of faster_rcnn_mnv2_fpn.py."""
from detectron2.config import LazyCall as L
from detectron2.modeling.meta_arch import ProposalNetwork

from detkit.evaluation import build_proposal_recall_evaluator

from .faster_rcnn_mnv2_fpn import dataloader, lr_multiplier, model, optimizer, train

model = L(ProposalNetwork)(
    backbone=model.backbone,
    proposal_generator=model.proposal_generator,
    pixel_mean=model.pixel_mean,
    pixel_std=model.pixel_std,
)
dataloader.evaluator = L(build_proposal_recall_evaluator)(
    dataset_name="${..test.dataset.names}",
    output_dir="${train.output_dir}/inference",
    limits=(100, 300, 1000),
    post_nms_topk="${model.proposal_generator.post_nms_topk}",  # checked: test value >= max(limits)
)
train.output_dir = "./output/TreeCrowns/rpn_mnv2_fpn"
