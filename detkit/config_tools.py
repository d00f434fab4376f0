"""Small helpers for reading LazyConfigs: what a node builds, and which dataset a config tests on.

Used by the method-swap helpers (``clean_anchors.make_clean_anchors``, ``swn.make_swn``) and by
the analysis CLIs in ``tools/``.
"""
from typing import Any

from detectron2.utils.registry import locate

__all__ = ["target_of", "config_test_dataset", "dotted_name", "check_stock_retinanet", "check_stock_part"]


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


def dotted_name(obj) -> str:
    """``module.QualifiedName`` of a class or function (for error messages)."""
    return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', obj)}"


def check_stock_retinanet(target: type, method_class: type, method: str, other: str) -> None:
    """Refuse to swap a method's RetinaNet subclass (``method_class``, of the method named
    ``method``) in for a model whose ``_target_`` is not Detectron2's RetinaNet (or detkit's
    ``GlobalNormalizerRetinaNet``, which every method RetinaNet includes): the swap would drop that
    class's own behaviour. ``other``: the method it cannot be combined with."""
    from detectron2.modeling.meta_arch import RetinaNet

    from .modeling import GlobalNormalizerRetinaNet

    if target in (RetinaNet, GlobalNormalizerRetinaNet):
        return
    raise ValueError(
        f"model._target_ is {dotted_name(target)}, not Detectron2's RetinaNet: "
        + (f"the model already is {method}. " if issubclass(target, method_class) else
           f"{method_class.__name__} would replace it and drop its own behaviour ({method} cannot be "
           f"combined with {other} or another RetinaNet subclass). ")
        + "Swap a stock RetinaNet config (model_zoo.get_config('COCO-Detection/retinanet_R_50_FPN_1x.py'))."
    )


def check_stock_part(node: Any, key: str, stock: type, method_class: type, method: str, unsupported: str, what: str) -> None:
    """Refuse to swap a method's ``method_class`` into the config node ``node`` (named ``key``)
    unless it builds exactly Detectron2's ``stock`` class: the message says whether the model
    already is the method, else ``unsupported``, then ``what`` (what the swap takes)."""
    target = target_of(node, key) if node is not None else None
    if target is stock:
        return
    already = isinstance(target, type) and issubclass(target, method_class)
    raise ValueError(
        f"{key}._target_ is {dotted_name(target)}: "
        + (f"the model already is {method}. " if already else unsupported + " ")
        + what
    )


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
