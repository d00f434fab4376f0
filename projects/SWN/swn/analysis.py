"""What a trained SWN RetinaNet's sample weighting network sees and predicts on given images, for
pictures (SWN paper Fig. 5 and the learned weight as a function of each input).

:func:`swn_inputs` recomputes, for every anchor of a batch the SWN runs on (all anchors, or the
valid ones with ``weighting.samples="valid"``), exactly the four statistics :class:`swn.retinanet.SWNRetinaNet` feeds its SWN in training (same labels, same
definitions, no gradient); :func:`swn_outputs` runs the model's SWN on them and applies the
model's own :class:`SWNWeighting` (averaging rule, form, switches) to get the weights the losses
were multiplied by. Both also work for a stock RetinaNet, which then has ``m = 0`` and all
weights 1 (the baseline of Fig. 5).
"""
from typing import Dict, List, NamedTuple

import torch
from detectron2.layers import cat
from detectron2.modeling.meta_arch import RetinaNet
from detectron2.structures import Boxes
from detectron2.structures.boxes import matched_pairwise_iou
from fvcore.nn import sigmoid_focal_loss_jit, smooth_l1_loss
from torch import Tensor

from .loss import average_m, sample_weights
from .weighting import SWNWeighting

__all__ = [
    "SWNInputs",
    "SWNOutputs",
    "SWNSamples",
    "swn_inputs",
    "swn_outputs",
    "positive_samples",
    "collect_positive_samples",
    "swn_input_names",
    "sweep_swn_input",
]


class SWNInputs(NamedTuple):
    """The SWN's inputs in training, one row per SWN sample of a batch (V rows: every anchor, or
    the valid ones with ``weighting.samples="valid"``; the order of ``SWNRetinaNet.losses``:
    images, then anchors). Ignored anchors have four 0 inputs."""

    cls_loss: Tensor  # (V,) focal loss summed over classes
    reg_loss: Tensor  # (V, 4) smooth-L1 of the 4 box deltas (0 for negatives)
    iou: Tensor  # (V,) IoU of the decoded predicted box with its ground truth (0 for negatives)
    prob: Tensor  # (V,) sigmoid probability of the ground-truth class (0 for negatives)
    pos: Tensor  # (V,) bool, positive anchors
    image_index: Tensor  # (V,) long, the image of the batch


class SWNOutputs(NamedTuple):
    m: Tensor  # (V, T) the SWN's raw output per anchor (zeros without an enabled SWN)
    cls_weight: Tensor  # (V,) what the classification loss was multiplied by (after averaging m_cls)
    reg_weight: Tensor  # (P,) what the box loss of each positive was multiplied by


class SWNSamples(NamedTuple):
    """Per-positive-anchor (P,) arrays, concatenated over batches."""

    image_index: Tensor  # (P,) index of the image among all the images processed
    iou: Tensor  # SWN input: IoU of the decoded prediction with its ground truth
    prob: Tensor  # SWN input: probability of the ground-truth class
    cls_loss: Tensor  # SWN input: focal loss summed over classes
    reg_loss: Tensor  # (P, 4) SWN input: per-coordinate smooth-L1
    m_cls: Tensor  # the SWN's own m_cls for this sample (before any averaging)
    m_reg: Tensor  # the SWN's m_reg
    cls_weight: Tensor  # the classification weight applied in training (from the averaged m_cls)
    cls_weight_own: Tensor  # sample_weights(m_cls) of this sample alone (not applied if averaged)
    reg_weight: Tensor  # the box-loss weight applied in training


def _weighting(model) -> SWNWeighting:
    w = getattr(model, "weighting", None)
    return w if (w is not None and getattr(model, "swn", None) is not None) else SWNWeighting(enabled=False)


