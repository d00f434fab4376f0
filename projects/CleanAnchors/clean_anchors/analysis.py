"""The cleanliness of a trained RetinaNet's candidate anchors on given images, for pictures
(paper Figs. 1 and 3: anchors coloured by soft label and by re-weighting factor).

Cleanliness is computed from a RetinaNet's own outputs, so any RetinaNet checkpoint works, also a
stock one; the candidates, soft labels and weights are those :class:`CleanAnchorsRetinaNet` would
train this model with, computed by the same functions in the same way (``topn_candidates`` on the
anchor/GT IoU as in ``label_candidates`` (``match_candidates``), then ``candidate_scores`` as in
``losses``, with the same top-N list multiplicities).
"""
from typing import Dict, List, NamedTuple, Tuple

import torch
from detectron2.layers import cat
from detectron2.modeling.meta_arch import RetinaNet
from detectron2.structures import Boxes, pairwise_iou
from detectron2.structures.boxes import matched_pairwise_iou
from torch import Tensor

from .retinanet import CleanAnchorsRetinaNet
from .scores import CleanlinessConfig, candidate_scores, match_candidates

__all__ = ["CandidateAnchors", "cleanliness_settings", "candidate_anchors"]


class CandidateAnchors(NamedTuple):
    """Per-candidate tensors of a batch (P candidates over all its images); boxes are XYXY in the
    pixels of the model's input images."""

    image_index: Tensor  # (P,) long: which image of the batch
    anchors: Tensor  # (P, 4) the candidate anchors
    pred_boxes: Tensor  # (P, 4) the model's boxes decoded from them
    gt_index: Tensor  # (P,) long: the matched ground truth, an index into that image's instances
    gt_boxes: Tensor  # (P, 4) the matched ground-truth boxes
    anchor_iou: Tensor  # (P,) IoU of the anchor with its ground truth (what an IoU label is made of)
    loc_a: Tensor  # (P,) IoU of the decoded predicted box with its ground truth
    cls_c: Tensor  # (P,) predicted probability of the ground-truth class
    soft_labels: Tensor  # (P,) classification targets in [0, 1]
    weights: Tensor  # (P,) re-weighting factors r (> 0; per image, mean 1 over the num_lists-weighted candidates)
    num_lists: Tensor  # (P,) long: how many top-N lists hold the candidate (its weight in the per-image means)


def cleanliness_settings(model) -> Tuple[int, str, CleanlinessConfig]:
    """``(topn, assigner, cleanliness)`` of a :class:`CleanAnchorsRetinaNet`, or the method's
    defaults (30, ``"topn"``, ``CleanlinessConfig()``: alpha 0.75, gamma 1) for any other RetinaNet."""
    if isinstance(model, CleanAnchorsRetinaNet):
        return model.topn, model.assigner, model.cleanliness
    return 30, "topn", CleanlinessConfig()


