"""Torchvision-layout ResNet / ResNeXt ImageNet weights → Detectron2 ``ResNet`` parameter names.

Detectron2's model zoo has no ImageNet ResNeXt-101-32x4d (the SWN paper's X-101 backbone, which
mmdetection loads as ``open-mmlab://resnext101_32x4d``); those weights exist in torchvision layout
(``conv1``, ``bn1``, ``layer1.0.conv2``, ``layer1.0.downsample.0`` ...). This is the renaming of
Detectron2's ``tools/convert-torchvision-to-d2.py``, as a function, plus unwrapping of
``{"state_dict": ...}`` files and dropping the ImageNet classifier.
"""
import re
from typing import Dict, Mapping

import numpy as np
import torch

_STAGE = re.compile(r"^layer([1-4])\.")
_BN = re.compile(r"\.bn([1-3])\.")


def torchvision_resnet_key(key: str) -> str:
    """``layer1.0.bn2.weight`` → ``res2.0.conv2.norm.weight``; ``conv1.weight`` → ``stem.conv1.weight``;
    ``bn1.*`` → ``stem.conv1.norm.*``; ``downsample.0/1`` → ``shortcut`` / ``shortcut.norm``."""
    if not key.startswith("layer"):
        return "stem." + key.replace("bn1.", "conv1.norm.")
    key = _STAGE.sub(lambda m: f"res{int(m.group(1)) + 1}.", key)
    key = _BN.sub(lambda m: f".conv{m.group(1)}.norm.", key)
    return key.replace("downsample.0.", "shortcut.").replace("downsample.1.", "shortcut.norm.")


def unwrap_state_dict(checkpoint: Mapping) -> Mapping:
    """The tensors of a ``torch.save``-d checkpoint: the object itself or its ``state_dict`` /
    ``model`` entry (mmcv / Detectron2 wrappers)."""
    for wrapper in ("state_dict", "model"):
        if isinstance(checkpoint.get(wrapper), Mapping):
            checkpoint = checkpoint[wrapper]
    return checkpoint


def torchvision_resnet_to_detectron2(state_dict: Mapping[str, torch.Tensor]) -> Dict:
    """Detectron2's pickle format for backbone weights: ``{"model": {d2 name: np.ndarray},
    "__author__": "torchvision", "matching_heuristics": True}``. BatchNorm ``num_batches_tracked``
    and the ``fc`` classifier are dropped; ``module.`` prefixes (DataParallel) are removed.

    Raises ValueError when the input does not look like a torchvision ResNet (no ``layer1.*`` keys).
    """
    names = [k[len("module."):] if k.startswith("module.") else k for k in state_dict]
    if not any(n.startswith("layer1.") for n in names):
        raise ValueError(
            "not a torchvision-layout ResNet/ResNeXt state dict (no 'layer1.*' keys); "
            f"first keys: {names[:5]}"
        )
    converted = {}
    for name, value in zip(names, state_dict.values()):
        if name.startswith("fc.") or name.endswith("num_batches_tracked"):
            continue
        converted[torchvision_resnet_key(name)] = value.detach().cpu().numpy().astype(np.float32)
    return {"model": converted, "__author__": "torchvision", "matching_heuristics": True}
