"""The math of "Learning from Noisy Anchors for One-stage Object Detection" (Li et al., CVPR 2020)
as pure tensor functions: no Detectron2 object is needed to call them.

An anchor's *cleanliness* combines how well it localises (``loc_a``: IoU of its decoded predicted box
with its matched ground truth) and how confidently it classifies (``cls_c``: predicted probability of
the ground-truth class). It is used twice:

* as a soft classification target for the candidate (positive) anchors (:func:`soft_labels`), and
* through ``f(x) = 1 / (1 - x)`` as a sample re-weighting factor of both losses (:func:`reweight`).

Candidates are the ``n`` anchors with the highest IoU of each ground-truth box, without any IoU
threshold (:func:`topn_candidates`); every other anchor is background with target 0 and weight 1.
The classification loss is the reference code's soft-target focal loss (:func:`soft_focal_loss`).
"""
from typing import Callable, NamedTuple, Optional

import torch
import torch.nn.functional as F
from torch import Tensor

MATCHING = ("all_gts", "own_lists")

__all__ = [
    "MATCHING",
    "TopNCandidates",
    "topn_candidates",
    "topn_candidates_by_chunks",
    "soft_labels",
    "reweight",
    "soft_focal_loss",
    "rescale_to_sum",
]


class TopNCandidates(NamedTuple):
    """The candidates of one image, as returned by :func:`topn_candidates`."""

    matched: Tensor  # (A,) long: matched ground truth of each candidate, -1 for the other anchors
    num_lists: Tensor  # (A,) long: in how many ground truths' top-n lists each anchor is


def _check_matching(matching: str) -> None:
    if matching not in MATCHING:
        raise ValueError(f"candidate matching must be one of {MATCHING}, got {matching!r}")


def topn_candidates(iou: Tensor, n: int, matching: str = "all_gts") -> TopNCandidates:
    """Assign each ground truth its ``n`` highest-IoU anchors.

    Args:
        iou: (G, A) IoU between the G ground-truth boxes and the A anchors of one image.
        n: number of candidates per ground truth (the paper's N; fewer if A < n). Where anchors tie
            at the n-th place, which of them is listed is ``topk``'s choice (the authors' ``argsort``
            may choose another: their order is undefined too).
        matching: which ground truth a candidate is matched to:
            ``"all_gts"`` (the authors' ``MatcherTopN``): the one with the highest IoU among *all*
            ground truths of the image, like Detectron2's ``Matcher``, even one whose top-n list
            does not contain the anchor; ``"own_lists"``: the best among the ground truths whose
            lists contain it. Ties go to the lower index in both.

    Returns:
        :class:`TopNCandidates`: ``matched`` (A,), -1 for anchors in no list, and ``num_lists``
        (A,), the multiplicity of each anchor in the authors' (ground truth, anchor) pair list.
    """
    _check_matching(matching)
    num_gt, num_anchors = iou.shape
    matched = torch.full((num_anchors,), -1, dtype=torch.long, device=iou.device)
    if num_gt == 0 or num_anchors == 0 or n <= 0:
        return TopNCandidates(matched, torch.zeros_like(matched))
    top = iou.topk(min(n, num_anchors), dim=1).indices  # (G, n)
    in_list = torch.zeros_like(iou, dtype=torch.bool).scatter_(1, top, True)
    num_lists = in_list.sum(dim=0)  # (A,)
    if matching == "all_gts":
        best_gt = iou.argmax(dim=0)
    else:
        best_gt = torch.where(in_list, iou, iou.new_tensor(-1.0)).argmax(dim=0)  # (A,)
    return TopNCandidates(torch.where(num_lists > 0, best_gt, matched), num_lists)


