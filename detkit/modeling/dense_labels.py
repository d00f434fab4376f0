"""What RetinaNet-style ``losses`` methods compute first, shared by the projects' subclasses."""
from typing import List, NamedTuple

import torch
import torch.nn.functional as F
from detectron2.utils import comm
from detectron2.utils.events import get_event_storage
from torch import Tensor


class DenseLabels(NamedTuple):
    labels: Tensor  # (N, R) in {-1 (ignore), 0..K-1, K (background)}
    valid_mask: Tensor  # (N, R) bool, not ignored
    pos_mask: Tensor  # (N, R) bool, foreground
    targets: Tensor  # (N, R, K) one-hot classification targets (0 rows for background / ignored)
    normalizer: float  # the EMA of the positive count


def dense_labels(
    model, gt_labels: List[Tensor], num_classes: int, dtype=torch.float32, count_empty_as_one: bool = True
) -> DenseLabels:
    """``RetinaNet.losses``' preamble: stack the per-image labels, build the masks and one-hot
    targets, log ``num_pos_anchors`` and update the model's positive-count EMA (``loss_normalizer``,
    initial 100, momentum 0.9, through ``model._ema_update``, so that a
    :class:`~detkit.modeling.GlobalLossNormalizer` counts all processes).

    Args:
        count_empty_as_one: True: the EMA of ``max(P, 1)`` is the normaliser, exactly as stock
            RetinaNet; False (the NoisyAnchor code): the EMA of the raw count ``P``, and the
            normaliser is ``max(1, EMA)`` (of the all-process EMA, divided among the processes).
    """
    num_images = len(gt_labels)
    labels = torch.stack(gt_labels)
    valid_mask = labels >= 0
    pos_mask = valid_mask & (labels != num_classes)
    num_pos = pos_mask.sum().item()
    get_event_storage().put_scalar("num_pos_anchors", num_pos / num_images)
    if count_empty_as_one:
        normalizer = model._ema_update("loss_normalizer", max(num_pos, 1), 100)
    else:  # max(1, E) / W == max(1 / W, E / W) with E / W what a global normaliser returns
        shared_by = comm.get_world_size() if getattr(model, "global_loss_normalizer", False) else 1
        normalizer = max(model._ema_update("loss_normalizer", num_pos, 100), 1.0 / shared_by)
    targets = F.one_hot(labels.clamp(min=0), num_classes=num_classes + 1)[..., :-1].to(dtype)
    return DenseLabels(labels, valid_mask, pos_mask, targets, normalizer)
