"""Pieces of the training entry point (``train_net.py``) that are worth testing on their own."""
from .checkpoint import SafeCheckpointer
from .config import TEST_DEFAULTS, add_test_defaults, apply_overrides_strict, check_train_settings
from .device import select_device
from .hooks import PeakMemory
from .optim import add_gradient_clipping
from .provenance import write_provenance
from .results import save_eval_results
from .schedules import warmup_multistep
from .trainer import CheckedAMPTrainer, CheckedSimpleTrainer

__all__ = [
    "add_gradient_clipping", "PeakMemory", "write_provenance",
    "SafeCheckpointer", "CheckedAMPTrainer", "CheckedSimpleTrainer",
    "TEST_DEFAULTS", "add_test_defaults", "apply_overrides_strict", "check_train_settings", "select_device", "save_eval_results", "warmup_multistep"]
