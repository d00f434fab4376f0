"""A method checkpoint (CleanAnchors, SWN) as a stock Detectron2 checkpoint.

Both methods change only training: CleanAnchors' detector is the stock network, SWN adds a sample
weighting network that inference never uses. :func:`stock_model_config` turns a method config's
model into the stock one (each method class replaced by the Detectron2 class it derives from, the
method's own arguments dropped); :func:`export_stock_checkpoint` writes the checkpoint's weights
that the stock model has (the method-only ones, i.e. the SWN's, dropped and listed), after loading
them strictly into the stock model, and the stock config next to it.
"""
import copy
import inspect
import os
from typing import Dict, List, Tuple

import torch
from detectron2.config import LazyConfig, instantiate
from detectron2.utils.registry import locate
from omegaconf import OmegaConf

from .utils import atomic_write

__all__ = ["ExportError", "stock_class", "stock_model_config", "export_stock_checkpoint"]


class ExportError(ValueError):
    """The checkpoint cannot be exported with this config; the message names the file and why."""


def _is_stock(cls) -> bool:
    return cls.__module__.startswith(("detectron2.", "detkit."))


def stock_class(cls):
    """``cls`` when it is Detectron2's or detkit's, else the nearest Detectron2 class it derives
    from (``SWNRetinaNet`` → ``RetinaNet``, ``SWNROIHeads`` → ``StandardROIHeads``); None when it
    derives from none."""
    if _is_stock(cls):
        return cls
    for base in cls.__mro__[1:]:
        if base.__module__.startswith("detectron2."):
            return base
    return None


def _accepts(cls, name: str) -> bool:
    params = inspect.signature(cls.__init__).parameters
    return name in params or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())


def stock_model_config(model_cfg) -> Tuple[object, List[str]]:
    """A copy of a LazyConfig ``model`` node in which every ``_target_`` class that is neither
    Detectron2's nor detkit's is replaced by :func:`stock_class`, without the arguments that class
    does not take; and "key: old → new" / "key (dropped)" lines saying what changed."""
    cfg = copy.deepcopy(model_cfg)
    changes: List[str] = []

    def walk(node, prefix):
        if not OmegaConf.is_dict(node):
            return
        if "_target_" in node:
            target = node._target_
            cls = locate(target) if isinstance(target, str) else target
            if inspect.isclass(cls) and not _is_stock(cls):
                stock = stock_class(cls)
                if stock is None:
                    raise ExportError(f"{prefix or 'model'}._target_ {cls.__module__}.{cls.__name__} derives from no "
                                      "Detectron2 class: there is no stock model to export to")
                node._target_ = stock
                changes.append(f"{prefix}._target_: {cls.__module__}.{cls.__name__} → {stock.__module__}.{stock.__name__}")
                for key in [k for k in node.keys() if k != "_target_" and not _accepts(stock, k)]:
                    node.pop(key)
                    changes.append(f"{prefix}.{key} (dropped: {stock.__name__} does not take it)")
        for key in list(node.keys()):
            if key != "_target_":
                walk(node._get_node(key), f"{prefix}.{key}")

    walk(cfg, "model")
    return cfg, changes


def _state_dict_of(checkpoint: str) -> Dict[str, torch.Tensor]:
    if not os.path.isfile(checkpoint):
        raise ExportError(f"--checkpoint {checkpoint}: no such file")
    try:
        ckpt = torch.load(checkpoint, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ExportError(f"--checkpoint {checkpoint}: cannot be read as weights only "
                          f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from e
    state = ckpt.get("model", ckpt) if isinstance(ckpt, dict) else None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ExportError(f"--checkpoint {checkpoint}: no model state dict (expected train_net.py's "
                          "{'model': state_dict, ...} or a state dict)")
    return state


def export_stock_checkpoint(cfg, checkpoint: str, output: str) -> Dict:
    """Write ``output`` (``{"model": weights}``, what ``DetectionCheckpointer`` and
    ``train.init_checkpoint`` load) with the weights of ``checkpoint`` that the stock version of
    ``cfg.model`` has, and ``<output without extension>.yaml``, ``cfg`` with the stock model and
    ``train.init_checkpoint=output``.

    Returns ``{"output", "config", "dropped" (method-only keys), "changes" (config lines),
    "stock_model" (the stock model, loaded strictly, eval mode)}``.

    Raises:
        ExportError: the checkpoint lacks weights of the stock model, has weights the config's
            model does not have (wrong config), or has different shapes.
    """
    state = _state_dict_of(checkpoint)
    stock_cfg = copy.deepcopy(cfg)
    stock_cfg.model, changes = stock_model_config(cfg.model)
    stock = instantiate(stock_cfg.model)
    stock_keys = set(stock.state_dict())
    missing = sorted(stock_keys - set(state))
    if missing:
        raise ExportError(f"--checkpoint {checkpoint} lacks {len(missing)} weights of the stock model "
                          f"({', '.join(missing[:3])}{', ...' if len(missing) > 3 else ''}): is it a checkpoint of "
                          "this --config-file's model?")
    extra = sorted(set(state) - stock_keys)
    if extra:
        method_keys = set(instantiate(cfg.model).state_dict())
        unknown = [k for k in extra if k not in method_keys]
        if unknown:
            raise ExportError(f"--checkpoint {checkpoint} has {len(unknown)} weights that the config's model does "
                              f"not have ({', '.join(unknown[:3])}): is it a checkpoint of this --config-file's model?")
    weights = {k: v for k, v in state.items() if k in stock_keys}
    try:
        stock.load_state_dict(weights, strict=True)
    except RuntimeError as e:
        raise ExportError(f"--checkpoint {checkpoint} does not fit the stock model: "
                          f"{' '.join(str(e).split())[:300]}") from e
    os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
    atomic_write(output, lambda f: torch.save({"model": weights, "__author__": "detkit.export.export_stock_checkpoint"}, f))
    config_path = os.path.splitext(output)[0] + ".yaml"
    if "train" in stock_cfg:
        stock_cfg.train.init_checkpoint = os.path.abspath(output)
    LazyConfig.save(stock_cfg, config_path)
    return {"output": output, "config": config_path, "dropped": extra, "changes": changes, "stock_model": stock.eval()}
