"""Pieces of the training entry point (``train_net.py``) that are worth testing on their own."""
from .checkpoint import SafeCheckpointer
from .config import (
    TEST_DEFAULTS,
    ConfigError,
    add_test_defaults,
    apply_overrides_strict,
    check_train_settings,
    load_checked_config,
)
from .device import select_device
from .hooks import PeakMemory
from .launch import leave_process_group_on_exit
from .logs import quiet_default_setup
from .optim import add_gradient_clipping
from .provenance import write_provenance
from .results import save_eval_results
from .schedules import warmup_multistep
from .trainer import CheckedAMPTrainer, CheckedSimpleTrainer

__all__ = [
    "add_gradient_clipping", "PeakMemory", "write_provenance",
    "SafeCheckpointer", "CheckedAMPTrainer", "CheckedSimpleTrainer",
    "TEST_DEFAULTS", "ConfigError", "load_checked_config", "add_test_defaults", "apply_overrides_strict", "check_train_settings", "select_device", "save_eval_results", "warmup_multistep", "quiet_default_setup",
    "leave_process_group_on_exit"]