def topn_candidates_by_chunks(
    gt_boxes: Tensor,
    anchors: Tensor,
    n: int,
    pairwise_iou: Callable[[Tensor, Tensor], Tensor],
    matching: str = "all_gts",
    max_elements: int = 1 << 24,
) -> TopNCandidates:
    """``topn_candidates(pairwise_iou(gt_boxes, anchors), n, matching)``, bit for bit, without ever
    holding the IoUs of more than ``max_elements`` (ground truth, anchor) pairs.

    The ground truths are taken in chunks of ``max_elements // A`` (in one piece when they fit, the
    usual case: 16.7M pairs are 83 boxes at 800x1333 with RetinaNet's 201,600 anchors). Each chunk's
    top-n lists are its rows' own, so list memberships add up over chunks; an anchor keeps the
    chunk's best (listed, for ``"own_lists"``) ground truth if its IoU is strictly higher than that
    of the earlier chunks, so ties go to the lower index as in the single-matrix ``argmax``. IoUs
    are elementwise, hence the same in any chunk. Without chunks a crowded image needs several
    G x A matrices at once (Detectron2's ``pairwise_iou`` alone makes four G x A x 2
    intermediates: about 4.6 GB for 1000 boxes at 800x1333).

    Args:
        gt_boxes: (G, 4) ground-truth boxes; anchors: (A, 4).
        n: candidates per ground truth.
        pairwise_iou: (g, 4), (A, 4) -> (g, A) IoU, e.g. Detectron2's ``pairwise_iou`` on Boxes.
        matching: as in :func:`topn_candidates`.
        max_elements: pairs per chunk.

    Returns:
        :class:`TopNCandidates` as :func:`topn_candidates`.
    """
    _check_matching(matching)
    num_gt, num_anchors = gt_boxes.shape[0], anchors.shape[0]
    rows = max(1, max_elements // max(num_anchors, 1))
    best_gt = torch.full((num_anchors,), -1, dtype=torch.long, device=anchors.device)
    num_lists = torch.zeros_like(best_gt)
    if n <= 0 or num_gt == 0:
        return TopNCandidates(best_gt, num_lists)
    if num_gt <= rows:
        return topn_candidates(pairwise_iou(gt_boxes, anchors), n, matching)
    best_iou = None
    for start in range(0, num_gt, rows):  # a loop over chunks of ground truths, never over boxes
        iou = pairwise_iou(gt_boxes[start : start + rows], anchors)  # (g, A)
        top = iou.topk(min(n, num_anchors), dim=1).indices
        in_list = torch.zeros_like(iou, dtype=torch.bool).scatter_(1, top, True)
        num_lists += in_list.sum(dim=0)
        if matching == "own_lists":
            iou = torch.where(in_list, iou, iou.new_tensor(-1.0))  # -1 where in no list of the chunk
        del in_list
        chunk_gt = iou.argmax(dim=0)  # (A,), argmax's tie rule as in topn_candidates
        chunk_iou = iou.gather(0, chunk_gt[None]).squeeze(0)
        del iou
        if best_iou is None:
            best_iou = torch.full_like(chunk_iou, -1.0)
        better = chunk_iou > best_iou  # strict: on equal IoU the earlier ground truth stays
        best_iou = torch.where(better, chunk_iou, best_iou)
        best_gt = torch.where(better, chunk_gt + start, best_gt)
    return TopNCandidates(torch.where(num_lists > 0, best_gt, best_gt.new_tensor(-1)), num_lists)


def at_least_float32(*tensors: Tensor):
    """The tensors in float32, or in float64 when they are; half-precision inputs (AMP) would
    overflow or round the method's sums and 1 - eps to inf / 1."""
    return tuple(t.to(torch.promote_types(t.dtype, torch.float32)) for t in tensors)


def _mean(x: Tensor, counts: Optional[Tensor]) -> Tensor:
    """Mean of ``x`` where element i counts ``counts[i]`` times (plain mean for None)."""
    if counts is None:
        return x.mean()
    counts = counts.to(x.dtype)
    return (x * counts).sum() / counts.sum()


def soft_labels(
    loc_a: Tensor,
    cls_c: Tensor,
    loc_weight: float,
    mode: str = "official",
    eps: float = 1e-6,
    counts: Optional[Tensor] = None,
) -> Tensor:
    """Cleanliness soft labels of one image's (or one batch's) positive anchors.

    Args:
        loc_a: (P,) localisation accuracy in [0, 1] of the positives.
        cls_c: (P,) classification confidence in [0, 1] of the positives.
        loc_weight: weight of localisation, the paper's alpha (Eq. 3; Algorithm 1 has the two
            swapped; ``CleanlinessConfig.alpha``). Not the focal loss alpha.
        mode: ``"official"`` (the authors' code): divide ``loc_a`` and ``cls_c`` by their own means,
            combine as ``loc_weight * loc + (1 - loc_weight) * cls``, then min-max rescale to
            ``[mean(loc_a), 1]``, so the cleanest positive gets target 1; when all combined scores
            are equal (one positive, say) every target is 1.
            ``"paper"``: ``loc_weight * loc_a + (1 - loc_weight) * cls_c`` (Eq. 3 as written).
        counts: (P,) how many times each positive counts in the means (the authors' code keeps
            (ground truth, anchor) pairs: an anchor in k top-N lists counts k times); None: once.
            Min and max do not depend on it.

    Returns:
        (P,) soft targets in [0, 1].
    """
    loc_a, cls_c = at_least_float32(loc_a, cls_c)  # half precision: see reweight
    if mode == "paper":
        return loc_weight * loc_a + (1 - loc_weight) * cls_c
    if mode != "official":
        raise ValueError(f"soft_labels: mode must be 'official' or 'paper', got {mode!r}")
    if loc_a.numel() == 0:
        return loc_a.clone()
    floor = _mean(loc_a, counts)
    combined = loc_weight * loc_a / floor.clamp_min(eps) + (1 - loc_weight) * cls_c / _mean(cls_c, counts).clamp_min(eps)
    low, high = combined.min(), combined.max()
    span = high - low
    if span <= eps:
        return torch.ones_like(combined)
    return floor + (combined - low) / span * (1 - floor)


def reweight(
    loc_a: Tensor,
    cls_c: Tensor,
    loc_weight: float,
    gamma: float = 1.0,
    eps: float = 1e-6,
    counts: Optional[Tensor] = None,
) -> Tensor:
    """Re-weighting factors of positive anchors (paper Eq. 4, with the code's normalisation).

    ``f(x) = 1 / (1 - x)`` with ``x`` clamped to ``[0, 1 - eps]`` (the reference code has no clamp and
    gives infinity for a perfect IoU or probability); each f-term is divided by its mean;
    ``r = (loc_weight * f(loc_a) + (1 - loc_weight) * f(cls_c)) ** gamma``, renormalised to mean 1 (a no-op
    up to rounding for the code's gamma = 1).

    Args:
        loc_a, cls_c: (P,) in [0, 1].
        loc_weight: weight of localisation, the paper's alpha (``CleanlinessConfig.alpha``).
        gamma: the re-weighting exponent (not the focal loss gamma).
        counts: (P,) multiplicity of each positive in every mean, as in :func:`soft_labels`.
    Returns:
        (P,) positive weights with mean 1 (weighted by ``counts``; empty in, empty out).
    """
    # At least float32: in half precision 1 - eps rounds to 1 and f(1) is infinite.
    loc_a, cls_c = at_least_float32(loc_a, cls_c)
    if loc_a.numel() == 0:
        return loc_a.clone()

    def f(x):
        return 1.0 / (1.0 - x.clamp(0.0, 1.0 - eps))

    f_loc, f_cls = f(loc_a), f(cls_c)
    r = (loc_weight * f_loc / _mean(f_loc, counts) + (1 - loc_weight) * f_cls / _mean(f_cls, counts)) ** gamma
    return r / _mean(r, counts)


def soft_focal_loss(logits: Tensor, soft_targets: Tensor, alpha: float = 0.5, gamma: float = 2.0) -> Tensor:
    """The reference code's focal loss with soft targets ``s`` in [0, 1], reduction "none":

        -alpha * s * (1 - p)^gamma * log(p) - (1 - alpha) * (1 - s) * p^gamma * log(1 - p),  p = sigmoid(x)

    With ``s`` in {0, 1} it equals ``fvcore.nn.sigmoid_focal_loss``. Its minimiser is *not* ``p = s``
    (unlike Quality Focal Loss). ``log p`` and ``log(1 - p)`` are computed from the logits
    (``-softplus(-x)``, ``-softplus(x)``), so the loss is finite for any finite logit.

    Args:
        logits, soft_targets: tensors of the same shape.
    Returns:
        loss of that shape.
    """
    p = torch.sigmoid(logits)
    pos = alpha * soft_targets * (1 - p).pow(gamma) * F.softplus(-logits)
    neg = (1 - alpha) * (1 - soft_targets) * p.pow(gamma) * F.softplus(logits)
    return pos + neg


def rescale_to_sum(weighted: Tensor, unweighted: Tensor, eps: float = 1e-12) -> Tensor:
    """Scale ``weighted`` losses so that their sum equals the sum of ``unweighted`` ones (the
    reference code keeps each loss's total unchanged by re-weighting). The factor is a constant."""
    # at least float32: two half-precision sums of many losses overflow to inf / inf = NaN
    weighted, unweighted = at_least_float32(weighted, unweighted)
    factor = unweighted.detach().sum() / weighted.detach().sum().clamp_min(eps)
    return weighted * factor
