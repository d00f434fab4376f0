"""Classification confidence against localisation quality (NoisyAnchors Table 7).

The paper collects the "top-2 % confident predictions on COCO minival before and after NMS",
reports their mean classification confidence and mean IoU with the matched ground truth, and the
Pearson correlation between confidence and IoU of these predictions before NMS. Choices made here
where the paper is silent:

* **before NMS** = the candidates the stock inference hands to NMS: per feature level the
  ``test_topk_candidates`` highest (anchor, class) scores above ``test_score_thresh``, decoded,
  rescaled to the original image and clipped. They are obtained by running the model's own
  inference with ``test_nms_thresh=1.0`` (torchvision's NMS suppresses only IoU > threshold) and no
  per-image limit, so nothing of RetinaNet's inference is re-implemented;
* **after NMS** = the model's normal output (per-class NMS, at most ``max_detections_per_image``);
* **top 2 %** = the ``ceil(0.02 N)`` highest-scoring of the N predictions pooled over all images
  (not per image); ties are broken by a stable sort;
* **matched ground truth** = the ground-truth box of the predicted class with the highest IoU
  (``class_aware=False``: of any class); a prediction with no such box has IoU 0. Crowd boxes are
  ignored;
* the Pearson correlation is computed on the top-fraction set (as the paper), and is also given
  over all predictions of each set (``pearson_all``).
"""
import copy
import math
from typing import Dict, Iterable, List, Optional, Sequence

import torch

from ..modeling.nms_inference import detections_before_nms

__all__ = [
    "analyze_checkpoint",
    "confidence_iou_analysis",
    "detections_with_gt_iou",
    "empty_result_notes",
    "gt_boxes_and_classes",
    "iou_with_matched_gt",
    "pearson",
    "score_threshold_of",
    "top_fraction_stats",
]


def pearson(x, y) -> float:
    """Pearson correlation coefficient of two 1-d sequences (tensors, arrays, lists) of equal
    length N, computed in float64; NaN if N < 2 or either has zero variance."""
    x = torch.as_tensor(x, dtype=torch.float64).flatten()
    y = torch.as_tensor(y, dtype=torch.float64).flatten()
    if x.numel() != y.numel():
        raise ValueError(f"pearson: x has {x.numel()} values, y has {y.numel()}")
    if x.numel() < 2:
        return float("nan")
    dx, dy = x - x.mean(), y - y.mean()
    denom = torch.sqrt((dx * dx).sum() * (dy * dy).sum())
    if denom == 0:
        return float("nan")
    return float((dx * dy).sum() / denom)


def top_fraction_stats(scores, ious, fraction: float = 0.02) -> Dict[str, float]:
    """Statistics of the most confident ``fraction`` of predictions.

    Args:
        scores: (N,) classification confidences.
        ious: (N,) IoU of each prediction with its matched ground truth.
        fraction: in (0, 1]; the top ``ceil(fraction * N)`` scores are kept (stable sort, so ties
            keep their input order).

    Returns:
        ``{"predictions": N, "top": k, "mean_confidence", "mean_iou", "pearson"}`` (the last three
        over the top k; NaN when N == 0), plus ``"pearson_all"`` over all N.
    """
    if not 0 < fraction <= 1:
        raise ValueError(f"top_fraction_stats: fraction must be in (0, 1], got {fraction}")
    scores = torch.as_tensor(scores, dtype=torch.float64).flatten()
    ious = torch.as_tensor(ious, dtype=torch.float64).flatten()
    if scores.numel() != ious.numel():
        raise ValueError(f"top_fraction_stats: {scores.numel()} scores but {ious.numel()} IoUs")
    n = scores.numel()
    k = max(1, math.ceil(fraction * n - 1e-9)) if n else 0  # tolerance: 0.07 * 100 = 7.000000000000001
    order = torch.sort(scores, descending=True, stable=True).indices[:k]
    top_scores, top_ious = scores[order], ious[order]
    nan = float("nan")
    return {
        "predictions": n,
        "top": k,
        "mean_confidence": float(top_scores.mean()) if k else nan,
        "mean_iou": float(top_ious.mean()) if k else nan,
        "pearson": pearson(top_scores, top_ious),
        "pearson_all": pearson(scores, ious),
    }


