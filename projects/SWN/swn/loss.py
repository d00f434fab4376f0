"""The uncertainty-weighted loss of SWN (Cai et al., CVPR 2020, Eq. 9) as pure tensor functions.

The network (:class:`swn.network.SampleWeightingNetwork`) predicts per sample and per task a
log-variance ``m``. A task loss ``L_i`` becomes ``w(m_i) * L_i`` with ``w(m) = exp(-m)`` (reference
code, the default) or ``exp(-2m)`` (paper, Eq. 9), plus a regulariser ``lam * m`` (``lam = 0.5``) that
keeps ``m`` from growing without bound.

How a detector head puts them together (defaults follow the reference code; the heads do it
through :class:`swn.weighting.SWNConfig`, the one place that applies the switches)::

    m = swn(loss_cls, loss_reg, iou, prob)                     # (S, 2)
    m_cls = average_m(m[:, 0], pos, "all")                     # dense heads; "pos_neg" for RoI heads
    w_cls = sample_weights(m_cls)                              # (S,)
    w_reg = sample_weights(m[pos, 1])                          # (P,)
    loss_cls = weighted_sum(loss_cls, w_cls) / normaliser      # the stock head's normaliser, unchanged
    loss_reg = weighted_sum(loss_reg[pos], w_reg) / normaliser
    loss_swn = swn_regulariser([m_cls, m[pos, 1]], lam)        # RoI heads: m_cls over pos and neg apart
"""
from typing import Optional, Sequence

import torch
from torch import Tensor

__all__ = [
    "FORMS",
    "CLS_AVERAGES",
    "sample_weights",
    "weighted_sum",
    "average_m",
    "swn_regulariser",
]

#: The loss forms: ``w(m) = exp(-m)`` (reference code) or ``exp(-2m)`` (paper, Eq. 9).
FORMS = ("exp(-m)", "exp(-2m)")
#: The averaging rules of m_cls (see :func:`average_m`).
CLS_AVERAGES = ("all", "pos_neg", "none")


def _safe_mean(x: Tensor) -> Tensor:
    """Mean of all elements; 0 (not NaN) for an empty tensor, still attached to the graph."""
    return x.sum() / max(x.numel(), 1)


def sample_weights(m: Tensor, form: str = "exp(-m)") -> Tensor:
    """Loss weights from predicted log-variances.

    Args:
        m: (...) log-variances, any shape.
        form: ``"exp(-m)"`` (reference code) or ``"exp(-2m)"`` (paper, Eq. 9).

    Returns:
        Tensor of the same shape as ``m``: the factor that multiplies each sample's loss.
    """
    if form == "exp(-m)":
        return torch.exp(-m)
    if form == "exp(-2m)":
        return torch.exp(-2.0 * m)
    raise ValueError(f"sample_weights: form must be one of {FORMS}, got {form!r}")


def weighted_sum(loss: Tensor, weights: Tensor) -> Tensor:
    """``sum_i weights_i * loss_i``: where per-sample weights meet the reduction (every weighted SWN
    loss is this sum divided by the stock detector's normaliser).

    Args:
        loss: (S,) or (S, *) per-sample losses, e.g. (S, 4) per-coordinate smooth-L1; every element of
            row ``i`` is multiplied by ``weights[i]``.
        weights: (S,) e.g. :func:`sample_weights` of the samples' ``m``.

    Returns:
        A scalar (0 for no samples).
    """
    if weights.dim() != 1 or loss.dim() < 1 or loss.shape[0] != weights.shape[0]:
        raise ValueError(
            f"weighted_sum: expected loss (S,) or (S, *) and weights (S,), got "
            f"{tuple(loss.shape)} and {tuple(weights.shape)}"
        )
    return (weights.reshape(weights.shape + (1,) * (loss.dim() - 1)) * loss).sum()


def average_m(m: Tensor, pos_mask: Optional[Tensor], rule: str) -> Tensor:
    """Replace per-sample ``m`` by group means (the reference code does this for m_cls only).

    Args:
        m: (S,) log-variances of one task (in practice m_cls) over the whole batch.
        pos_mask: (S,) bool, True for positive samples; only used by ``"pos_neg"``.
        rule: ``"all"`` (dense heads, reference RetinaNet: one mean over all samples; without it
            training "could fail occasionally", says the author), ``"pos_neg"`` (RoI heads, Sec. 3.3:
            positives get the mean over positives, negatives the mean over negatives) or ``"none"``
            (``m`` unchanged, for ablations).

    Returns:
        (S,) tensor (for ``"all"`` a broadcast view: do not modify it in place); gradient flows to
        every ``m_i`` through the mean of its group. An empty group produces no NaN (it has no
        members to receive its mean).
    """
    if m.dim() != 1:
        raise ValueError(f"average_m: expected m of shape (S,), got {tuple(m.shape)}")
    if rule == "none":
        return m
    if rule == "all":
        return _safe_mean(m).expand_as(m)
    if rule != "pos_neg":
        raise ValueError(f"average_m: rule must be one of {CLS_AVERAGES}, got {rule!r}")
    _check_mask(pos_mask, m, "average_m")
    zero = m.new_zeros(())
    n_pos = pos_mask.sum()
    mean_pos = torch.where(pos_mask, m, zero).sum() / n_pos.clamp_min(1)
    mean_neg = torch.where(pos_mask, zero, m).sum() / (m.numel() - n_pos).clamp_min(1)
    return torch.where(pos_mask, mean_pos, mean_neg)


def swn_regulariser(groups: Sequence[Tensor], lam: float = 0.5) -> Tensor:
    """``sum_g lam * mean(g)`` over the given groups of ``m``; an empty group adds 0.

    This is the reference code's version of Eq. 9's ``lambda * m`` terms: each task's ``m`` is
    averaged over its own group of samples rather than summed with the losses
    (:meth:`swn.weighting.SWNConfig.regulariser` chooses the groups).

    Args:
        groups: non-empty sequence of tensors of any shape (typically (N_g,) slices of ``m``).
        lam: regulariser weight (lambda).

    Returns:
        Scalar tensor, attached to the graph of every group (also the empty ones).
    """
    if len(groups) == 0:
        raise ValueError("swn_regulariser: need at least one group of m")
    return lam * torch.stack([_safe_mean(g) for g in groups]).sum()


def _check_mask(pos_mask: Optional[Tensor], m: Tensor, caller: str) -> None:
    if pos_mask is None or pos_mask.dtype != torch.bool or pos_mask.shape != m.shape:
        got = None if pos_mask is None else f"{pos_mask.dtype} {tuple(pos_mask.shape)}"
        raise ValueError(f"{caller}: pos_mask must be a bool tensor of shape {tuple(m.shape)}, got {got}")
