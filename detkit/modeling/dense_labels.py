"""What RetinaNet-style ``losses`` methods compute first, shared by the projects' subclasses."""
from typing import List, NamedTuple

import torch
import torch.nn.functional as F
from detectron2.utils import comm
from detectron2.utils.events import get_event_storage

from .loss_normalizer import sum_over_processes
from torch import Tensor


class DenseLabels(NamedTuple):
    labels: Tensor  # (N, R) in {-1 (ignore), 0..K-1, K (background)}
    valid_mask: Tensor  # (N, R) bool, not ignored
    pos_mask: Tensor  # (N, R) bool, foreground
    targets: Tensor  # (N, R, K) one-hot classification targets (0 rows for background / ignored)
    normalizer: float  # what the loss sums are divided by (see dense_labels)


NORMALIZERS = ("ema", "ema_raw", "batch")


def dense_labels(
    model, gt_labels: List[Tensor], num_classes: int, dtype=torch.float32, normalizer: str = "ema"
) -> DenseLabels:
    """``RetinaNet.losses``' preamble: stack the per-image labels, build the masks and one-hot
    targets, log ``num_pos_anchors`` and compute the loss normaliser from the positive count ``P``.

    Args:
        normalizer: ``"ema"`` (stock RetinaNet, exactly): the EMA (initial 100, momentum 0.9, state
            ``model.loss_normalizer``) of ``max(P, 1)``; ``"ema_raw"`` (the NoisyAnchor code): the
            EMA of the raw ``P`` (0 for a batch without positives), the normaliser is ``max(1, EMA)``;
            ``"batch"`` (mmdetection v0.6, the SWN code): no EMA, the sum over images of
            ``max(P_i, 1)``. The EMAs go through ``model._ema_update``, so that a
            :class:`~detkit.modeling.GlobalLossNormalizer` counts the positives of all processes
            (it then returns the all-process EMA divided among the processes); ``"batch"`` sums
            over processes with it too.
    """
    num_images = len(gt_labels)
    labels = torch.stack(gt_labels)
    valid_mask = labels >= 0
    pos_mask = valid_mask & (labels != num_classes)
    num_pos = pos_mask.sum().item()
    get_event_storage().put_scalar("num_pos_anchors", num_pos / num_images)
    shared_by = comm.get_world_size() if getattr(model, "global_loss_normalizer", False) else 1
    if normalizer == "ema":
        value = model._ema_update("loss_normalizer", max(num_pos, 1), 100)
    elif normalizer == "ema_raw":  # max(1, E) / W == max(1 / W, E / W), E / W what _ema_update returns
        value = max(model._ema_update("loss_normalizer", num_pos, 100), 1.0 / shared_by)
    elif normalizer == "batch":
        count = float(pos_mask.sum(dim=1).clamp(min=1).sum().item())
        value = (sum_over_processes(count, labels.device) if shared_by > 1 else count) / shared_by
    else:
        raise ValueError(f"dense_labels: normalizer must be one of {NORMALIZERS}, got {normalizer!r}")
    targets = F.one_hot(labels.clamp(min=0), num_classes=num_classes + 1)[..., :-1].to(dtype)
    return DenseLabels(labels, valid_mask, pos_mask, targets, value)
