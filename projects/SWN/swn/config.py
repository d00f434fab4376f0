"""Turn a Detectron2 RetinaNet / Faster R-CNN / Mask R-CNN LazyConfig into its SWN version.

    from detectron2 import model_zoo
    from swn import make_swn

    cfg = model_zoo.get_config("COCO-Detection/retinanet_R_50_FPN_1x.py")
    make_swn(cfg)   # model -> SWNRetinaNet + its SWN and switches; optimizer -> SGD + Adam

What changes (the reference code's defaults, the values of every SWN config in ``configs/``):

* RetinaNet: ``model._target_`` becomes :class:`~swn.SWNRetinaNet`, with
  ``model.swn = L(SampleWeightingNetwork)(num_tasks=2, embed_dim=64, shared_head=True, clamp=2.0,
  init_std=1e-4)`` and ``model.weighting = L(SWNConfig)(lam=0.5, form="exp(-m)",
  cls_average="all")`` (m_cls averaged over all anchors);
* Faster R-CNN: ``model.roi_heads.box_predictor`` becomes :class:`~swn.SWNFastRCNNOutputLayers`
  with a 2-task SWN (``init_std=1e-4``) and ``SWNConfig(lam=0.5, form="exp(-m)",
  cls_average="pos_neg")``; Mask R-CNN also ``model.roi_heads`` -> :class:`~swn.SWNROIHeads`
  and a 3-task SWN that weights the mask loss too;
* the optimizer: Detectron2's SGD (``common/optim.py``) becomes :func:`~swn.build_swn_sgd`, the
  same SGD for the detector plus Adam (``optimizer.swn_lr=1e-3``, ``optimizer.swn_weight_decay=1e-4``)
  for the SWN, one optimizer under one LR schedule and gradient clipping.

Every switch is then a config key: ``model.weighting.lam=0.25``, ``model.weighting.enabled=False``,
``model.swn.clamp=3.0``, ``optimizer.swn_lr=1e-4`` (any other argument of ``SWNConfig`` /
``SampleWeightingNetwork`` works as an override too). Anything else is refused with an error
naming what was found: another architecture (Cascade R-CNN, a model already SWN or CleanAnchors,
a RetinaNet subclass whose own behaviour the swap would drop), a box loss the SWN cannot read
(GIoU), an optimizer other than Detectron2's SGD.

:func:`check_swn_optimizer` is what ``train_net.py`` runs on the built model and optimizer: an SWN
model whose SWN is not trained by Adam is refused before the first step.
"""
from typing import Any

import torch
from detectron2.config import LazyCall as L
from detectron2.modeling.meta_arch import GeneralizedRCNN, RetinaNet
from detectron2.modeling.roi_heads import FastRCNNOutputLayers, StandardROIHeads
from detectron2.solver import get_default_optimizer_params

from detkit.config_tools import check_stock_part, check_stock_retinanet, dotted_name, target_of
from detkit.utils import unwrap_model

from .fast_rcnn import SWNFastRCNNOutputLayers
from .network import SampleWeightingNetwork
from .optimizer import build_swn_sgd, swn_optimizer_params
from .retinanet import SWNRetinaNet
from .roi_heads import SWNROIHeads
from .weighting import SWNConfig

__all__ = ["check_swn_optimizer", "make_swn", "swn_model", "use_swn_optimizer"]

_WHAT = (
    "make_swn turns a RetinaNet, Faster R-CNN or Mask R-CNN config (Detectron2's RetinaNet, or "
    "GeneralizedRCNN with StandardROIHeads and FastRCNNOutputLayers) into SWN"
)


