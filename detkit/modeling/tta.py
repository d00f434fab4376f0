"""Test-time augmentation (TTA) for LazyConfig models: RetinaNet-family detectors and Faster / Mask R-CNN.

The SWN and CleanAnchors papers report a multi-scale + flip test on COCO (short sides 400-1200,
horizontal flip). Both wrappers take each image through Detectron2's :class:`DatasetMapperTTA`
(one resized copy per ``min_sizes`` entry, plus its mirror image when ``flip``), run the detector on
every copy, map the boxes back to the original image with the inverse of each copy's transforms,
and merge the union of detections per class with the model's own NMS (``test_nms_thresh``) or with
Soft-NMS, keeping the model's per-image cap. Thresholds and the class count come from the model,
so no yacs config is needed.

* :class:`RetinaNetWithTTA` -- Detectron2 has no TTA for dense detectors; this is its
  ``GeneralizedRCNNWithTTA`` logic for ``DenseDetector`` s (RetinaNet, CleanAnchors, SWN, FCOS).
* :class:`RCNNWithTTA` -- Detectron2's ``GeneralizedRCNNWithTTA`` (including its mask step: the
  mask head runs on the merged boxes in every augmented copy and the mask probabilities are
  averaged), built from the model instead of a yacs config, with a vectorised merge that can use
  Soft-NMS.
* :func:`build_tta_model` picks the right one for a model and the config's ``test`` node.

Merging: with hard NMS every copy goes through the model's full inference (its NMS and cap), as in
Detectron2, and the union is merged with NMS again. With Soft-NMS every copy returns all its NMS
candidates (:func:`~detkit.modeling.nms_inference.detections_before_nms`) and one Soft-NMS runs
over the union, so no box is decayed twice. Either way, a single un-flipped copy at the image's own
size gives exactly the plain model's detections.
"""
from contextlib import nullcontext
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import torch
from detectron2.config import get_cfg
from detectron2.layers import batched_nms
from detectron2.modeling import GeneralizedRCNN
from detectron2.modeling.postprocessing import detector_postprocess
from detectron2.modeling.test_time_augmentation import DatasetMapperTTA, GeneralizedRCNNWithTTA
from detectron2.structures import Boxes, Instances
from torch import Tensor, nn

from .nms_inference import detections_before_nms, nms_owner, unwrap_model
from .soft_nms import batched_soft_nms, soft_nms_options

__all__ = ["RCNNWithTTA", "RetinaNetWithTTA", "build_tta_model", "merge_detections"]


def merge_detections(
    boxes: Tensor,
    scores: Tensor,
    classes: Tensor,
    nms_thresh: float,
    max_dets: int,
    soft_nms: Optional[Mapping] = None,
) -> Tuple[Tensor, Tensor]:
    """Per-class NMS (or Soft-NMS) over the union of the detections of all augmented copies.

    Args:
        boxes: (N, 4) boxes in the original image's coordinates.
        scores: (N,) scores.
        classes: (N,) class indices.
        nms_thresh: IoU threshold of hard NMS (ignored with ``soft_nms``).
        max_dets: keep at most this many (< 0: all).
        soft_nms: None for hard NMS, or the keyword arguments of
            :func:`~detkit.modeling.soft_nms.batched_soft_nms` (method, sigma, iou_threshold,
            score_threshold).

    Returns:
        keep: (K,) indices of the kept detections, best first; scores: (K,) their (new) scores.
    """
    if soft_nms is not None:
        return batched_soft_nms(boxes, scores, classes, **soft_nms, max_keep=None if max_dets < 0 else max_dets)
    keep = batched_nms(boxes, scores, classes, nms_thresh)
    if max_dets >= 0:
        keep = keep[:max_dets]
    return keep, scores[keep]


def _check_tta_args(min_sizes: Sequence[int], max_size: int, batch_size: int) -> None:
    if len(min_sizes) == 0 or any(int(s) <= 0 for s in min_sizes):
        raise ValueError(f"test.aug.min_sizes={list(min_sizes)!r}: give one or more positive short-side sizes.")
    if max_size < max(min_sizes):
        raise ValueError(
            f"test.aug.max_size={max_size} is smaller than the largest of test.aug.min_sizes={list(min_sizes)}."
        )
    if batch_size < 1:
        raise ValueError(f"TTA batch_size={batch_size}: must be >= 1.")


def _tta_mapper(min_sizes: Sequence[int], max_size: int, flip: bool) -> DatasetMapperTTA:
    return DatasetMapperTTA(min_sizes=[int(s) for s in min_sizes], max_size=int(max_size), flip=bool(flip))


