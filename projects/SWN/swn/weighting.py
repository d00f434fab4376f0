"""How a detector uses the SWN's outputs: which losses are weighted, the loss form, the averaging
rule of m_cls and the regulariser; plus the per-iteration logging.

:class:`SWNConfig` is the one place where the switches meet the math of :mod:`swn.loss`: every
head (dense, RoI, mask) and the analysis tools call :meth:`SWNConfig.weights` and
:meth:`SWNConfig.regulariser`.
"""
import warnings
from dataclasses import dataclass
from typing import NamedTuple, Optional

import torch
from detectron2.utils.events import get_event_storage
from torch import Tensor

from .loss import CLS_AVERAGES, FORMS, average_m, sample_weights, swn_regulariser

__all__ = ["SWNConfig", "SWNWeighting", "SampleWeights", "log_weights"]


class SampleWeights(NamedTuple):
    """What the switches make of the SWN's output for one batch of S samples, P of them positive."""

    m_cls: Tensor  # (S,) m of the classification loss, after averaging (0: unweighted / SWN off)
    m_reg: Tensor  # (P,) m of the positives' box losses
    cls: Tensor  # (S,) classification loss weights
    reg: Tensor  # (P,) box loss weights
    m_mask: Optional[Tensor] = None  # (P,) Mask R-CNN's third task
    mask: Optional[Tensor] = None  # (P,) mask loss weights


def _mean(x: Tensor) -> Tensor:
    return x.mean() if x.numel() > 0 else x.new_zeros(())


@dataclass
class SWNConfig:
    """Switches of the SWN loss (defaults: the authors' reference code).

    Attributes:
        enabled: False is the "SWN off" control: m = 0 (all weights 1) and no regulariser.
        weight_cls, weight_reg: weight the classification / regression loss (paper Table 4:
            CLS-only, REG-only). An unweighted task has m = 0 and no regulariser term.
        lam: the regulariser's lambda (paper Table 5; 0.5).
        form: "exp(-m)" (code: loss * exp(-m) + lam * m) or "exp(-2m)" (paper).
        cls_average: "all" (dense heads, code: m_cls replaced by its mean over all samples),
            "pos_neg" (RoI heads, code: means over positives and over negatives separately) or
            "none" (each sample its own m_cls, an ablation; the regulariser is then lam * mean(m_cls)
            over all samples).
        samples: the samples of a dense head the SWN runs on: "all" (reference RetinaNet: every
            anchor, also the ones the matcher ignores, whose four inputs are 0; they count in
            mean(m_cls) and its regulariser) or "valid" (ignored anchors left out). RoI heads have
            no ignored samples; there both are the same.
        detach_inputs: "all" (the four SWN inputs carry no gradient into the detector: the
            reference Faster R-CNN, and this project's default for every head) or "losses" (the
            reference RetinaNet: only the loss inputs are detached, IoU and probability are not, so
            the SWN loss also back-propagates into the head's logits and deltas).
    """

    enabled: bool = True
    weight_cls: bool = True
    weight_reg: bool = True
    lam: float = 0.5
    form: str = "exp(-m)"
    cls_average: str = "all"
    samples: str = "all"
    detach_inputs: str = "all"

    def __post_init__(self):
        if not self.lam >= 0:  # also NaN
            raise ValueError(
                f"SWNConfig.lam (model.weighting.lam, or ...box_predictor.weighting.lam) must be >= 0, got "
                f"{self.lam}: the regulariser lam * m keeps the learned weights exp(-m) from growing without "
                "bound; a negative lam rewards large weights. The paper and code use 0.5."
            )
        if self.samples not in ("all", "valid"):
            raise ValueError(f"SWNConfig.samples must be 'all' or 'valid', got {self.samples!r}")
        if self.detach_inputs not in ("all", "losses"):
            raise ValueError(f"SWNConfig.detach_inputs must be 'all' or 'losses', got {self.detach_inputs!r}")
        if self.form not in FORMS:
            raise ValueError(f"SWNConfig.form must be one of {FORMS}, got {self.form!r}")
        if self.cls_average not in CLS_AVERAGES:
            raise ValueError(f"SWNConfig.cls_average must be one of {CLS_AVERAGES}, got {self.cls_average!r}")

    def weights(
        self, m: Optional[Tensor], pos: Tensor, cls_loss: Tensor, reg_loss: Tensor, mask_loss: Optional[Tensor] = None
    ) -> SampleWeights:
        """The per-sample loss weights of one batch.

        Args:
            m: (S, T) the SWN's output (T = 2, or 3 with a mask task), or None when the SWN did not
                run (switched off).
            pos: (S,) bool, the positive samples (P of them).
            cls_loss, reg_loss, mask_loss: the losses to be weighted ((S,), (P, ...), (P,)); only
                their dtype and device are used, for the zeros of unweighted tasks.

        Returns:
            :class:`SampleWeights`: ``m_cls`` averaged by ``cls_average`` (dense heads: "all";
            RoI heads: "pos_neg"), ``m_reg`` (and ``m_mask``) per positive; an unweighted task
            (``weight_cls`` / ``weight_reg`` False) or a switched-off SWN has ``m = 0``, weight 1.
            The mask task has no switch of its own: it is weighted whenever the SWN is on.
        """
        num_samples, num_pos = pos.shape[0], int(pos.sum())
        if m is not None and self.enabled:
            m_cls = average_m(m[:, 0], pos, self.cls_average) if self.weight_cls else m.new_zeros(num_samples)
            m_reg = m[pos, 1] if self.weight_reg else m.new_zeros(num_pos)
            m_mask = m[pos, 2] if mask_loss is not None else None
        else:
            m_cls, m_reg = cls_loss.new_zeros(num_samples), reg_loss.new_zeros(num_pos)
            m_mask = mask_loss.new_zeros(mask_loss.shape) if mask_loss is not None else None
        return SampleWeights(
            m_cls=m_cls,
            m_reg=m_reg,
            cls=sample_weights(m_cls, self.form),
            reg=sample_weights(m_reg, self.form),
            m_mask=m_mask,
            mask=None if m_mask is None else sample_weights(m_mask, self.form),
        )

    def regulariser(self, weights: SampleWeights, pos: Tensor) -> Tensor:
        """``lam`` times the mean of m over each group: m_cls over all samples ("all", "none") or
        over positives and negatives separately ("pos_neg"), m_reg (and m_mask) over positives; only
        the weighted tasks of an enabled SWN (else 0).

        Args:
            weights: :meth:`weights` of the batch; pos: (S,) bool.
        """
        groups = []
        if self.enabled and self.weight_cls:
            m_cls = weights.m_cls
            groups += [m_cls[pos], m_cls[~pos]] if self.cls_average == "pos_neg" else [m_cls]
        if self.enabled and self.weight_reg:
            groups.append(weights.m_reg)
        if self.enabled and weights.m_mask is not None:
            groups.append(weights.m_mask)
        return swn_regulariser(groups, self.lam) if groups else weights.m_cls.new_zeros(())


