"""What a trained SWN RetinaNet's sample weighting network sees and predicts on given images, for
pictures (SWN paper Fig. 5 and the learned weight as a function of each input).

:func:`swn_samples` runs the model on a batch and returns what
:meth:`swn.retinanet.SWNRetinaNet.training_samples` (the method its ``losses`` reduce) gives: for
every anchor the SWN runs on, its four inputs, the SWN's output and the loss weights of the
model's own :class:`SWNConfig`. It also works for a stock RetinaNet, which then has ``m = 0``
and all weights 1 (the baseline of Fig. 5).
"""
from typing import Dict, List, NamedTuple

import torch
from detectron2.modeling.meta_arch import RetinaNet
from torch import Tensor

from detkit.analysis import dense_head_outputs

from .loss import sample_weights
from .retinanet import DenseSWNSamples, SWNInputs, SWNRetinaNet, dense_swn_samples
from .weighting import SWNConfig

__all__ = [
    "SWNInputs",
    "SWNSamples",
    "swn_samples",
    "positive_samples",
    "collect_positive_samples",
    "swn_input_names",
    "sweep_swn_input",
]


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


def _weighting(model) -> SWNConfig:
    return model.weighting if isinstance(model, SWNRetinaNet) else SWNConfig(enabled=False)


@torch.no_grad()
def swn_samples(model, batched_inputs: List[Dict]) -> DenseSWNSamples:
    """What ``model`` trains with on a batch, per sample: :meth:`SWNRetinaNet.training_samples` on
    the model's own predictions and labels (``label_anchors``), without gradient. For a stock
    RetinaNet (any ``RetinaNet`` with smooth-L1 box loss): the same inputs with weights 1.

    Args:
        model: a Detectron2 ``RetinaNet`` (``SWNRetinaNet`` or stock).
        batched_inputs: model inputs with ``"instances"``.
    """
    if not isinstance(model, RetinaNet):
        raise ValueError(f"swn_samples: needs a RetinaNet (the config's model is a {type(model).__name__})")
    anchors, pred_logits, pred_deltas, gt_instances = dense_head_outputs(model, batched_inputs)
    gt_labels, gt_boxes = model.label_anchors(anchors, gt_instances)
    if isinstance(model, SWNRetinaNet):
        return model.training_samples(anchors, pred_logits, gt_labels, pred_deltas, gt_boxes)
    return dense_swn_samples(model, None, _weighting(model), anchors, pred_logits, gt_labels, pred_deltas, gt_boxes)


def positive_samples(model, samples: DenseSWNSamples, image_offset: int = 0) -> SWNSamples:
    """The positive rows of one batch's :func:`swn_samples` as :class:`SWNSamples`."""
    w, inputs, pos = _weighting(model), samples.inputs, samples.inputs.pos
    m_reg = samples.weights.m_reg
    m_cls_own = samples.m[pos, 0] if (samples.m is not None and w.weight_cls) else m_reg.new_zeros(m_reg.shape)
    return SWNSamples(
        image_index=inputs.image_index[pos] + image_offset,
        iou=inputs.iou[pos],
        prob=inputs.prob[pos],
        cls_loss=inputs.cls_loss[pos],
        reg_loss=inputs.reg_loss[pos],
        m_cls=m_cls_own,
        m_reg=m_reg,
        cls_weight=samples.weights.cls[pos],
        cls_weight_own=sample_weights(m_cls_own, w.form),
        reg_weight=samples.weights.reg,
    )


def collect_positive_samples(model, batches: List[List[Dict]]) -> SWNSamples:
    """:func:`positive_samples` of every batch, concatenated (on the CPU); image indices count
    the images of all batches in order."""
    parts, offset = [], 0
    for batch in batches:
        samples = positive_samples(model, swn_samples(model, batch), offset)
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