def swn_model(model) -> str:
    """Turn the LazyConfig model node ``model`` (in place) into its SWN version (see the module
    docstring). Returns the dotted path of the SWN module in the built model (``"swn"`` or
    ``"roi_heads.box_predictor.swn"``), which :func:`use_swn_optimizer` needs.

    Raises:
        ValueError: ``model`` is not a RetinaNet / Faster R-CNN / Mask R-CNN, or cannot take the SWN.
    """
    target = target_of(model, "model")
    if isinstance(target, type) and issubclass(target, RetinaNet):
        check_stock_retinanet(target, SWNRetinaNet, "SWN", "CleanAnchors")
        loss_type = model.get("box_reg_loss_type", "smooth_l1")
        if loss_type != "smooth_l1":
            raise ValueError(
                f"model.box_reg_loss_type={loss_type!r}: the SWN reads the 4 per-coordinate smooth-L1 "
                "box losses; set model.box_reg_loss_type='smooth_l1' before the swap"
            )
        model._target_ = SWNRetinaNet
        model.swn = L(SampleWeightingNetwork)(num_tasks=2, embed_dim=64, shared_head=True, clamp=2.0, init_std=1e-4)
        model.weighting = L(SWNConfig)(lam=0.5, form="exp(-m)", cls_average="all")
        return "swn"
    if isinstance(target, type) and issubclass(target, GeneralizedRCNN):
        roi_heads = model.get("roi_heads", None)
        check_stock_part(
            roi_heads, "model.roi_heads", StandardROIHeads, SWNROIHeads, "SWN",
            "SWN on R-CNN needs Detectron2's StandardROIHeads (one box predictor; Cascade R-CNN and other "
            "heads are not supported).", _WHAT,
        )
        predictor = roi_heads.get("box_predictor", None)
        check_stock_part(
            predictor, "model.roi_heads.box_predictor", FastRCNNOutputLayers, SWNFastRCNNOutputLayers, "SWN",
            "SWN needs Detectron2's FastRCNNOutputLayers, which SWNFastRCNNOutputLayers extends.", _WHAT,
        )
        if predictor.get("use_sigmoid_ce", False) or predictor.get("box_reg_loss_type", "smooth_l1") != "smooth_l1":
            raise ValueError(
                "model.roi_heads.box_predictor: SWN supports softmax cross-entropy with the smooth-L1 box "
                f"loss only (got use_sigmoid_ce={predictor.get('use_sigmoid_ce', False)}, "
                f"box_reg_loss_type={predictor.get('box_reg_loss_type', 'smooth_l1')!r}); set "
                "use_sigmoid_ce=False and box_reg_loss_type='smooth_l1' before the swap"
            )
        has_mask = roi_heads.get("mask_head", None) is not None
        if has_mask:
            model.roi_heads._target_ = SWNROIHeads
        model.roi_heads.box_predictor._target_ = SWNFastRCNNOutputLayers
        model.roi_heads.box_predictor.swn = L(SampleWeightingNetwork)(num_tasks=3 if has_mask else 2, init_std=1e-4)
        model.roi_heads.box_predictor.weighting = L(SWNConfig)(lam=0.5, form="exp(-m)", cls_average="pos_neg")
        return "roi_heads.box_predictor.swn"
    raise ValueError(f"model._target_ is {dotted_name(target)}: {_WHAT}; an RPN-only model has no box head to weight.")


def _check_sgd(optimizer) -> None:
    """Raise ValueError unless ``optimizer`` is Detectron2's SGD node (common/optim.py)."""
    target = target_of(optimizer, "optimizer")
    if target is build_swn_sgd:
        raise ValueError(
            f"optimizer._target_ is {dotted_name(target)}: the config already is SWN (its optimizer is SGD + Adam); "
            "swap a config that is not SWN yet"
        )
    if target is not torch.optim.SGD:
        raise ValueError(
            f"optimizer._target_ is {dotted_name(target)}: SWN trains the detector with Detectron2's SGD and the "
            "SWN with Adam (build_swn_sgd); start from model_zoo.get_config('common/optim.py').SGD"
        )
    params = optimizer.get("params", None)
    params_target = target_of(params, "optimizer.params") if params is not None else None
    if params_target is not get_default_optimizer_params:
        raise ValueError(
            f"optimizer.params builds {dotted_name(params_target)}: it must be L(get_default_optimizer_params)(...) "
            "(Detectron2's common/optim.py), whose groups the SWN's parameters are taken out of"
        )