@torch.no_grad()
def swn_inputs(model, batched_inputs: List[Dict]) -> SWNInputs:
    """The SWN inputs of a RetinaNet's anchors on a batch (all, or the valid ones as the model's
    ``weighting.samples`` says), as ``SWNRetinaNet.losses`` computes them: RetinaNet's IoU labels (``label_anchors``), the focal loss with the model's
    alpha/gamma summed over classes, the smooth-L1 (model's beta) of the box deltas, the IoU of
    the decoded boxes and the probability of the ground-truth class; all detached.

    Args:
        model: a Detectron2 ``RetinaNet`` (``SWNRetinaNet`` or stock) with ``box_reg_loss_type``
            "smooth_l1".
        batched_inputs: model inputs with ``"instances"``.
    """
    if not isinstance(model, RetinaNet):
        raise ValueError(f"swn_inputs: needs a RetinaNet (the config's model is a {type(model).__name__})")
    if any("instances" not in x for x in batched_inputs):
        raise ValueError("swn_inputs: every input needs its ground truth under 'instances'")
    if model.box_reg_loss_type != "smooth_l1":
        raise ValueError(f"swn_inputs: the SWN reads smooth-L1 box losses, got {model.box_reg_loss_type!r}")
    images = model.preprocess_image(batched_inputs)
    features = model.backbone(images.tensor)
    features = [features[f] for f in model.head_in_features]
    pred_logits, pred_deltas = model._transpose_dense_predictions(model.head(features), [model.num_classes, 4])
    anchors = model.anchor_generator(features)
    gt_labels, gt_boxes = model.label_anchors(anchors, [x["instances"].to(model.device) for x in batched_inputs])

    num_images = len(gt_labels)
    logits = cat(pred_logits, dim=1)  # (N, R, K)
    deltas = cat(pred_deltas, dim=1)  # (N, R, 4)
    labels = torch.stack(gt_labels)  # (N, R)
    valid_mask = labels >= 0
    pos_mask = valid_mask & (labels != model.num_classes)
    targets = torch.nn.functional.one_hot(labels.clamp(min=0), num_classes=model.num_classes + 1)[..., :-1]
    cls_loss = sigmoid_focal_loss_jit(
        logits[valid_mask], targets[valid_mask].to(logits.dtype),
        alpha=model.focal_loss_alpha, gamma=model.focal_loss_gamma, reduction="none",
    ).sum(dim=1)  # (V,)

    pos_anchors = Boxes.cat(anchors).tensor.expand(num_images, -1, -1)[pos_mask]  # (P, 4)
    pos_gt_boxes = torch.stack(gt_boxes)[pos_mask]
    pos_deltas = deltas[pos_mask]
    gt_deltas = model.box2box_transform.get_deltas(pos_anchors, pos_gt_boxes)
    pos_reg = smooth_l1_loss(pos_deltas, gt_deltas, beta=model.smooth_l1_beta, reduction="none")  # (P, 4)

    pos_in_valid = pos_mask[valid_mask]
    pred_boxes = model.box2box_transform.apply_deltas(pos_deltas, pos_anchors)
    iou = cls_loss.new_zeros(cls_loss.shape)
    iou[pos_in_valid] = matched_pairwise_iou(Boxes(pred_boxes), Boxes(pos_gt_boxes)).to(iou.dtype)
    prob = cls_loss.new_zeros(cls_loss.shape)
    prob[pos_in_valid] = logits[pos_mask].gather(1, labels[pos_mask][:, None]).squeeze(1).sigmoid().to(prob.dtype)
    reg_loss = pos_reg.new_zeros((cls_loss.shape[0], 4))
    reg_loss[pos_in_valid] = pos_reg
    if _weighting(model).samples == "all":  # ignored anchors too, with four 0 inputs
        rows = valid_mask.flatten().nonzero()[:, 0]
        full = lambda x: x.new_zeros((valid_mask.numel(),) + x.shape[1:]).index_put((rows,), x)  # noqa: E731
        cls_loss, reg_loss, iou, prob, pos_in_valid = map(full, (cls_loss, reg_loss, iou, prob, pos_in_valid))
        valid_mask = torch.ones_like(valid_mask)
    image_index = valid_mask.nonzero()[:, 0]
    return SWNInputs(cls_loss, reg_loss, iou, prob, pos_in_valid, image_index)


