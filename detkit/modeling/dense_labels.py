"""What RetinaNet-style ``losses`` methods compute first, shared by the projects' subclasses."""
from typing import List, NamedTuple

import torch
import torch.nn.functional as F
from detectron2.utils.events import get_event_storage
from torch import Tensor


class DenseLabels(NamedTuple):
    labels: Tensor  # (N, R) in {-1 (ignore), 0..K-1, K (background)}
    valid_mask: Tensor  # (N, R) bool, not ignored
    pos_mask: Tensor  # (N, R) bool, foreground
    targets: Tensor  # (N, R, K) one-hot classification targets (0 rows for background / ignored)
    normalizer: float  # the EMA of the positive count


def dense_labels(model, gt_labels: List[Tensor], num_classes: int, dtype=torch.float32) -> DenseLabels:
    """``RetinaNet.losses``' preamble: stack the per-image labels, build the masks and one-hot
    targets, log ``num_pos_anchors`` and update the model's positive-count EMA (``loss_normalizer``,
    initial 100, momentum 0.9) exactly as stock RetinaNet does."""
    num_images = len(gt_labels)
    labels = torch.stack(gt_labels)
    valid_mask = labels >= 0
    pos_mask = valid_mask & (labels != num_classes)
    num_pos = pos_mask.sum().item()
    get_event_storage().put_scalar("num_pos_anchors", num_pos / num_images)
    normalizer = model._ema_update("loss_normalizer", max(num_pos, 1), 100)
    targets = F.one_hot(labels.clamp(min=0), num_classes=num_classes + 1)[..., :-1].to(dtype)
    return DenseLabels(labels, valid_mask, pos_mask, targets, normalizer)
