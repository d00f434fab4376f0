import logging

import torch

logger = logging.getLogger(__name__)


def select_device(requested: str) -> str:
    """The device to train on: ``requested`` (``train.device``, "cuda" in Detectron2's configs),
    or "cpu" when it asks for CUDA and no GPU is visible."""
    if requested.startswith("cuda") and not torch.cuda.is_available():
        logger.info(f"train.device={requested} but no CUDA GPU is available: running on the CPU.")
        return "cpu"
    return requested
