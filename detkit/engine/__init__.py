"""Pieces of the training entry point (``train_net.py``) that are worth testing on their own."""
from .config import apply_overrides_strict
from .device import select_device
from .optim import add_gradient_clipping
from .results import save_eval_results
from .schedules import warmup_multistep

__all__ = [
    "add_gradient_clipping",
    "apply_overrides_strict", "select_device", "save_eval_results", "warmup_multistep"]
