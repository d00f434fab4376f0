"""Box metrics at one IoU threshold, beside COCO's AP/AP50/AP75: the NEON tree-crown benchmark
(Weinstein et al. 2021, the source of this project's tree-crown imagery) scores boxes at IoU 0.4,
because crown outlines are ambiguous (AP75 stays near 1-2 for every model here).

``iou_metrics(coco_gt, coco_dt, iou=0.4, score_thresh=0.1)`` returns

    AP40   COCO's 101-point interpolated AP at IoU 0.4 (all areas, ``max_dets`` per image), in %
    P40    precision at IoU 0.4 of the detections scoring >= score_thresh, in %
    R40    recall at IoU 0.4 of those detections, in %

(suffix = round(100 * iou)). Precision and recall use COCO's own one-to-one matching (pycocotools
``COCOeval.evaluateImg``: per image and category, detections in descending score order each take the
best still-unmatched ground truth with IoU >= iou; crowd boxes are ignored, not counted), so P/R and
AP count matches the same way. DeepForest's default score threshold is 0.1, the default here.
"""
import copy
import logging
from typing import Dict, Optional

import numpy as np
from detectron2.evaluation import COCOEvaluator

logger = logging.getLogger(__name__)


def metric_names(iou: float):
    suffix = f"{round(100 * iou):d}"
    return f"AP{suffix}", f"P{suffix}", f"R{suffix}"


def iou_metrics(coco_gt, coco_dt, iou: float = 0.4, score_thresh: float = 0.1, max_dets: int = 100,
                img_ids=None, params=None) -> Dict[str, float]:
    """AP, precision and recall (in %) at one IoU threshold; see the module docstring.

    Args:
        coco_gt, coco_dt: pycocotools ``COCO`` objects (ground truth, detections via ``loadRes``).
        iou: the IoU threshold (0 < iou < 1).
        score_thresh: detections below it are left out of precision and recall (not of AP).
        max_dets: detections per image kept (highest scores), for all three.
        img_ids: evaluate these images only (default: every image of ``coco_gt``).
        params: a ``COCOeval.params`` to start from (the evaluator's); iouThrs, areaRng and maxDets
            are replaced.
    Returns:
        ``{"AP40": ..., "P40": ..., "R40": ...}``; NaN where undefined (no ground truth for recall
        and AP, no detection above the threshold for precision).
    """
    from pycocotools.cocoeval import COCOeval

    if not 0.0 < iou < 1.0:
        raise ValueError(f"iou_metrics: iou must lie in (0, 1), got {iou}.")
    ap_name, p_name, r_name = metric_names(iou)
    coco_eval = COCOeval(coco_gt, coco_dt, "bbox")
    if params is not None:
        coco_eval.params = copy.deepcopy(params)
    if img_ids is not None:
        coco_eval.params.imgIds = list(img_ids)
    coco_eval.params.iouThrs = np.array([iou], dtype=np.float64)
    coco_eval.params.maxDets = [max_dets]
    coco_eval.params.areaRng = [[0 ** 2, 1e5 ** 2]]
    coco_eval.params.areaRngLbl = ["all"]
    coco_eval.evaluate()
    coco_eval.accumulate()

    precision = coco_eval.eval["precision"][0, :, :, 0, 0]  # [recall points, categories]
    valid = precision[:, (precision > -1).all(axis=0)]
    ap = float(np.mean(valid) * 100) if valid.size else float("nan")

    tp = fp = num_gt = 0
    for e in coco_eval.evalImgs:
        if e is None:
            continue
        gt_ignore = np.asarray(e["gtIgnore"], dtype=bool)
        num_gt += int((~gt_ignore).sum())
        scores = np.asarray(e["dtScores"], dtype=np.float64)
        if scores.size == 0:
            continue
        keep = (scores >= score_thresh) & ~np.asarray(e["dtIgnore"][0], dtype=bool)
        matched = np.asarray(e["dtMatches"][0]) > 0
        tp += int((keep & matched).sum())
        fp += int((keep & ~matched).sum())
    precision_at = tp / (tp + fp) * 100 if tp + fp else float("nan")
    recall_at = tp / num_gt * 100 if num_gt else float("nan")
    return {ap_name: ap, p_name: float(precision_at), r_name: float(recall_at)}


