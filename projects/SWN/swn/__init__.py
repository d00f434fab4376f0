"""SWN: "Learning a Unified Sample Weighting Network for Object Detection" (Cai et al., CVPR 2020)
as a Detectron2 project.

- :mod:`swn.network`: the sample weighting network;
- :mod:`swn.loss`: the uncertainty-weighted loss, averaging rules and regulariser (pure functions);
- :mod:`swn.weighting`: the switches a detector uses (which losses, form, lambda, on/off);
- :mod:`swn.optimizer`: SGD for the detector + Adam for the SWN as one optimizer under one schedule;
- :class:`SWNRetinaNet`, :class:`SWNFastRCNNOutputLayers`, :class:`SWNROIHeads` (Mask R-CNN): thin
  Detectron2 subclasses.
"""
from .fast_rcnn import SWNFastRCNNOutputLayers
from .loss import average_m, regulariser_groups, sample_weights, swn_regulariser, uncertainty_weighted_loss
from .network import SampleWeightingNetwork
from .optimizer import CombinedOptimizer, build_swn_optimizer, build_swn_sgd, swn_optimizer_params
from .retinanet import SWNRetinaNet
from .roi_heads import SWNROIHeads
from .weighting import SWNWeighting
from .config import check_swn_optimizer, make_swn, swn_model, use_swn_optimizer

__all__ = [
    "CombinedOptimizer",
    "build_swn_optimizer",
    "build_swn_sgd",
    "swn_optimizer_params",
    "SWNFastRCNNOutputLayers",
    "SWNROIHeads",
    "SWNRetinaNet",
    "SWNWeighting",
    "SampleWeightingNetwork",
    "average_m",
    "check_swn_optimizer",
    "make_swn",
    "swn_model",
    "use_swn_optimizer",
    "regulariser_groups",
    "sample_weights",
    "swn_regulariser",
    "uncertainty_weighted_loss",
]
