"""The uncertainty-weighted loss of SWN (Cai et al., CVPR 2020, Eq. 9) as pure tensor functions.

The network (:class:`swn.network.SampleWeightingNetwork`) predicts per sample and per task a
log-variance ``m``. A task loss ``L_i`` becomes ``w(m_i) * L_i`` with ``w(m) = exp(-m)`` (reference
code, the default) or ``exp(-2m)`` (paper, Eq. 9), plus a regulariser ``lam * m`` (``lam = 0.5``) that
keeps ``m`` from growing without bound.

How a detector head puts them together (defaults follow the reference code)::

    m = swn(loss_cls, loss_reg, iou, prob)                # (S, 2)
    m_cls = average_m(m[:, 0], pos, "all")                # dense heads; "pos_neg" for RoI heads
    w_cls = sample_weights(m_cls)                         # (S,)
    w_reg = sample_weights(m[pos, 1])                     # (P,)
    loss_cls = (w_cls * loss_cls).sum() / normaliser      # the stock head's normaliser, unchanged
    loss_reg = (w_reg[:, None] * loss_reg[pos]).sum() / normaliser
    loss_swn = swn_regulariser(regulariser_groups(m, pos, "all"))
"""
from typing import List, Optional, Sequence, Tuple

import torch
from torch import Tensor

__all__ = [
    "sample_weights",
    "uncertainty_weighted_loss",
    "average_m",
    "regulariser_groups",
    "swn_regulariser",
]

_FORMS = ("exp(-m)", "exp(-2m)")
_RULES = ("all", "pos_neg", "none")


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
    raise ValueError(f"sample_weights: form must be one of {_FORMS}, got {form!r}")


def uncertainty_weighted_loss(
    loss: Tensor, m: Tensor, lam: float = 0.5, form: str = "exp(-m)"
) -> Tuple[Tensor, Tensor]:
    """Weight one task's per-sample losses by ``sample_weights(m)`` (Eq. 9, one task).

    Args:
        loss: (S,) or (S, *) per-sample loss, e.g. (S, 4) per-coordinate smooth-L1; every element of
            row ``i`` is weighted by ``m[i]``.
        m: (S,) log-variances of the same samples (raw or :func:`average_m`-ed).
        lam: regulariser weight (lambda; 0.5 in the paper and the code).
        form: see :func:`sample_weights`.

    Returns:
        ``(weighted_sum, regulariser)``, two scalars:
        ``weighted_sum = sum_i w(m_i) * loss_i`` (un-normalised: the caller divides it by the same
        normaliser the stock detector uses, e.g. the number of positives or of sampled RoIs), and
        ``regulariser = lam * mean(m)`` (0 for empty input). For the RoI heads' regulariser, which
        averages positives and negatives separately, use :func:`swn_regulariser` instead.
    """
    if m.dim() != 1 or loss.dim() < 1 or loss.shape[0] != m.shape[0]:
        raise ValueError(
            f"uncertainty_weighted_loss: expected loss (S,) or (S, *) and m (S,), got "
            f"{tuple(loss.shape)} and {tuple(m.shape)}"
        )
    w = sample_weights(m, form).reshape(m.shape + (1,) * (loss.dim() - 1))
    return (w * loss).sum(), lam * _safe_mean(m)


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
        raise ValueError(f"average_m: rule must be one of {_RULES}, got {rule!r}")
    _check_mask(pos_mask, m, "average_m")
    zero = m.new_zeros(())
    n_pos = pos_mask.sum()
    mean_pos = torch.where(pos_mask, m, zero).sum() / n_pos.clamp_min(1)
    mean_neg = torch.where(pos_mask, zero, m).sum() / (m.numel() - n_pos).clamp_min(1)
    return torch.where(pos_mask, mean_pos, mean_neg)


def regulariser_groups(m: Tensor, pos_mask: Tensor, cls_rule: str) -> List[Tensor]:
    """The groups of ``m`` whose means form the reference code's regulariser.

    Args:
        m: (S, T) network output (column 0 m_cls, 1 m_reg, 2 m_mask).
        pos_mask: (S,) bool, True for positive samples.
        cls_rule: the :func:`average_m` rule used for m_cls. ``"all"`` / ``"none"``: m_cls over all
            samples (dense heads); ``"pos_neg"``: m_cls over positives and over negatives (RoI heads).

    Returns:
        ``[m_cls groups..., m_reg[pos], (m_mask[pos])]``, to pass to :func:`swn_regulariser`:

        * dense heads: ``[m_cls, m_reg[pos]]``
          -> ``lam * mean(m_cls) + lam * mean_pos(m_reg)``
        * RoI heads: ``[m_cls[pos], m_cls[neg], m_reg[pos], (m_mask[pos])]``
          -> ``lam * (mean_pos(m_cls) + mean_neg(m_cls) + mean_pos(m_reg) (+ mean_pos(m_mask)))``
    """
    if m.dim() != 2:
        raise ValueError(f"regulariser_groups: expected m of shape (S, T), got {tuple(m.shape)}")
    _check_mask(pos_mask, m[:, 0], "regulariser_groups")
    if cls_rule == "pos_neg":
        groups = [m[pos_mask, 0], m[~pos_mask, 0]]
    elif cls_rule in ("all", "none"):
        groups = [m[:, 0]]
    else:
        raise ValueError(f"regulariser_groups: cls_rule must be one of {_RULES}, got {cls_rule!r}")
    return groups + [m[pos_mask, t] for t in range(1, m.shape[1])]


def swn_regulariser(groups: Sequence[Tensor], lam: float = 0.5) -> Tensor:
    """``sum_g lam * mean(g)`` over the given groups of ``m``; an empty group adds 0.

    This is the reference code's version of Eq. 9's ``lambda * m`` terms: each task's ``m`` is
    averaged over its own group of samples rather than summed with the losses. Build the groups by
    hand or with :func:`regulariser_groups`.

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
