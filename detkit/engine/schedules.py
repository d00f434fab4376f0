from typing import Sequence

from detectron2.solver import WarmupParamScheduler
from fvcore.common.param_scheduler import MultiStepParamScheduler


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
    milestones = [max(1, int(round(s * max_iter))) for s in steps]
    return WarmupParamScheduler(
        MultiStepParamScheduler(
            values=[gamma**i for i in range(len(milestones) + 1)],
            milestones=milestones,
            num_updates=max_iter,
        ),
        warmup_factor=warmup_factor,
        warmup_length=min(1.0, warmup_iters / max(1, max_iter)),
        warmup_method="linear",
    )