@torch.no_grad()
def swn_outputs(model, inputs: SWNInputs) -> SWNOutputs:
    """Run ``model.swn`` on :func:`swn_inputs` and apply ``model.weighting`` as ``SWNRetinaNet``
    does: ``m_cls`` averaged by ``weighting.cls_average`` over all rows of ``inputs`` (so pass one
    training-sized batch at a time), ``m_reg`` per positive, weights ``sample_weights(m, form)``;
    an unweighted task (or a model without an enabled SWN) has ``m = 0``, weight 1."""
    w = _weighting(model)
    num_valid, pos = inputs.cls_loss.shape[0], inputs.pos
    if w.enabled:
        m = model.swn(inputs.cls_loss, inputs.reg_loss, inputs.iou, inputs.prob)
        m_cls = average_m(m[:, 0], pos, w.cls_average) if w.weight_cls else m.new_zeros(num_valid)
        m_reg = m[pos, 1] if w.weight_reg else m.new_zeros(int(pos.sum()))
    else:
        m = inputs.cls_loss.new_zeros((num_valid, 2))
        m_cls, m_reg = m[:, 0], m[pos, 1]
    return SWNOutputs(m, sample_weights(m_cls, w.form), sample_weights(m_reg, w.form))


def positive_samples(model, inputs: SWNInputs, outputs: SWNOutputs, image_offset: int = 0) -> SWNSamples:
    """The positive rows of one batch's inputs and outputs as :class:`SWNSamples`."""
    w, pos = _weighting(model), inputs.pos
    m_cls_own = outputs.m[pos, 0] if (w.enabled and w.weight_cls) else outputs.m.new_zeros(int(pos.sum()))
    m_reg = outputs.m[pos, 1] if (w.enabled and w.weight_reg) else outputs.m.new_zeros(int(pos.sum()))
    return SWNSamples(
        image_index=inputs.image_index[pos] + image_offset,
        iou=inputs.iou[pos],
        prob=inputs.prob[pos],
        cls_loss=inputs.cls_loss[pos],
        reg_loss=inputs.reg_loss[pos],
        m_cls=m_cls_own,
        m_reg=m_reg,
        cls_weight=outputs.cls_weight[pos],
        cls_weight_own=sample_weights(m_cls_own, w.form),
        reg_weight=outputs.reg_weight,
    )


def collect_positive_samples(model, batches: List[List[Dict]]) -> SWNSamples:
    """:func:`positive_samples` of every batch, concatenated (on the CPU); image indices count
    the images of all batches in order."""
    parts, offset = [], 0
    for batch in batches:
        inputs = swn_inputs(model, batch)
        samples = positive_samples(model, inputs, swn_outputs(model, inputs), offset)
        parts.append(SWNSamples(*(t.cpu() for t in samples)))
        offset += len(batch)
    if not parts:
        raise ValueError("collect_positive_samples: no images")
    return SWNSamples(*(torch.cat(ts) for ts in zip(*parts)))


swn_input_names = ("cls_loss", "reg_loss", "iou", "prob")


@torch.no_grad()
def sweep_swn_input(swn, samples: SWNSamples, name: str, values: Tensor) -> Tensor:
    """The SWN's output when one input sweeps ``values`` and the others stay at their medians
    over ``samples`` (positives).

    Args:
        swn: a :class:`swn.network.SampleWeightingNetwork` with 2 tasks.
        samples: where the medians come from (P >= 1).
        name: one of ``swn_input_names``. For ``"reg_loss"`` (4-d) ``values`` are totals over the
            4 coordinates, spread over them in the proportions of the per-coordinate medians
            (equally if those are all 0).
        values: (S,) the swept values.

    Returns:
        (S, 2) raw ``m`` (m_cls, m_reg); weights are ``sample_weights(m, form)``.
    """
    if name not in swn_input_names:
        raise ValueError(f"sweep_swn_input: name must be one of {swn_input_names}, got {name!r}")
    if samples.iou.numel() == 0:
        raise ValueError("sweep_swn_input: no samples to take medians from")
    device = next(swn.parameters()).device
    values = values.to(device=device, dtype=torch.float32)
    num = values.shape[0]
    medians = {k: getattr(samples, k).float().median().to(device) for k in ("cls_loss", "iou", "prob")}
    reg_median = samples.reg_loss.float().median(dim=0).values.to(device)  # (4,)
    inputs = {k: v.expand(num).clone() for k, v in medians.items()}
    inputs["reg_loss"] = reg_median.expand(num, 4).clone()
    if name == "reg_loss":
        total = reg_median.sum()
        share = reg_median / total if total > 0 else torch.full_like(reg_median, 0.25)
        inputs["reg_loss"] = values[:, None] * share[None, :]
    else:
        inputs[name] = values
    return swn(inputs["cls_loss"], inputs["reg_loss"], inputs["iou"], inputs["prob"])