def iou_with_matched_gt(
    pred_boxes: torch.Tensor,
    pred_classes: torch.Tensor,
    gt_boxes: torch.Tensor,
    gt_classes: torch.Tensor,
    class_aware: bool = True,
) -> torch.Tensor:
    """IoU of each prediction with its best-overlapping ground-truth box.

    Args:
        pred_boxes: (N, 4) XYXY; pred_classes: (N,) class indices.
        gt_boxes: (M, 4) XYXY; gt_classes: (M,) class indices.
        class_aware: only ground truth of the predicted class can be matched.

    Returns:
        (N,) float IoU in [0, 1]; 0 where no ground truth (of that class) exists.
    """
    from torchvision.ops import box_iou

    pred_boxes, gt_boxes = pred_boxes.reshape(-1, 4).float(), gt_boxes.reshape(-1, 4).float()
    if len(gt_boxes) == 0 or len(pred_boxes) == 0:
        return torch.zeros(len(pred_boxes), dtype=torch.float32, device=pred_boxes.device)
    iou = box_iou(pred_boxes, gt_boxes)  # (N, M)
    if class_aware:
        same = pred_classes.reshape(-1, 1) == gt_classes.reshape(1, -1)
        iou = torch.where(same, iou, torch.zeros_like(iou))
    return iou.max(dim=1).values


def gt_boxes_and_classes(dataset_dict: Dict):
    """Non-crowd ground truth of a Detectron2 dataset dict: ``(boxes (M, 4) XYXY_ABS, classes (M,))``
    in the coordinates of the original image (what ``detector_postprocess`` outputs)."""
    from detectron2.structures import BoxMode

    anns = [a for a in dataset_dict.get("annotations", []) if not a.get("iscrowd", 0)]
    boxes = [BoxMode.convert(a["bbox"], a["bbox_mode"], BoxMode.XYXY_ABS) for a in anns]
    return (
        torch.as_tensor(boxes, dtype=torch.float32).reshape(-1, 4),
        torch.as_tensor([a["category_id"] for a in anns], dtype=torch.int64),
    )


def detections_with_gt_iou(model, dataset_dicts: Iterable[Dict], mapper, class_aware: bool = True) -> List:
    """Run ``model`` (eval mode, no grad, one image at a time) on each dataset dict and return its
    detections (``Instances`` on the CPU, original image coordinates) with an extra field
    ``gt_iou`` = :func:`iou_with_matched_gt`."""
    was_training = model.training
    model.eval()
    out = []
    try:
        with torch.no_grad():
            for d in dataset_dicts:
                inputs = mapper(copy.deepcopy(d))
                inst = model([inputs])[0]["instances"].to("cpu")
                gt_boxes, gt_classes = gt_boxes_and_classes(d)
                inst.gt_iou = iou_with_matched_gt(
                    inst.pred_boxes.tensor, inst.pred_classes, gt_boxes, gt_classes, class_aware
                )
                out.append(inst)
    finally:
        model.train(was_training)
    return out


def confidence_iou_analysis(
    model,
    dataset_dicts: Sequence[Dict],
    mapper,
    top_fraction: float = 0.02,
    class_aware: bool = True,
    return_detections: bool = False,
) -> Dict:
    """NoisyAnchors Table 7 for one dense detector on some images (see the module docstring).

    Returns:
        ``{"images": n, "top_fraction": f, "before_nms": stats, "after_nms": stats}`` with
        :func:`top_fraction_stats` dicts; with ``return_detections`` also ``"detections"``:
        ``{"before_nms": [Instances], "after_nms": [Instances]}`` per image.
    """
    with detections_before_nms(model):  # every NMS candidate: NMS IoU 1.0, no per-image cap
        before = detections_with_gt_iou(model, dataset_dicts, mapper, class_aware)
    after = detections_with_gt_iou(model, dataset_dicts, mapper, class_aware)
    result = {"images": len(dataset_dicts), "top_fraction": top_fraction, "class_aware": class_aware}
    for key, dets in (("before_nms", before), ("after_nms", after)):
        scores = torch.cat([d.scores for d in dets]) if dets else torch.zeros(0)
        ious = torch.cat([d.gt_iou for d in dets]) if dets else torch.zeros(0)
        result[key] = top_fraction_stats(scores, ious, top_fraction)
    if return_detections:
        result["detections"] = {"before_nms": before, "after_nms": after}
    return result


