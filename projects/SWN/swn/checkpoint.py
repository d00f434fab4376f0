"""SWN checkpoints in stock Detectron2 models: the SWN exists only for training."""
import logging
from typing import Dict, List, Tuple

import torch

logger = logging.getLogger(__name__)


def is_swn_key(key: str) -> bool:
    """Whether a state-dict key belongs to a sample weighting network (a submodule named ``swn``)."""
    return key == "swn" or key.startswith("swn.") or ".swn." in key


def drop_swn_parameters(state_dict: Dict[str, torch.Tensor]) -> Tuple[Dict[str, torch.Tensor], List[str]]:
    """The state dict without SWN parameters, and the dropped keys (logged): what a stock
    ``RetinaNet`` / ``GeneralizedRCNN`` loads with identical detections."""
    dropped = [k for k in state_dict if is_swn_key(k)]
    if dropped:
        logger.info(
            f"Dropped {len(dropped)} SWN parameters ({dropped[0]}, ...): the sample weighting network "
            "is used only during training; the detector is a stock Detectron2 model."
        )
    return {k: v for k, v in state_dict.items() if not is_swn_key(k)}, dropped


def export_stock_checkpoint(src: str, dst: str) -> List[str]:
    """Write ``dst``: the checkpoint ``src`` with only the model's non-SWN weights (no optimizer
    state), loadable by stock Detectron2 with ``train.init_checkpoint=dst``."""
    ckpt = torch.load(src, map_location="cpu", weights_only=True)
    model, dropped = drop_swn_parameters(ckpt["model"] if "model" in ckpt else ckpt)
    torch.save({"model": model, "__author__": "swn.checkpoint.export_stock_checkpoint"}, dst)
    return dropped
