import math

import torch
from detectron2.solver.build import _generate_optimizer_class_with_gradient_clipping
from detectron2.utils.events import get_event_storage


def check_clip_max_norm(max_norm) -> None:
    """``train.clip_grad.max_norm`` must be a finite number > 0 (ValueError naming the key)."""
    if isinstance(max_norm, bool) or not isinstance(max_norm, (int, float)) or not (
        max_norm > 0 and math.isfinite(max_norm)
    ):
        raise ValueError(
            f"train.clip_grad.max_norm={max_norm!r}: the gradient-norm bound must be a finite number > 0 "
            "(0 would stop learning, a negative bound reverses the gradient). To train without clipping set "
            "train.clip_grad.enabled=False."
        )


def add_gradient_clipping(optimizer: torch.optim.Optimizer, max_norm: float, norm_type: float = 2.0):
    """Make ``optimizer.step()`` first clip the global gradient norm of all its parameters.

    Works in place on any optimizer instance (Detectron2's own class-swap, as in
    ``maybe_add_gradient_clipping`` for yacs configs). Under ``AMPTrainer`` the grad scaler unscales
    the gradients before calling ``step``, so the norm is the true one. The norm before clipping is
    logged as ``grad_norm``.
    """
    check_clip_max_norm(max_norm)

    def clip(params):
        norm = torch.nn.utils.clip_grad_norm_(list(params), max_norm, norm_type)
        try:
            get_event_storage().put_scalar("grad_norm", float(norm), smoothing_hint=False)
        except AssertionError:  # no EventStorage outside a trainer
            pass

    optimizer.__class__ = _generate_optimizer_class_with_gradient_clipping(
        type(optimizer), global_clipper=clip
    )
    return optimizer
