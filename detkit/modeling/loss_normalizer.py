"""RetinaNet's loss normaliser from the positive anchors of all processes: an option for DDP.

Detectron2's RetinaNet divides both losses by an EMA of the number of positive anchors,
``E_t = 0.9 E_{t-1} + 0.1 max(P_t, 1)`` with ``E_0 = 100`` (``DenseDetector._ema_update(
"loss_normalizer", ...)``, also used by detkit's ``loss_normalizer`` (``dense_labels.py``) of CleanAnchorsRetinaNet
and SWNRetinaNet). Each process keeps its own EMA of its own ``P_t``. With ``W`` DDP processes,
which average their gradients, the objective is ``(1/W) sum_r S_r / E_r`` (``S_r``: the loss sum
of process ``r``), not the one-process objective ``S / E`` of the same total batch
(``S = sum_r S_r``, ``E`` the EMA of ``P = sum_r P_r``): per-process losses are not a
decomposition of the global loss, and a 2-process run with 2 images each trains differently from
a 1-process run with 4 images (most at the start, where every ``E_r`` is near 100 while its
``P_r`` is half of ``P``).

:class:`GlobalLossNormalizer` all-reduces the count (one scalar collective per iteration), keeps
the one-process EMA ``E`` of the total on every process, and divides each process's loss sum by
``E / W``. Then the DDP average ``(1/W) sum_r S_r / (E / W) = S / E`` is exactly the one-process
loss, and so are the gradients: with deterministic data, ``W`` processes x ``B`` images give the
same losses as 1 process x ``W*B`` images (up to floating-point summation order). With one
process it computes exactly what Detectron2 does. One difference remains with Detectron2's count
``max(P_r, 1)``: a process whose images have no positive anchor counts 1, so ``P`` is then
over-counted by one per such process (the raw count of ``loss_normalizer(normalizer="ema_raw")``,
the NoisyAnchor code's, has no such term).

LazyConfig: ``model._target_ = GlobalNormalizerRetinaNet`` (stock RetinaNet plus the option, on by
default; every RetinaNet baseline config of this project), or mix :class:`GlobalLossNormalizer`
into another ``DenseDetector`` subclass, as ``CleanAnchorsRetinaNet`` and ``SWNRetinaNet`` do
(``class X(GlobalLossNormalizer, RetinaNet)``); ``model.global_loss_normalizer=False`` switches
back to Detectron2's per-process count. ``detkit.modeling.dense_labels.loss_normalizer`` computes the normaliser
of the projects' ``losses`` through the same ``_ema_update``.
"""
from typing import Optional, Tuple

import torch
import torch.distributed as dist
from detectron2.modeling.meta_arch import RetinaNet
from detectron2.utils import comm

__all__ = ["GlobalLossNormalizer", "GlobalNormalizerRetinaNet", "global_ema_normalizer", "sum_over_processes"]


def global_ema_normalizer(
    previous: Optional[float], total: float, world_size: int, initial_value: float, momentum: float = 0.9
) -> Tuple[float, float]:
    """One EMA step of the all-process count.

    Args:
        previous: the EMA so far (None before the first step, then ``initial_value`` is used).
        total: this step's count summed over all processes.
        world_size: number of processes W.

    Returns:
        (the new EMA of the total, the normaliser of each process's own loss sum = EMA / W).
    """
    old = initial_value if previous is None else previous
    new = old * momentum + total * (1 - momentum)
    return new, new / world_size


def sum_over_processes(value: float, device: torch.device) -> float:
    """``value`` summed over the DDP processes (itself with one process); a float64 all-reduce on
    ``device`` (the model's: NCCL needs CUDA tensors)."""
    if comm.get_world_size() == 1:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return float(t.item())


class GlobalLossNormalizer:
    """Mixin for ``DenseDetector`` subclasses: ``loss_normalizer`` from the positive count of all
    processes (module docstring). Put it before the detector class in the bases.

    Args:
        global_loss_normalizer: use the all-process count (True) or Detectron2's per-process EMA.
    """

    def __init__(self, *args, global_loss_normalizer: bool = True, **kwargs):
        super().__init__(*args, **kwargs)
        self.global_loss_normalizer = global_loss_normalizer

    def _ema_update(self, name: str, value: float, initial_value: float, momentum: float = 0.9):
        if name != "loss_normalizer" or not self.global_loss_normalizer:
            return super()._ema_update(name, value, initial_value, momentum)
        total = sum_over_processes(value, self.device)
        new, per_process = global_ema_normalizer(
            getattr(self, name, None), total, comm.get_world_size(), initial_value, momentum
        )
        setattr(self, name, new)
        return per_process


class GlobalNormalizerRetinaNet(GlobalLossNormalizer, RetinaNet):
    """Detectron2's RetinaNet whose loss normaliser counts the positives of all DDP processes
    (identical to RetinaNet in one process)."""
