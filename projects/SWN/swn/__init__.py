"""SWN: "Learning a Unified Sample Weighting Network for Object Detection" (Cai et al., CVPR 2020)
as a Detectron2 project.

- :mod:`swn.network`: the sample weighting network;
- :mod:`swn.loss`: the uncertainty-weighted loss, averaging rules and regulariser (pure functions);
- :mod:`swn.weighting`: the switches a detector uses (which losses, form, lambda, on/off) and the one
  place that applies them to the network's output (:meth:`SWNConfig.weights`, ``.regulariser``);
- :mod:`swn.optimizer`: SGD for the detector + Adam for the SWN as one optimizer under one schedule;
- :class:`SWNRetinaNet`, :class:`SWNFastRCNNOutputLayers`, :class:`SWNROIHeads` (Mask R-CNN): thin
  Detectron2 subclasses.
"""
from .fast_rcnn import SWNFastRCNNOutputLayers
from .loss import average_m, sample_weights, swn_regulariser, weighted_sum
from .network import SampleWeightingNetwork
from .optimizer import CombinedOptimizer, build_swn_optimizer, build_swn_sgd, swn_optimizer_params
from .retinanet import SWNRetinaNet
from .roi_heads import SWNROIHeads
from .weighting import SampleWeights, SWNConfig, SWNWeighting
from .config import check_swn_optimizer, make_swn, swn_model, use_swn_optimizer

__all__ = [
    "CombinedOptimizer",
    "build_swn_optimizer",
    "build_swn_sgd",
    "swn_optimizer_params",
    "SWNFastRCNNOutputLayers",
    "SWNROIHeads",
    "SWNRetinaNet",
    "SWNConfig",
    "SWNWeighting",
    "SampleWeights",
    "SampleWeightingNetwork",
    "average_m",
    "check_swn_optimizer",
    "make_swn",
    "swn_model",
    "use_swn_optimizer",
    "sample_weights",
    "swn_regulariser",
    "weighted_sum",
]
