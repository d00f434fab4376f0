"""Training hooks of ``train_net.py`` beyond Detectron2's own."""
import resource
import sys

import torch
from detectron2.engine import HookBase

PEAK_MEMORY_KEY = "peak_mem_mb"


def peak_memory_mb(device: str) -> float:
    """Peak memory of this process so far, in MiB: ``torch.cuda.max_memory_allocated`` on a CUDA
    device (what Detectron2 prints as ``max_mem``), the peak resident set size
    (``getrusage(RUSAGE_SELF).ru_maxrss``) on the CPU. The RSS covers the main process only, not
    data-loader workers."""
    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated(device) / 1024.0 / 1024.0
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # kilobytes on Linux, bytes on macOS
    return rss / (1024.0 * 1024.0) if sys.platform == "darwin" else rss / 1024.0


class PeakMemory(HookBase):
    """Puts ``peak_mem_mb`` (see :func:`peak_memory_mb`) into the trainer's ``EventStorage`` after
    every iteration, unsmoothed, so that each ``metrics.json`` line holds the peak up to that
    iteration. Place it before ``PeriodicWriter`` in the hook list so the value of the iteration
    being written is already there. The value never decreases within a process, also if
    something calls ``torch.cuda.reset_peak_memory_stats``."""

    def __init__(self, device: str = "cpu"):
        self._device = str(device)
        self._peak = 0.0

    def after_step(self):
        self._peak = max(self._peak, peak_memory_mb(self._device))
        self.trainer.storage.put_scalar(PEAK_MEMORY_KEY, self._peak, smoothing_hint=False)
