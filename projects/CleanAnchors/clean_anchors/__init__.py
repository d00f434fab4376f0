"""CleanAnchors: "Learning from Noisy Anchors for One-stage Object Detection" (Li et al., CVPR 2020)
as a Detectron2 project.

- :mod:`clean_anchors.cleanliness`: the method's math as pure tensor functions;
- :mod:`clean_anchors.scores`: cleanliness of a batch's candidates and the method's switches;
- :class:`CleanAnchorsRetinaNet`, :class:`CleanAnchorsRPN`: thin Detectron2 subclasses.
"""
from .cleanliness import (
    reweight,
    rescale_to_sum,
    soft_focal_loss,
    soft_labels,
    topn_candidates,
    topn_candidates_by_chunks,
)
from .retinanet import CleanAnchorsRetinaNet
from .rpn import CleanAnchorsRPN
from .scores import CleanlinessConfig
from .config import clean_anchors_model, make_clean_anchors

__all__ = [
    "CleanAnchorsRetinaNet",
    "CleanAnchorsRPN",
    "CleanlinessConfig",
    "clean_anchors_model",
    "make_clean_anchors",
    "reweight",
    "rescale_to_sum",
    "soft_focal_loss",
    "soft_labels",
    "topn_candidates",
    "topn_candidates_by_chunks",
]
