"""The cleanliness of a trained RetinaNet's candidate anchors on given images, for pictures
(paper Figs. 1 and 3: anchors coloured by soft label and by re-weighting factor).

Cleanliness is computed from a RetinaNet's own outputs, so any RetinaNet checkpoint works, also a
stock one; the candidates, soft labels and weights are those :class:`CleanAnchorsRetinaNet` would
train this model with, computed by the functions its training calls (``label_candidates``, then
``clean_anchors_samples``, the per-anchor quantities its ``losses`` reduce).
"""
from typing import Dict, List, NamedTuple, Tuple

import torch
from detectron2.modeling.meta_arch import RetinaNet
from detectron2.structures import Boxes
from detectron2.structures.boxes import matched_pairwise_iou
from torch import Tensor

from detkit.analysis import dense_head_outputs

from .retinanet import CandidateLabels, CleanAnchorsRetinaNet, clean_anchors_samples, label_candidates
from .scores import CleanlinessConfig

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
            ``assigner="topn"``: the ``topn`` highest-IoU anchors of each ground truth
            (:func:`label_candidates`); ``"iou"``: the anchors ``model.label_anchors`` labels
            foreground.

    Returns:
        :class:`CandidateAnchors` of all candidates of the batch, in (image, anchor) order, from
        :func:`clean_anchors_samples`, the per-anchor quantities ``CleanAnchorsRetinaNet.losses``
        reduces; soft labels and weights are per-image statistics unless
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

    anchors, pred_logits, pred_deltas, gt_instances = dense_head_outputs(model, batched_inputs)
    if assigner == "topn":
        labels = label_candidates(anchors, gt_instances, topn, cleanliness, model.num_classes)
    else:
        labels = CandidateLabels(*model.label_anchors(anchors, gt_instances), None)
    s = clean_anchors_samples(
        model, cleanliness, anchors, pred_logits, labels.gt_labels, pred_deltas, labels.gt_boxes, labels.num_lists
    )
    p = s.positives
    # which ground truth of its image each candidate's box is (the first of equal boxes)
    gt_index = torch.zeros_like(p.image_index)
    for i, gt in enumerate(gt_instances):  # a loop over images
        mine = p.image_index == i
        if len(gt) > 0 and mine.any():
            same = (p.gt_boxes[mine][:, None, :] == gt.gt_boxes.tensor[None]).all(dim=2)  # (P_i, G)
            gt_index[mine] = same.int().argmax(dim=1)
    return CandidateAnchors(
        image_index=p.image_index,
        anchors=p.anchors,
        pred_boxes=model.box2box_transform.apply_deltas(p.pred_deltas.float(), p.anchors.float()),
        gt_index=gt_index,
        gt_boxes=p.gt_boxes,
        anchor_iou=matched_pairwise_iou(Boxes(p.anchors), Boxes(p.gt_boxes)),
        loc_a=s.scores.loc_a,
        cls_c=s.scores.cls_c,
        soft_labels=s.scores.soft_labels,
        weights=s.scores.weights,
        num_lists=p.num_lists if p.num_lists is not None else torch.ones_like(p.image_index),
    )
