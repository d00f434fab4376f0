"""Turn a baseline config into its SWN version (reference-code defaults): thin wrappers over the
installed package's :func:`swn.make_swn` parts (see ``projects/SWN/swn/config.py``). The model part
carries the sample weighting network; the optimizer becomes Detectron2's SGD for the detector plus
Adam (lr 1e-3, weight decay 1e-4) for the SWN, one object under one LR schedule and one gradient
clipping."""
from swn import swn_model, use_swn_optimizer  # noqa: F401  (use_swn_optimizer: re-exported for configs)


def swn_retinanet(model, optimizer):
    """RetinaNet → SWNRetinaNet (m_cls averaged over all anchors), SGD → SGD + Adam."""
    if swn_model(model) != "swn":
        raise ValueError("swn_retinanet: the model is not a RetinaNet; use swn_rcnn for Faster / Mask R-CNN")
    use_swn_optimizer(optimizer, swn_module="swn")


def swn_rcnn(model, optimizer):
    """Faster / Mask R-CNN → SWN on the Fast R-CNN box predictor (m_cls averaged over positives and
    negatives separately); with a mask head, SWNROIHeads and a 3-task SWN also weight the mask loss."""
    swn_module = swn_model(model)
    if swn_module == "swn":
        raise ValueError("swn_rcnn: the model is a RetinaNet; use swn_retinanet")
    use_swn_optimizer(optimizer, swn_module=swn_module)
