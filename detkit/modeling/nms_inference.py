"""The NMS step of a Detectron2 detector's inference, switchable per evaluation: all candidates
(NMS off) or Soft-NMS instead of hard NMS, for any RetinaNet-family detector and any Faster / Mask
R-CNN, without a model class per combination and without touching parameters or checkpoint keys.

Where the NMS happens, and so where these switches act:

* dense detectors (:class:`~detectron2.modeling.meta_arch.dense_detector.DenseDetector`: RetinaNet,
  the CleanAnchors / SWN RetinaNets, FCOS): ``inference_single_image`` keeps per feature level the
  ``test_topk_candidates`` best (anchor, class) scores above ``test_score_thresh``, decodes their
  boxes (not clipped), runs per-class ``batched_nms(test_nms_thresh)`` and keeps
  ``max_detections_per_image``;
* R-CNN (:class:`~detectron2.modeling.GeneralizedRCNN` with a ``FastRCNNOutputLayers`` box
  predictor, SWN's included): ``box_predictor.inference`` clips the per-class boxes of every
  proposal to the image, keeps (box, class) pairs with score above ``test_score_thresh``, runs
  per-class ``batched_nms(test_nms_thresh)`` and keeps ``test_topk_per_image`` -- *before* the mask
  head, which then runs on the kept boxes only.

:func:`detections_before_nms` sets the model's NMS threshold to 1.0 (no box has IoU > 1, so
``batched_nms`` removes nothing and only sorts) and lifts the per-image cap, so the model's own code
(score threshold, per-level top-k, decoding, clipping) returns every candidate. :func:`soft_nms_inference`
wraps that same method to apply :func:`~detkit.modeling.soft_nms.batched_soft_nms` to those
candidates and keep the model's cap, at the place hard NMS would run: for Mask R-CNN the masks are
predicted for the Soft-NMS survivors only (not pasted for thousands of candidates), with their
decayed scores. Both are context managers that restore the model on exit; the wrapper is an
instance attribute (a plain function, not a module or a tensor), so ``state_dict`` is unchanged.
"""
import sys
from contextlib import contextmanager
from typing import Iterator, Tuple

from detectron2.modeling import GeneralizedRCNN
from detectron2.modeling.meta_arch.dense_detector import DenseDetector
from detectron2.modeling.roi_heads.fast_rcnn import FastRCNNOutputLayers
from torch import nn

from ..utils import unwrap_model
from .soft_nms import batched_soft_nms, check_soft_nms_params

__all__ = ["detections_before_nms", "nms_owner", "soft_nms_inference", "unwrap_model"]

_DENSE_ATTRS = ("inference_single_image", "test_nms_thresh", "max_detections_per_image")


def nms_owner(model: nn.Module) -> Tuple[nn.Module, str]:
    """The module whose inference method runs the NMS, and which kind it is.

    Returns:
        ``(detector, "dense")`` for a RetinaNet-family detector (method ``inference_single_image``,
        cap ``max_detections_per_image``) or ``(box_predictor, "rcnn")`` for a GeneralizedRCNN
        (method ``inference``, cap ``test_topk_per_image``).
    """
    m = unwrap_model(model)
    if isinstance(m, DenseDetector) and all(hasattr(m, a) for a in _DENSE_ATTRS):
        return m, "dense"
    if isinstance(m, GeneralizedRCNN):
        predictor = getattr(m.roi_heads, "box_predictor", None)
        if isinstance(predictor, FastRCNNOutputLayers):
            return predictor, "rcnn"
        raise TypeError(
            f"{type(m).__name__} with roi_heads {type(m.roi_heads).__name__}: the NMS options need "
            "a single FastRCNNOutputLayers box predictor (StandardROIHeads, as in Faster / Mask "
            f"R-CNN); got {type(predictor).__name__} (Cascade R-CNN runs its NMS elsewhere)."
        )
    raise TypeError(
        f"{type(m).__name__} is neither a RetinaNet-style dense detector (DenseDetector with "
        f"{', '.join(_DENSE_ATTRS)}) nor a GeneralizedRCNN (Faster / Mask R-CNN); Soft-NMS and "
        "test-time augmentation support only those (a ProposalNetwork has no class-wise NMS step)."
    )


_CAP = {"dense": "max_detections_per_image", "rcnn": "test_topk_per_image"}
_NO_CAP = {"dense": sys.maxsize, "rcnn": -1}  # RetinaNet slices keep[:cap]; R-CNN skips cap < 0
_METHOD = {"dense": "inference_single_image", "rcnn": "inference"}


@contextmanager
def _attributes(obj, **values) -> Iterator[None]:
    old = {k: getattr(obj, k) for k in values}
    for k, v in values.items():
        setattr(obj, k, v)
    try:
        yield
    finally:
        for k, v in old.items():
            setattr(obj, k, v)


@contextmanager
def detections_before_nms(model: nn.Module) -> Iterator[nn.Module]:
    """Within the block the model's inference returns all its NMS candidates: NMS threshold 1.0
    and no per-image cap; the score threshold, per-level top-k and box decoding are the model's.
    Detections come out sorted by score, as after NMS. Yields the unwrapped detector."""
    owner, kind = nms_owner(model)
    with _attributes(owner, test_nms_thresh=1.0, **{_CAP[kind]: _NO_CAP[kind]}):
        yield unwrap_model(model)


@contextmanager
def soft_nms_inference(
    model: nn.Module,
    method: str = "linear",
    sigma: float = 0.5,
    iou_threshold: float = 0.3,
    score_threshold: float = 0.001,
) -> Iterator[nn.Module]:
    """Within the block the model's inference uses Soft-NMS (per class, see
    :func:`~detkit.modeling.soft_nms.batched_soft_nms`) instead of its hard NMS, on the same
    candidates and with the same per-image cap (``max_detections_per_image`` /
    ``test_topk_per_image``). The kept detections carry their decayed scores. Yields the
    unwrapped detector (calling the wrapper, e.g. a DDP model, works too)."""
    check_soft_nms_params(method, sigma, iou_threshold, score_threshold, where="test.soft_nms")
    owner, kind = nms_owner(model)
    name, cap_name = _METHOD[kind], _CAP[kind]
    original = getattr(owner, name)
    shadowed = name in owner.__dict__  # an instance attribute already there (e.g. nested use)

    def soft(instances):
        cap = getattr(owner, cap_name)
        keep, scores = batched_soft_nms(
            instances.pred_boxes.tensor,
            instances.scores,
            instances.pred_classes,
            method=method,
            sigma=sigma,
            iou_threshold=iou_threshold,
            score_threshold=score_threshold,
            max_keep=None if cap < 0 else cap,
        )
        kept = instances[keep]
        kept.scores = scores
        return kept, keep

    def inference_with_soft_nms(*args, **kwargs):
        with _attributes(owner, test_nms_thresh=1.0, **{cap_name: _NO_CAP[kind]}):
            out = original(*args, **kwargs)
        if kind == "dense":  # Instances of one image
            return soft(out)[0]
        instances, kept_indices = out  # per image: Instances, index of the proposal of each box
        results = [soft(x) for x in instances]
        return [r[0] for r in results], [k[r[1]] for r, k in zip(results, kept_indices)]

    setattr(owner, name, inference_with_soft_nms)
    try:
        yield unwrap_model(model)
    finally:
        if shadowed:
            setattr(owner, name, original)
        else:
            delattr(owner, name)