def analyze_checkpoint(
    cfg,
    checkpoint: Optional[str],
    dataset: Optional[str] = None,
    num_images: Optional[int] = None,
    top_fraction: float = 0.02,
    class_aware: bool = True,
) -> Dict:
    """:func:`confidence_iou_analysis` of a LazyConfig model loaded from ``checkpoint`` (``None``:
    the freshly initialised model), on ``dataset`` (default: the config's test set), first
    ``num_images`` images (default all), with the config's test mapper."""
    from detectron2.config import instantiate
    from detectron2.data import get_detection_dataset_dicts

    from ..analysis import load_model
    from ..data.coco_files import ensure_prepared
    from ..engine import select_device

    dataset = dataset or cfg.dataloader.test.dataset.names
    if not isinstance(dataset, str):
        dataset = list(dataset)
    names = [dataset] if isinstance(dataset, str) else dataset
    for name in names:
        ensure_prepared(name)
    dicts = get_detection_dataset_dicts(names, filter_empty=False)
    if num_images is not None:
        if num_images < 1:
            raise ValueError(f"num_images must be >= 1, got {num_images}")
        dicts = dicts[:num_images]
    mapper = instantiate(cfg.dataloader.test.mapper)
    if checkpoint is not None:
        model = load_model(cfg, checkpoint, device=select_device(cfg.train.get("device", "cuda")))
    else:
        model = instantiate(cfg.model).to(select_device(cfg.train.get("device", "cuda")))
    result = confidence_iou_analysis(model, dicts, mapper, top_fraction=top_fraction, class_aware=class_aware)
    result["dataset"] = dataset
    result["checkpoint"] = checkpoint
    result["score_thresh_key"], result["score_thresh"] = score_threshold_of(model)
    return result


def score_threshold_of(model):
    """(config key, value) of the score threshold below which ``model`` drops detections:
    ``model.test_score_thresh`` of the dense detectors, the box predictor's for R-CNNs; (None,
    None) when it has neither."""
    if hasattr(model, "test_score_thresh"):
        return "model.test_score_thresh", float(model.test_score_thresh)
    predictor = getattr(getattr(model, "roi_heads", None), "box_predictor", None)
    if hasattr(predictor, "test_score_thresh"):
        return "model.roi_heads.box_predictor.test_score_thresh", float(predictor.test_score_thresh)
    return None, None


def empty_result_notes(result: Dict) -> List[str]:
    """Why an :func:`analyze_checkpoint` result has NaNs, and what to do: no detections at all (every
    mean is undefined), or fewer than two / identical values (the correlation is undefined)."""
    before, after = result["before_nms"], result["after_nms"]
    key, thresh = result.get("score_thresh_key"), result.get("score_thresh")
    if before["predictions"] == 0:
        where = f" above {key}={thresh:g}" if key is not None else ""
        lower = (f"; lower the threshold, e.g. {key}=0.0 on the command line, to analyse the low-scoring "
                 "predictions" if key is not None and thresh > 0 else "")
        return [f"the model made no detections{where} on the {result['images']} images, so every mean and "
                f"correlation is undefined (NaN){lower}. An untrained or collapsed model (see its training "
                "curves) gives this."]
    notes = []
    if math.isnan(before["pearson"]) or math.isnan(before["pearson_all"]):
        notes.append(f"Pearson is NaN: {before['top']} top / {before['predictions']} predictions before NMS "
                     "(it needs at least two, with different confidences and IoUs); use a larger "
                     "--top-fraction or more images")
    if after["predictions"] == 0:
        notes.append("no detections after NMS (its means are NaN)")
    return notes