def _with_image_size(dataset_dict: Dict) -> Dict:
    if "image" not in dataset_dict:
        raise ValueError("TTA needs model inputs with an 'image' (CHW tensor), as the test data loader gives.")
    d = dict(dataset_dict)
    d.setdefault("height", d["image"].shape[1])
    d.setdefault("width", d["image"].shape[2])
    return d


def _in_original_frame(outputs: List[Instances], tfms) -> Tuple[Tensor, Tensor, Tensor]:
    """Concatenate the detections of all copies, boxes mapped back through each copy's inverse
    transforms. Returns boxes (N, 4), scores (N,), classes (N,)."""
    boxes = []
    for output, tfm in zip(outputs, tfms):
        pred = output.pred_boxes.tensor
        in_original = tfm.inverse().apply_box(pred.detach().cpu().numpy())
        boxes.append(torch.from_numpy(in_original).to(pred.device))
    scores = torch.cat([o.scores for o in outputs])
    classes = torch.cat([o.pred_classes for o in outputs])
    return torch.cat(boxes).to(scores.dtype), scores, classes


class RetinaNetWithTTA(nn.Module):
    """A RetinaNet-family detector (any ``DenseDetector`` with ``inference_single_image``,
    ``test_nms_thresh`` and ``max_detections_per_image``) with test-time augmentation. Same
    inputs and outputs as the detector's ``forward`` in eval mode.

    Args:
        model: the detector, or its DDP wrapper.
        min_sizes: short-side sizes of the augmented copies (Detectron2's TEST.AUG.MIN_SIZES).
        max_size: cap on the long side (TEST.AUG.MAX_SIZE).
        flip: also run every size horizontally flipped (TEST.AUG.FLIP).
        batch_size: augmented copies per forward pass.
        soft_nms: None to merge with the model's NMS, or the Soft-NMS options (method, sigma,
            iou_threshold, score_threshold; missing ones take the paper's values; a mapping with
            ``enabled=False`` counts as None).
    """

    def __init__(
        self,
        model: nn.Module,
        min_sizes: Sequence[int],
        max_size: int,
        flip: bool = True,
        batch_size: int = 3,
        soft_nms: Optional[Mapping] = None,
    ):
        super().__init__()
        model = unwrap_model(model)
        if nms_owner(model)[1] != "dense":
            raise TypeError(
                f"RetinaNetWithTTA needs a RetinaNet-style dense detector, got {type(model).__name__}; "
                "use build_tta_model."
            )
        self.soft_nms = soft_nms_options(soft_nms)
        _check_tta_args(min_sizes, max_size, batch_size)
        self.model = model
        self.tta_mapper = _tta_mapper(min_sizes, max_size, flip)
        self.batch_size = batch_size

    def forward(self, batched_inputs: List[Dict]) -> List[Dict[str, Instances]]:
        return [self._inference_one_image(_with_image_size(x)) for x in batched_inputs]

    def _detect(self, inputs: List[Dict]) -> List[Instances]:
        """``DenseDetector.forward`` in eval mode without its postprocessing: detections in each
        input image's own coordinates, not clipped (as NMS saw them)."""
        images = self.model.preprocess_image(inputs)
        features = self.model.backbone(images.tensor)
        features = [features[f] for f in self.model.head_in_features]
        return self.model.forward_inference(images, features, self.model.head(features))

    def _inference_one_image(self, input: Dict) -> Dict[str, Instances]:
        height, width = input["height"], input["width"]
        augmented = self.tta_mapper(input)
        tfms = [x.pop("transforms") for x in augmented]
        outputs = []
        with detections_before_nms(self.model) if self.soft_nms else nullcontext():
            for i in range(0, len(augmented), self.batch_size):
                outputs.extend(self._detect(augmented[i : i + self.batch_size]))
        boxes, scores, classes = _in_original_frame(outputs, tfms)
        model = self.model
        keep, scores = merge_detections(
            boxes, scores, classes, model.test_nms_thresh, model.max_detections_per_image, self.soft_nms
        )
        merged = Instances((height, width), pred_boxes=Boxes(boxes[keep]), scores=scores, pred_classes=classes[keep])
        # what the model's forward does last: clip to the image, drop empty boxes (scale is 1 here)
        return {"instances": detector_postprocess(merged, height, width)}


