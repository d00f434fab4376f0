from typing import Sequence

from detectron2.solver import WarmupParamScheduler
from fvcore.common.param_scheduler import LinearParamScheduler, MultiStepParamScheduler


def warmup_multistep(
    max_iter: int,
    steps: Sequence[float] = (0.8,),
    gamma: float = 0.1,
    warmup_iters: int = 100,
    warmup_factor: float = 0.001,
) -> WarmupParamScheduler:
    """Linear warmup then step decay, with the steps given as fractions of ``max_iter``.

    Configs pass ``max_iter="${train.max_iter}"`` so that ``train.max_iter=N`` on the command line
    rescales the whole schedule (Detectron2's COCO schedules hard-code the iteration count).

    The warmup lasts ``warmup_iters`` iterations, but ends before the first step (at
    ``first_step - 1``, where the multiplier is 1.0) and inside the run: Detectron2's
    ``WarmupParamScheduler`` ramps toward the main schedule's value at the warmup's end, so a warmup
    reaching the step would ramp toward ``gamma`` and never use the base lr (runs of <= 125
    iterations at the CPU configs' 100-iteration warmup). Longer runs are unchanged.
    """
    max_iter = int(max_iter)
    # Steps must fall strictly inside (0, max_iter); very short runs (tests) may lose some.
    milestones = sorted({int(round(s * max_iter)) for s in steps} & set(range(1, max_iter)))
    if milestones:
        steps_scheduler = MultiStepParamScheduler(
            values=[gamma**i for i in range(len(milestones) + 1)],
            milestones=milestones,
            num_updates=max_iter,
        )
    else:
        steps_scheduler = LinearParamScheduler(1.0, 1.0)  # Constant... rejects where == 1.0
    # must end inside the run, and before the first step (else it ramps toward the stepped value)
    warmup_length = min([warmup_iters, max_iter - 1] + [m - 1 for m in milestones[:1]])
    return WarmupParamScheduler(
        steps_scheduler,
        warmup_factor=warmup_factor,
        warmup_length=warmup_length / max_iter,
        warmup_method="linear",
    )
