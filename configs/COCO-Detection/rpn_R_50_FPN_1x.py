"""RPN-only R50-FPN (Detectron2's ProposalNetwork; model zoo: AR@1000 58.0), evaluated by proposal
recall AR@100/300/1000 for all/small/medium/large objects. The baseline of paper Table 5."""
from detectron2.config import LazyCall as L
from detectron2.modeling.meta_arch import ProposalNetwork

from detkit.evaluation import build_proposal_recall_evaluator

from .faster_rcnn_R_50_FPN_1x import dataloader, lr_multiplier, model, optimizer, train

model = L(ProposalNetwork)(
    backbone=model.backbone,
    proposal_generator=model.proposal_generator,
    pixel_mean=model.pixel_mean,
    pixel_std=model.pixel_std,
)
model.proposal_generator.post_nms_topk = (2000, 1000)
# Detectron2's COCOEvaluator gives only AR@100 and AR@1000; Table 5 also reports AR@300.
dataloader.evaluator = L(build_proposal_recall_evaluator)(
    dataset_name="${..test.dataset.names}",
    limits=(100, 300, 1000),
    post_nms_topk="${model.proposal_generator.post_nms_topk}",  # checked: test value >= max(limits)
)
train.output_dir = "./output/COCO-Detection/rpn_R_50_FPN_1x"
