"""Soft-NMS (Bodla et al., "Soft-NMS -- Improving Object Detection With One Line of Code", ICCV 2017),
per class, as a pure tensor function with the interface of torchvision's ``batched_nms``.

Hard NMS removes every box whose IoU with a higher-scoring kept box ``M`` exceeds a threshold.
Soft-NMS instead lowers its score, ``s_i <- s_i * f(IoU(M, b_i))``, and goes on picking the
highest *current* score, so an object that truly overlaps another keeps a (lower-ranked) detection:

* linear:   ``f(iou) = 1 - iou`` where ``iou > iou_threshold``, else 1 (``>`` as in the authors' code;
  the paper's equation has ``>=``);
* gaussian: ``f(iou) = exp(-iou**2 / sigma)`` for every box (the paper's Gaussian has no threshold).

Boxes whose score falls below ``score_threshold`` are dropped. The picks come out in decreasing
order of their new scores (a pick has the highest current score, and scores only decrease), so the
first ``max_keep`` picks are exactly the top ``max_keep`` of a complete run: the loop stops there.

Limits (tested against torchvision's ``nms``): with ``score_threshold > 0``, Gaussian with
``sigma -> 0`` removes every box that overlaps a pick of its class at all, i.e. it is hard NMS at IoU
threshold 0. Linear is hard NMS at ``iou_threshold = t`` whenever every decayed score
``s * (1 - iou)``, ``iou > t``, falls below ``score_threshold``: then nothing decayed survives and
no survivor was decayed, e.g. for scores in ``[1 - t, 1]`` with ``score_threshold = 1 - t``.
"""
from typing import Dict, Mapping, Optional, Tuple

import torch
from torch import Tensor
from torchvision.ops import box_iou

__all__ = [
    "SOFT_NMS_DEFAULTS",
    "SOFT_NMS_METHODS",
    "batched_soft_nms",
    "check_soft_nms_params",
    "soft_nms_decay",
    "soft_nms_options",
]

SOFT_NMS_METHODS = ("linear", "gaussian")
#: The paper's settings (Bodla et al. 2017, Sec. 4): linear N_t = 0.3, Gaussian sigma = 0.5, and
#: boxes below 0.001 dropped.
SOFT_NMS_DEFAULTS = dict(method="linear", sigma=0.5, iou_threshold=0.3, score_threshold=0.001)


def check_soft_nms_params(
    method: str, sigma: float, iou_threshold: float, score_threshold: float, where: str = "soft-NMS"
) -> None:
    """Raise a ``ValueError`` naming ``where`` (e.g. the config key) for a setting Soft-NMS cannot use."""
    if method not in SOFT_NMS_METHODS:
        raise ValueError(f"{where}: method={method!r} is not one of {SOFT_NMS_METHODS}.")
    if method == "gaussian" and not sigma > 0:
        raise ValueError(f"{where}: sigma={sigma!r}; the Gaussian decay needs sigma > 0.")
    if not 0.0 <= iou_threshold <= 1.0:
        raise ValueError(f"{where}: iou_threshold={iou_threshold!r} is not in [0, 1].")
    if not score_threshold >= 0.0:
        raise ValueError(f"{where}: score_threshold={score_threshold!r} must be >= 0.")


def soft_nms_options(node: Optional[Mapping], where: str = "test.soft_nms") -> Optional[Dict]:
    """The keyword arguments of :func:`batched_soft_nms` from a config node such as
    ``test.soft_nms`` (``enabled`` plus any of :data:`SOFT_NMS_DEFAULTS`), completed with the
    defaults and checked; None when the node is None or ``enabled`` is false."""
    if node is None or not node.get("enabled", True):
        return None
    options = {k: v for k, v in node.items() if k != "enabled"}
    unknown = set(options) - set(SOFT_NMS_DEFAULTS)
    if unknown:
        known = ", ".join(["enabled", *SOFT_NMS_DEFAULTS])
        raise ValueError(f"{where}: unknown option(s) {sorted(unknown)}; known: {known}.")
    options = {**SOFT_NMS_DEFAULTS, **options}
    check_soft_nms_params(**options, where=where)
    return options