class IoUMetricsCOCOEvaluator(COCOEvaluator):
    """Detectron2's ``COCOEvaluator`` whose "bbox" results also hold :func:`iou_metrics` (AP40, P40,
    R40 for ``iou=0.4``), computed from the same ground truth, detections and image ids as the
    standard COCO metrics. A model without a single detection gets box AP 0, not Detectron2's NaN
    (which a mean over seeds would silently leave out)."""

    def __init__(self, dataset_name: str, *args, iou: float = 0.4, score_thresh: float = 0.1, **kwargs):
        if not 0.0 < iou < 1.0:
            raise ValueError(f"dataloader.evaluator.iou={iou}: an IoU threshold must lie in (0, 1).")
        if not 0.0 <= score_thresh < 1.0:
            raise ValueError(
                f"dataloader.evaluator.score_thresh={score_thresh}: a score threshold must lie in [0, 1)."
            )
        super().__init__(dataset_name, *args, **kwargs)
        self._iou, self._score_thresh = iou, score_thresh

    def _derive_coco_results(self, coco_eval, iou_type, class_names=None):
        results = super()._derive_coco_results(coco_eval, iou_type, class_names=class_names)
        if iou_type != "bbox":
            return results
        if coco_eval is None:
            # No detection at all. Detectron2 reports NaN, which a mean over seeds would silently
            # drop; a model that finds nothing has AP 0 wherever there is ground truth to find.
            results.update(_zero_ap_where_ground_truth(self._coco_api, results))
            self._logger.warning("No detections: box AP reported as 0 (not NaN) where there is ground truth.")
            extra = dict(zip(metric_names(self._iou), (0.0, float("nan"), 0.0)))
        else:
            extra = iou_metrics(
                coco_eval.cocoGt, coco_eval.cocoDt, iou=self._iou, score_thresh=self._score_thresh,
                max_dets=self._max_dets_per_image[-1], params=coco_eval.params,
            )
        self._logger.info(
            f"Box metrics at IoU {self._iou} (P/R of detections scoring >= {self._score_thresh}): "
            + ", ".join(f"{k} {v:.2f}" for k, v in extra.items())
        )
        results.update(extra)
        return results


# COCOeval's area ranges of the box metrics
_AREAS = {"APs": (0, 32 ** 2), "APm": (32 ** 2, 96 ** 2), "APl": (96 ** 2, 1e10)}


def _zero_ap_where_ground_truth(coco_gt, results: Dict[str, float]) -> Dict[str, float]:
    """For a model without any detection: 0.0 for AP / AP50 / AP75 and each size bucket holding
    non-crowd ground truth; NaN stays where there is none (as COCOeval does)."""
    areas = [a.get("area", 0.0) for a in coco_gt.dataset.get("annotations", []) if not a.get("iscrowd", 0)]
    out = {}
    for key in results:
        if key in _AREAS:
            lo, hi = _AREAS[key]
            out[key] = 0.0 if any(lo <= a < hi for a in areas) else float("nan")
        elif key.startswith("AP") and areas:
            out[key] = 0.0
    return out


def build_iou_metrics_evaluator(dataset_name: str, output_dir: Optional[str] = None, **kwargs):
    """:class:`IoUMetricsCOCOEvaluator` after making sure a generated dataset has its COCO json."""
    from ..data.coco_files import ensure_prepared

    ensure_prepared(dataset_name)
    return IoUMetricsCOCOEvaluator(dataset_name, output_dir=output_dir, **kwargs)
