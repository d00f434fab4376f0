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
    return WarmupParamScheduler(
        steps_scheduler,
        warmup_factor=warmup_factor,
        warmup_length=min(warmup_iters, max_iter - 1) / max_iter,  # must end inside the run
        warmup_method="linear",
    )
