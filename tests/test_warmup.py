"""detkit.engine.warmup_multistep: the warmup ends before the first lr step, and the schedules of
the demo / study runs (400, 500 iterations) are what they were before that fix."""
import pytest
from detectron2.solver import WarmupParamScheduler
from fvcore.common.param_scheduler import MultiStepParamScheduler

from detkit.engine import warmup_multistep


def _before_the_fix(max_iter, step=0.8, warmup_iters=100, warmup_factor=0.001):
    """The schedule as warmup_multistep built it before the fix (warmup ended at min(100, max_iter - 1))."""
    milestone = int(round(step * max_iter))
    return WarmupParamScheduler(
        MultiStepParamScheduler(values=[1.0, 0.1], milestones=[milestone], num_updates=max_iter),
        warmup_factor=warmup_factor,
        warmup_length=min(warmup_iters, max_iter - 1) / max_iter,
        warmup_method="linear",
    )


def _curve(sched, max_iter):
    return [float(sched(i / max_iter)) for i in range(max_iter + 1)]  # + the call after the last iteration


@pytest.mark.parametrize("max_iter", [400, 500, 1000])
def test_long_runs_are_unchanged_at_every_iteration(max_iter):
    new = _curve(warmup_multistep(max_iter, steps=(0.8,), warmup_iters=100), max_iter)
    assert new == _curve(_before_the_fix(max_iter), max_iter)  # exactly: no training number changes
    step = int(round(0.8 * max_iter))
    assert new[0] == pytest.approx(0.001) and new[100] == 1.0 and new[step - 1] == 1.0
    assert new[step:] == pytest.approx([0.1] * (max_iter + 1 - step))


@pytest.mark.parametrize("max_iter", [20, 60, 100, 125, 126])
def test_short_runs_reach_the_base_lr_before_the_step(max_iter):
    step = int(round(0.8 * max_iter))
    lr = _curve(warmup_multistep(max_iter, steps=(0.8,), warmup_iters=100), max_iter)
    assert max(lr[:step]) == pytest.approx(1.0) and lr[step - 1] == pytest.approx(1.0)
    assert lr[0] == pytest.approx(0.001)
    assert all(b >= a for a, b in zip(lr[:step - 1], lr[1:step]))  # a ramp up to the step
    assert lr[step:] == pytest.approx([0.1] * (max_iter + 1 - step))
    if max_iter <= 125:  # what the old schedule did: ramp toward the stepped value, peak 0.1
        assert max(_curve(_before_the_fix(max_iter), max_iter)) == pytest.approx(0.1)


def test_without_steps_the_warmup_keeps_its_length():
    lr = _curve(warmup_multistep(300, steps=(), warmup_iters=100), 300)
    assert lr[50] == pytest.approx(0.001 + 0.5 * 0.999) and lr[100:] == pytest.approx([1.0] * 201)