@torch.no_grad()
def candidate_anchors(
    model,
    batched_inputs: List[Dict],
    topn: int = None,
    assigner: str = None,
    cleanliness: CleanlinessConfig = None,
) -> CandidateAnchors:
    """Run a RetinaNet on a batch and score its candidate anchors as CleanAnchors does in training.

    Args:
        model: a Detectron2 ``RetinaNet`` (stock or a subclass), in eval mode or not.
        batched_inputs: model inputs with ``"instances"`` (ground truth), as in training.
        topn, assigner, cleanliness: default :func:`cleanliness_settings` of ``model``.
            ``assigner="topn"``: the ``topn`` highest-IoU anchors of each ground truth;
            ``"iou"``: the anchors ``model.anchor_matcher`` labels foreground.

    Returns:
        :class:`CandidateAnchors` of all candidates of the batch, in (image, anchor) order as in
        ``CleanAnchorsRetinaNet.losses``; soft labels and weights are per-image statistics unless
        ``cleanliness.statistics == "batch"``.
    """
    if not isinstance(model, RetinaNet):
        raise ValueError(f"candidate_anchors: needs a RetinaNet (the config's model is a {type(model).__name__})")
    default_topn, default_assigner, default_cfg = cleanliness_settings(model)
    topn = default_topn if topn is None else topn
    assigner = default_assigner if assigner is None else assigner
    cleanliness = default_cfg if cleanliness is None else cleanliness
    if assigner not in ("topn", "iou"):
        raise ValueError(f"candidate_anchors: assigner must be 'topn' or 'iou', got {assigner!r}")
    if any("instances" not in x for x in batched_inputs):
        raise ValueError("candidate_anchors: every input needs its ground truth under 'instances'")

    images = model.preprocess_image(batched_inputs)
    features = model.backbone(images.tensor)
    features = [features[f] for f in model.head_in_features]
    pred_logits, pred_deltas = model._transpose_dense_predictions(model.head(features), [model.num_classes, 4])
    all_anchors = Boxes.cat(model.anchor_generator(features))  # (R, 4)
    gt_instances = [x["instances"].to(model.device) for x in batched_inputs]

    matched, num_lists, matched_boxes, matched_classes = [], [], [], []
    for gt in gt_instances:  # a loop over images, never over anchors
        if assigner == "topn":
            m, lists = match_candidates(gt.gt_boxes.tensor, all_anchors.tensor, topn, cleanliness)
        elif len(gt) > 0:
            index, label = model.anchor_matcher(pairwise_iou(gt.gt_boxes, all_anchors))
            m = torch.where(label == 1, index, torch.full_like(index, -1))
            lists = (m >= 0).long()
        else:
            m = torch.full((len(all_anchors),), -1, dtype=torch.long, device=all_anchors.device)
            lists = torch.zeros_like(m)
        matched.append(m)
        num_lists.append(lists)
        if len(gt) > 0:
            matched_boxes.append(gt.gt_boxes.tensor[m.clamp(min=0)])
            matched_classes.append(gt.gt_classes[m.clamp(min=0)])
        else:
            matched_boxes.append(torch.zeros_like(all_anchors.tensor))
            matched_classes.append(torch.zeros_like(m))
    matched = torch.stack(matched)  # (N, R)
    pos_mask = matched >= 0

    logits = cat(pred_logits, dim=1)  # (N, R, K)
    deltas = cat(pred_deltas, dim=1)  # (N, R, 4)
    image_index = pos_mask.nonzero()[:, 0]
    pos_anchors = all_anchors.tensor.expand(len(gt_instances), -1, -1)[pos_mask]
    pos_gt_boxes = torch.stack(matched_boxes)[pos_mask]
    pos_classes = torch.stack(matched_classes)[pos_mask]
    pos_num_lists = torch.stack(num_lists)[pos_mask]  # (P,)
    scores = candidate_scores(
        model.box2box_transform,
        anchors=pos_anchors,
        pred_deltas=deltas[pos_mask],
        gt_boxes=pos_gt_boxes,
        gt_class_logits=logits[pos_mask].gather(1, pos_classes[:, None]).squeeze(1),
        image_index=image_index,
        cfg=cleanliness,
        num_lists=pos_num_lists if assigner == "topn" else None,
    )
    pred_boxes = model.box2box_transform.apply_deltas(deltas[pos_mask].float(), pos_anchors.float())
    return CandidateAnchors(
        image_index=image_index,
        anchors=pos_anchors,
        pred_boxes=pred_boxes,
        gt_index=matched[pos_mask],
        gt_boxes=pos_gt_boxes,
        anchor_iou=matched_pairwise_iou(Boxes(pos_anchors), Boxes(pos_gt_boxes)),
        loc_a=scores.loc_a,
        cls_c=scores.cls_c,
        soft_labels=scores.soft_labels,
        weights=scores.weights,
        num_lists=pos_num_lists,
    )
