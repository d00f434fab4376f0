"""Turn a Detectron2 RetinaNet / Faster R-CNN / Mask R-CNN / RPN LazyConfig into its CleanAnchors
version.

    from detectron2 import model_zoo
    from clean_anchors import make_clean_anchors

    cfg = model_zoo.get_config("COCO-Detection/retinanet_R_50_FPN_1x.py")
    make_clean_anchors(cfg)   # model -> CleanAnchorsRetinaNet with the authors' settings

What changes (the authors' released code, the values of every CleanAnchors config in ``configs/``):

* RetinaNet: ``model._target_`` becomes :class:`~clean_anchors.CleanAnchorsRetinaNet` with
  ``model.topn = 30`` candidates per ground truth, ``model.cleanliness =
  L(CleanlinessConfig)(alpha=0.75, gamma=1.0)`` and the reference configs' focal alpha
  ``model.focal_loss_alpha = 0.5``;
* Faster / Mask R-CNN and the RPN-only ``ProposalNetwork``: ``model.proposal_generator._target_``
  becomes :class:`~clean_anchors.CleanAnchorsRPN` with ``topn = 10`` and
  ``cleanliness = L(CleanlinessConfig)(alpha=0.75, gamma=1.0, multiplicity="anchors")`` (paper
  Tables 5 and 6); the RoI heads stay Detectron2's.

The optimizer and schedule are not touched. Every switch is then a config key:
``model.cleanliness.gamma=2.0``, ``model.topn=50``, ``model.assigner=iou``,
``model.cleanliness.soft_labels=False`` (any field of :class:`~clean_anchors.CleanlinessConfig`
and any argument of the two classes, e.g. ``model.normalizer``, works as an override too; the R-CNN
keys are under ``model.proposal_generator``). Anything else is refused with an error naming what
was found: another architecture, a model already CleanAnchors or SWN, a RetinaNet or RPN subclass
whose own behaviour the swap would drop.
"""
from detectron2.config import LazyCall as L
from detectron2.modeling.meta_arch import GeneralizedRCNN, ProposalNetwork, RetinaNet
from detectron2.modeling.proposal_generator import RPN

from detkit.config_tools import check_stock_part, check_stock_retinanet, dotted_name, target_of

from .retinanet import CleanAnchorsRetinaNet
from .rpn import CleanAnchorsRPN
from .scores import CleanlinessConfig

__all__ = ["clean_anchors_model", "make_clean_anchors"]

_WHAT = (
    "make_clean_anchors turns a RetinaNet, Faster R-CNN, Mask R-CNN or RPN-only config (Detectron2's "
    "RetinaNet, or GeneralizedRCNN / ProposalNetwork with Detectron2's RPN) into CleanAnchors"
)


def clean_anchors_model(model):
    """Turn the LazyConfig model node ``model`` (in place) into its CleanAnchors version (see the
    module docstring). Returns ``model``.

    Raises:
        ValueError: ``model`` is not a RetinaNet / Faster R-CNN / Mask R-CNN / RPN-only model.
    """
    target = target_of(model, "model")
    if isinstance(target, type) and issubclass(target, RetinaNet):
        check_stock_retinanet(target, CleanAnchorsRetinaNet, "CleanAnchors", "SWN")
        model._target_ = CleanAnchorsRetinaNet
        model.topn = 30
        model.cleanliness = L(CleanlinessConfig)(alpha=0.75, gamma=1.0)
        model.focal_loss_alpha = 0.5
        return model
    if isinstance(target, type) and issubclass(target, (GeneralizedRCNN, ProposalNetwork)):
        check_stock_part(
            model.get("proposal_generator", None), "model.proposal_generator", RPN, CleanAnchorsRPN, "CleanAnchors",
            "CleanAnchors on R-CNN replaces Detectron2's RPN (RRPN and other proposal generators are not supported).",
            _WHAT,
        )
        model.proposal_generator._target_ = CleanAnchorsRPN
        model.proposal_generator.topn = 10
        model.proposal_generator.cleanliness = L(CleanlinessConfig)(alpha=0.75, gamma=1.0, multiplicity="anchors")
        return model
    raise ValueError(f"model._target_ is {dotted_name(target)}: {_WHAT}.")


def make_clean_anchors(cfg):
    """Turn a whole detection LazyConfig (its ``cfg.model``) into its CleanAnchors version, in
    place (:func:`clean_anchors_model`). Returns ``cfg``.

    Raises:
        ValueError: the config has no model node or is not one of the supported architectures.
    """
    if "model" not in cfg:
        raise ValueError(
            f"make_clean_anchors(cfg): the config has no 'model' node (it has {sorted(cfg)}); pass a whole "
            "detection config, or call clean_anchors_model(model) on a model node"
        )
    clean_anchors_model(cfg["model"])
    return cfg
