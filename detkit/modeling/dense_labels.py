"""What RetinaNet-style ``losses`` methods compute first, shared by the projects' subclasses."""
from typing import List, NamedTuple

import torch
import torch.nn.functional as F
from detectron2.utils import comm
from detectron2.utils.events import get_event_storage

from torch import Tensor

from .loss_normalizer import sum_over_processes

NORMALIZERS = ("ema", "ema_raw", "batch")


class DenseTargets(NamedTuple):
    labels: Tensor  # (N, R) in {-1 (ignore), 0..K-1, K (background)}
    valid_mask: Tensor  # (N, R) bool, not ignored
    pos_mask: Tensor  # (N, R) bool, foreground
    targets: Tensor  # (N, R, K) one-hot classification targets (0 rows for background / ignored)


def dense_targets(gt_labels: List[Tensor], num_classes: int, dtype=torch.float32) -> DenseTargets:
    """The per-image labels (``label_anchors``' first output) stacked, with their masks and one-hot
    targets, as ``RetinaNet.losses`` makes them; no side effect."""
    labels = torch.stack(gt_labels)
    valid_mask = labels >= 0
    pos_mask = valid_mask & (labels != num_classes)
    targets = F.one_hot(labels.clamp(min=0), num_classes=num_classes + 1)[..., :-1].to(dtype)
    return DenseTargets(labels, valid_mask, pos_mask, targets)


def loss_normalizer(model, pos_mask: Tensor, normalizer: str = "ema") -> float:
    """What a dense head's loss sums are divided by, from the positive count ``P`` of ``pos_mask``
    (N, R); logs ``num_pos_anchors`` and updates the model's EMA (the side effects of
    ``RetinaNet.losses``' preamble).

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
    num_pos = pos_mask.sum().item()
    get_event_storage().put_scalar("num_pos_anchors", num_pos / pos_mask.shape[0])
    shared_by = comm.get_world_size() if getattr(model, "global_loss_normalizer", False) else 1
    if normalizer == "ema":
        return model._ema_update("loss_normalizer", max(num_pos, 1), 100)
    if normalizer == "ema_raw":  # max(1, E) / W == max(1 / W, E / W), E / W what _ema_update returns
        return max(model._ema_update("loss_normalizer", num_pos, 100), 1.0 / shared_by)
    if normalizer == "batch":
        count = float(pos_mask.sum(dim=1).clamp(min=1).sum().item())
        return (sum_over_processes(count, pos_mask.device) if shared_by > 1 else count) / shared_by
    raise ValueError(f"loss_normalizer: normalizer must be one of {NORMALIZERS}, got {normalizer!r}")