def soft_nms_decay(iou: Tensor, method: str = "linear", sigma: float = 0.5, iou_threshold: float = 0.3) -> Tensor:
    """The factor ``f(iou)`` that Soft-NMS multiplies a score by (see the module docstring).

    Args:
        iou: (M,) IoU of each remaining box with the box just picked (0 for other classes).

    Returns:
        (M,) factors in [0, 1].
    """
    if method == "linear":
        return torch.where(iou > iou_threshold, 1.0 - iou, torch.ones_like(iou))
    if method == "gaussian":
        return torch.exp(-(iou * iou) / sigma)
    raise ValueError(f"soft-NMS: method={method!r} is not one of {SOFT_NMS_METHODS}.")


def batched_soft_nms(
    boxes: Tensor,
    scores: Tensor,
    idxs: Tensor,
    method: str = "linear",
    sigma: float = 0.5,
    iou_threshold: float = 0.3,
    score_threshold: float = 0.001,
    max_keep: Optional[int] = None,
) -> Tuple[Tensor, Tensor]:
    """Soft-NMS within each class (boxes of different ``idxs`` never decay each other).

    Args:
        boxes: (N, 4) boxes in (x1, y1, x2, y2).
        scores: (N,) scores.
        idxs: (N,) integer class of each box.
        method: "linear" or "gaussian".
        sigma: the Gaussian's sigma (the paper's 0.5; unused by linear).
        iou_threshold: IoU above which the linear method decays a score (the paper's 0.3;
            unused by gaussian).
        score_threshold: boxes whose (decayed) score is below this are dropped (the paper's 0.001).
        max_keep: stop after this many picks (None: until no box is left).

    Returns:
        keep: (K,) int64 indices into the inputs of the kept boxes, in decreasing order of their
            new scores (ties: the lower index first).
        new_scores: (K,) the kept boxes' scores after decay, same dtype as ``scores``.

    The loop runs once per kept box; each step is vectorised over the remaining boxes (one row of
    IoUs), so a step costs O(N) and the whole call O(K * N) without an N x N IoU matrix. Classes are
    separated by zeroing the IoU between boxes of different classes, which is exact (torchvision's
    coordinate-offset trick would shift boxes by up to #classes x image size and lose float
    precision in the IoUs).
    """
    if boxes.dim() != 2 or boxes.shape[-1] != 4:
        raise ValueError(f"batched_soft_nms: boxes must be (N, 4), got {tuple(boxes.shape)}.")
    n = boxes.shape[0]
    if scores.shape != (n,) or idxs.shape != (n,):
        raise ValueError(
            f"batched_soft_nms: scores {tuple(scores.shape)} and idxs {tuple(idxs.shape)} must both be ({n},)."
        )
    check_soft_nms_params(method, sigma, iou_threshold, score_threshold)
    if max_keep is not None and max_keep < 0:
        raise ValueError(f"batched_soft_nms: max_keep={max_keep}; use None for no limit.")
    limit = n if max_keep is None else min(max_keep, n)

    alive = scores >= score_threshold
    remaining = torch.nonzero(alive).squeeze(1)  # indices into the inputs
    rem_boxes, rem_scores, rem_classes = boxes[remaining], scores[remaining].clone(), idxs[remaining]
    keep, new_scores = [], []
    while remaining.numel() > 0 and len(keep) < limit:
        pick = int(torch.argmax(rem_scores))  # the first of equal maxima
        keep.append(remaining[pick])
        new_scores.append(rem_scores[pick])
        iou = box_iou(rem_boxes[pick : pick + 1], rem_boxes)[0]
        iou = torch.where(rem_classes == rem_classes[pick], iou.nan_to_num(0.0), torch.zeros_like(iou))
        rem_scores = rem_scores * soft_nms_decay(iou, method, sigma, iou_threshold).to(rem_scores.dtype)
        survive = rem_scores >= score_threshold
        survive[pick] = False
        remaining, rem_boxes = remaining[survive], rem_boxes[survive]
        rem_scores, rem_classes = rem_scores[survive], rem_classes[survive]
    if not keep:
        return torch.zeros(0, dtype=torch.int64, device=boxes.device), scores.new_zeros(0)
    return torch.stack(keep), torch.stack(new_scores)
