"""Small helpers for reading LazyConfigs: what a node builds, and which dataset a config tests on.

Used by the method-swap helpers (``clean_anchors.make_clean_anchors``, ``swn.make_swn``) and by
the analysis CLIs in ``tools/``.
"""
from typing import Any

from detectron2.utils.registry import locate

__all__ = ["target_of", "config_test_dataset"]


def target_of(node: Any, key: str) -> Any:
    """The class or function that the LazyCall ``node`` builds (its ``_target_``; a dotted-name
    string is located as ``instantiate`` would). ``key`` names the node in errors (``"model"``).

    Raises:
        ValueError: ``node`` is not a LazyCall node, or its ``_target_`` cannot be imported.
    """
    target = node.get("_target_", None) if hasattr(node, "get") else None
    if target is None:
        raise ValueError(
            f"{key} is not a LazyCall node (no _target_; got {type(node).__name__}): pass the config's "
            f"model node, e.g. cfg.model of model_zoo.get_config('COCO-Detection/retinanet_R_50_FPN_1x.py')"
        )
    if isinstance(target, str):
        located = locate(target)
        if located is None:
            raise ValueError(f"{key}._target_={target!r} cannot be imported: check the dotted name")
        return located
    return target


def config_test_dataset(cfg) -> str:
    """The one dataset a config evaluates on, ``cfg.dataloader.test.dataset.names`` (a name or a
    one-element list).

    Raises:
        ValueError: the config has no such key, or it lists several datasets (naming them).
    """
    try:
        names = cfg.dataloader.test.dataset.names
    except (AttributeError, KeyError):
        names = None
    if names is None:
        raise ValueError(
            "the config has no dataloader.test.dataset.names: name the dataset with --dataset NAME"
        )
    if isinstance(names, str):
        return names
    names = list(names)
    if len(names) != 1:
        raise ValueError(
            f"the config's dataloader.test.dataset.names is {names}: pick one with --dataset NAME"
        )
    return names[0]