class SWNWeighting(SWNConfig):
    """The former name of :class:`SWNConfig` (renamed to match ``clean_anchors.CleanlinessConfig``);
    it still works, with a ``DeprecationWarning``."""

    def __post_init__(self):
        warnings.warn(
            "swn.SWNWeighting is now swn.SWNConfig (the same switches); the old name will be removed",
            DeprecationWarning,
            stacklevel=3,
        )
        super().__post_init__()


def log_weights(weights: SampleWeights, pos: Tensor, prefix: str = "swn") -> None:
    """Mean classification weight of positives / negatives, mean regression (and mask) weight, and
    mean/min/max of m per task, into the EventStorage."""
    with torch.no_grad():
        scalars = {
            f"{prefix}/cls_weight_pos": _mean(weights.cls[pos]).item(),
            f"{prefix}/cls_weight_neg": _mean(weights.cls[~pos]).item(),
            f"{prefix}/reg_weight": _mean(weights.reg).item(),
        }
        if weights.mask is not None:
            scalars[f"{prefix}/mask_weight"] = _mean(weights.mask).item()
        for task, m in (("cls", weights.m_cls), ("reg", weights.m_reg), ("mask", weights.m_mask)):
            if m is not None and m.numel() > 0:
                scalars.update(
                    {
                        f"{prefix}/m_{task}_mean": m.mean().item(),
                        f"{prefix}/m_{task}_min": m.min().item(),
                        f"{prefix}/m_{task}_max": m.max().item(),
                    }
                )
    get_event_storage().put_scalars(**scalars, smoothing_hint=False)
