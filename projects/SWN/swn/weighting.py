"""How a detector uses the SWN's outputs: which losses are weighted, the loss form, the averaging
rule of m_cls and the regulariser; plus the per-iteration logging."""
from dataclasses import dataclass

import torch
from detectron2.utils.events import get_event_storage
from torch import Tensor

from .loss import swn_regulariser

__all__ = ["SWNWeighting", "log_weights"]


def _mean(x: Tensor) -> Tensor:
    return x.mean() if x.numel() > 0 else x.new_zeros(())


@dataclass
class SWNWeighting:
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
                f"SWNWeighting.lam (model.weighting.lam, or ...box_predictor.weighting.lam) must be >= 0, got "
                f"{self.lam}: the regulariser lam * m keeps the learned weights exp(-m) from growing without "
                "bound; a negative lam rewards large weights. The paper and code use 0.5."
            )
        if self.samples not in ("all", "valid"):
            raise ValueError(f"SWNWeighting.samples must be 'all' or 'valid', got {self.samples!r}")
        if self.detach_inputs not in ("all", "losses"):
            raise ValueError(f"SWNWeighting.detach_inputs must be 'all' or 'losses', got {self.detach_inputs!r}")
        if self.form not in ("exp(-m)", "exp(-2m)"):
            raise ValueError(f"SWNWeighting.form must be 'exp(-m)' or 'exp(-2m)', got {self.form!r}")
        if self.cls_average not in ("all", "pos_neg", "none"):
            raise ValueError(f"SWNWeighting.cls_average must be 'all', 'pos_neg' or 'none', got {self.cls_average!r}")

    def regulariser(self, m_cls: Tensor, m_reg: Tensor, pos_mask: Tensor, m_mask: Tensor = None) -> Tensor:
        """``lam`` times the mean of m over each group: m_cls over all samples ("all") or over
        positives and negatives separately ("pos_neg"), m_reg (and m_mask) over positives.

        Args:
            m_cls: (S,) after averaging; m_reg, m_mask: (P,) of the positives; pos_mask: (S,) bool.
        """
        groups = []
        if self.enabled and self.weight_cls:
            groups += [m_cls] if self.cls_average == "all" else [m_cls[pos_mask], m_cls[~pos_mask]]
        if self.enabled and self.weight_reg:
            groups.append(m_reg)
        if self.enabled and m_mask is not None:
            groups.append(m_mask)
        return swn_regulariser(groups, self.lam) if groups else m_cls.new_zeros(())


def log_weights(cls_weights, reg_weights, m_cls, m_reg, pos_mask, mask_weights=None, m_mask=None, prefix="swn"):
    """Mean classification weight of positives / negatives, mean regression weight, and
    mean/min/max of m per task, into the EventStorage."""
    with torch.no_grad():
        scalars = {
            f"{prefix}/cls_weight_pos": _mean(cls_weights[pos_mask]).item(),
            f"{prefix}/cls_weight_neg": _mean(cls_weights[~pos_mask]).item(),
            f"{prefix}/reg_weight": _mean(reg_weights).item(),
        }
        if mask_weights is not None:
            scalars[f"{prefix}/mask_weight"] = _mean(mask_weights).item()
        for task, m in (("cls", m_cls), ("reg", m_reg), ("mask", m_mask)):
            if m is not None and m.numel() > 0:
                scalars.update(
                    {
                        f"{prefix}/m_{task}_mean": m.mean().item(),
                        f"{prefix}/m_{task}_min": m.min().item(),
                        f"{prefix}/m_{task}_max": m.max().item(),
                    }
                )
    get_event_storage().put_scalars(**scalars, smoothing_hint=False)
