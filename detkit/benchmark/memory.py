"""Peak tensor memory on the CPU: the bytes a training step starts with (parameters, buffers,
gradients, optimizer state) and the peak of the live tensor bytes a call allocates, from
torch.profiler's memory events (the CPU counterpart of CUDA's ``max_memory_allocated``)."""
import itertools
from typing import Callable, Optional

import torch

MB = 2.0**20


def resident_bytes(model: torch.nn.Module, optimizer: Optional[torch.optim.Optimizer] = None) -> int:
    """Bytes of the CPU tensors a training step starts with: parameters, buffers, gradients and
    optimizer state (each storage counted once)."""
    tensors = list(model.parameters()) + list(model.buffers())
    tensors += [p.grad for p in model.parameters() if p.grad is not None]
    if optimizer is not None:
        for state in optimizer.state.values():
            tensors += [v for v in state.values() if isinstance(v, torch.Tensor)]
    storages = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in tensors if t.device.type == "cpu"}
    return sum(storages.values())


def profiled_peak_bytes(fn: Callable[[], None], before: Optional[Callable[[], None]] = None) -> int:
    """Peak of the live CPU tensor bytes allocated by ``fn()`` above what was live when it began,
    from torch.profiler's memory events (the CPU counterpart of CUDA's max_memory_allocated,
    restricted to the call).

    The CPU allocator reports a free only for blocks it saw allocated while profiling, so
    ``before()`` (e.g. the previous training step, which allocates the gradients that ``fn``
    frees) runs inside the same profile, un-measured.
    """
    from torch.profiler import ProfilerActivity, profile, record_function

    marker = "benchmark::measured"
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        if before is not None:
            before()
        with record_function(marker):
            fn()
    events = prof.profiler.kineto_results.events()
    span = [e for e in events if e.name() == marker]
    if len(span) != 1:
        raise RuntimeError(f"profiled_peak_bytes: expected one '{marker}' range, found {len(span)}")
    start, end = span[0].start_ns(), span[0].end_ns()
    inside = sorted(
        (e.start_ns(), e.nbytes())
        for e in events
        if e.name() == "[memory]" and start <= e.start_ns() <= end and "CPU" in str(e.device_type())
    )
    return max(0, max(itertools.accumulate((b for _, b in inside), initial=0)))