class RCNNWithTTA(GeneralizedRCNNWithTTA):
    """Detectron2's :class:`GeneralizedRCNNWithTTA` for a LazyConfig Faster / Mask R-CNN. What it
    reads from a yacs config comes from the model (MODEL.MASK_ON, KEYPOINT_ON, LOAD_PROPOSALS) and
    the arguments (TEST.AUG.*); the merge, vectorised here and optionally Soft-NMS, takes the box
    predictor's ``test_nms_thresh`` and ``test_topk_per_image`` (upstream: ROI_HEADS.NMS_THRESH_TEST,
    TEST.DETECTIONS_PER_IMAGE). With a mask head, masks are predicted for the merged boxes in every
    copy and averaged (Detectron2's step, unchanged). Arguments as :class:`RetinaNetWithTTA`.
    """

    def __init__(
        self,
        model: nn.Module,
        min_sizes: Sequence[int],
        max_size: int,
        flip: bool = True,
        batch_size: int = 3,
        soft_nms: Optional[Mapping] = None,
    ):
        model = unwrap_model(model)
        if not isinstance(model, GeneralizedRCNN):
            raise TypeError(
                f"RCNNWithTTA needs a GeneralizedRCNN, got {type(model).__name__}; use build_tta_model."
            )
        nms_owner(model)  # a single FastRCNNOutputLayers box predictor, or a clear error
        if getattr(model.roi_heads, "keypoint_on", False):
            raise ValueError("Test-time augmentation of keypoint heads is not supported (nor in Detectron2).")
        if model.proposal_generator is None:
            raise ValueError(
                "Test-time augmentation with precomputed proposals is not supported (nor in Detectron2)."
            )
        soft_nms = soft_nms_options(soft_nms)
        _check_tta_args(min_sizes, max_size, batch_size)
        yacs = get_cfg()
        yacs.MODEL.MASK_ON = bool(getattr(model.roi_heads, "mask_on", False))
        yacs.MODEL.KEYPOINT_ON = False
        yacs.MODEL.LOAD_PROPOSALS = False
        tta_mapper = _tta_mapper(min_sizes, max_size, flip)
        yacs.TEST.AUG.update(
            ENABLED=True, MIN_SIZES=tuple(tta_mapper.min_sizes), MAX_SIZE=tta_mapper.max_size, FLIP=tta_mapper.flip
        )
        super().__init__(yacs, model, tta_mapper=tta_mapper, batch_size=batch_size)
        self.soft_nms = soft_nms

    def __call__(self, batched_inputs):
        return super().__call__([_with_image_size(x) for x in batched_inputs])

    def _get_augmented_boxes(self, augmented_inputs, tfms):
        with detections_before_nms(self.model) if self.soft_nms else nullcontext():
            outputs = self._batch_inference(augmented_inputs)
        return _in_original_frame(outputs, tfms)

    def _merge_detections(self, all_boxes, all_scores, all_classes, shape_hw):
        predictor = self.model.roi_heads.box_predictor
        boxes = Boxes(all_boxes)
        boxes.clip(shape_hw)  # as fast_rcnn_inference_single_image, upstream's merge, does
        keep, scores = merge_detections(
            boxes.tensor,
            all_scores,
            all_classes,
            predictor.test_nms_thresh,
            predictor.test_topk_per_image,
            self.soft_nms,
        )
        merged = Instances(
            shape_hw, pred_boxes=Boxes(boxes.tensor[keep]), scores=scores, pred_classes=all_classes[keep]
        )
        return merged[merged.pred_boxes.nonempty()]  # as the model's postprocessing does


def build_tta_model(model: nn.Module, test_cfg: Mapping) -> nn.Module:
    """The TTA wrapper for ``model`` (or its DDP wrapper) from a config's ``test`` node:
    ``test.aug`` (min_sizes, max_size, flip) and ``test.soft_nms`` (used for the merge when enabled).

    Raises:
        TypeError: for a model that is neither a RetinaNet-style detector nor a GeneralizedRCNN
            (e.g. Detectron2's ProposalNetwork).
    """
    aug = test_cfg["aug"]
    soft_nms = soft_nms_options(test_cfg.get("soft_nms"))
    kwargs = dict(
        min_sizes=list(aug["min_sizes"]), max_size=aug["max_size"], flip=aug["flip"], soft_nms=soft_nms
    )
    m = unwrap_model(model)
    kind = nms_owner(m)[1]  # TypeError naming the model for anything else
    return RetinaNetWithTTA(m, **kwargs) if kind == "dense" else RCNNWithTTA(m, **kwargs)