def use_swn_optimizer(optimizer, swn_module: str = "swn", swn_lr: float = 1e-3, swn_weight_decay: float = 1e-4):
    """Turn Detectron2's SGD optimizer node (``model_zoo.get_config("common/optim.py").SGD``, what
    every Detectron2 detection LazyConfig uses) in place into :func:`~swn.build_swn_sgd`: the same
    SGD for the detector, Adam (``swn_lr``, ``swn_weight_decay``) for the SWN at ``swn_module``.
    Returns ``optimizer``.

    Raises:
        ValueError: ``optimizer`` is not that SGD node (naming what it is).
    """
    _check_sgd(optimizer)
    optimizer._target_ = build_swn_sgd
    optimizer.params._target_ = swn_optimizer_params
    optimizer.params.swn_module = swn_module
    optimizer.swn_lr = swn_lr
    optimizer.swn_weight_decay = swn_weight_decay
    return optimizer


def make_swn(cfg):
    """Turn a whole detection LazyConfig (``cfg.model`` and ``cfg.optimizer``) into its SWN version,
    in place: :func:`swn_model` then :func:`use_swn_optimizer`. Returns ``cfg``.

    Raises:
        ValueError: the config is not a RetinaNet / Faster R-CNN / Mask R-CNN with Detectron2's SGD.
    """
    for key in ("model", "optimizer"):
        if key not in cfg:
            raise ValueError(
                f"make_swn(cfg): the config has no {key!r} node (it has {sorted(cfg)}); pass a whole "
                "detection config, or call swn_model(model) and use_swn_optimizer(optimizer, swn_module)"
            )
    _check_sgd(cfg["optimizer"])  # before the model is changed: a refused config is left as it was
    swn_module = swn_model(cfg["model"])
    use_swn_optimizer(cfg["optimizer"], swn_module)
    return cfg


def _adam_parameter_ids(optimizer: Any) -> set:
    """ids of the parameters that an Adam optimizer (the optimizer itself, or a child of a
    :class:`~swn.CombinedOptimizer`) trains."""
    children = getattr(optimizer, "optimizers", None)
    optimizers = list(children.values()) if children is not None else [optimizer]
    return {
        id(p)
        for opt in optimizers
        if isinstance(opt, torch.optim.Adam)
        for group in opt.param_groups
        for p in group["params"]
    }


def check_swn_optimizer(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> None:
    """Refuse an SWN model whose sample weighting network is not trained by Adam.

    SWN trains its weighting network with Adam (lr 1e-3, weight decay 1e-4) beside the detector's
    SGD; under the detector's plain SGD the run would go on without a word and train another method.
    A model without a :class:`~swn.SampleWeightingNetwork` passes. A DDP wrapper is looked through.

    Raises:
        ValueError: naming the SWN module, the optimizer found and the fix (:func:`make_swn`).
    """
    model = unwrap_model(model)
    adam = _adam_parameter_ids(optimizer)
    for name, module in model.named_modules():
        if not isinstance(module, SampleWeightingNetwork):
            continue
        outside = [n for n, p in module.named_parameters() if p.requires_grad and id(p) not in adam]
        if outside:
            children = getattr(optimizer, "optimizers", None)
            found = (
                "CombinedOptimizer of " + ", ".join(f"{k}: {type(v).__name__}" for k, v in children.items())
                if children is not None
                else type(optimizer).__name__
            )
            raise ValueError(
                f"{type(model).__name__} is an SWN model, but {len(outside)} parameter(s) of its sample "
                f"weighting network model.{name} ({', '.join(outside[:3])}{', ...' if len(outside) > 3 else ''}) "
                f"are not in an Adam group of the optimizer ({found}): SWN trains them with Adam beside the "
                f"detector's SGD. Build the optimizer with swn.make_swn(cfg), or in a config "
                f"swn.use_swn_optimizer(optimizer, swn_module={name!r}) (optimizer._target_=swn.build_swn_sgd)."
            )
