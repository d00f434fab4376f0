"""Proposal recall (COCO average recall, AR) of RPN-only models at several proposal budgets.

NoisyAnchors Table 5 reports AR@100, AR@300 and AR@1000 of Detectron2's ``ProposalNetwork``;
Detectron2's ``COCOEvaluator`` computes only AR@100 and AR@1000. :class:`ProposalRecallEvaluator`
is that evaluator with configurable budgets; the recall itself is Detectron2's own
``_evaluate_box_proposals`` (greedy one-to-one matching of the top-``limit`` proposals by
objectness to the ground truth, recall averaged over IoU 0.50:0.05:0.95), so AR@100 and AR@1000
are identical to Detectron2's numbers.
"""
import logging
import os
import pickle
from collections import OrderedDict
from typing import Dict, List, Sequence, Union

from detectron2.evaluation import COCOEvaluator
from detectron2.evaluation.coco_evaluation import _evaluate_box_proposals
from detectron2.structures import BoxMode
from detectron2.utils.file_io import PathManager
from detectron2.utils.logger import create_small_table

from ..data.coco_files import ensure_prepared

__all__ = [
    "AREA_SUFFIXES",
    "ProposalRecallEvaluator",
    "build_proposal_recall_evaluator",
    "check_post_nms_topk",
    "proposal_recall",
]

logger = logging.getLogger(__name__)

#: COCO area ranges and the suffix of their metric name (``AR@100``, ``ARs@100``, ...), as in Detectron2.
AREA_SUFFIXES = OrderedDict([("all", ""), ("small", "s"), ("medium", "m"), ("large", "l")])


def proposal_recall(
    predictions: List[Dict],
    coco_api,
    limits: Sequence[int] = (100, 300, 1000),
    areas: Sequence[str] = tuple(AREA_SUFFIXES),
) -> "OrderedDict[str, float]":
    """Average recall of box proposals, in percent, per proposal budget and object size.

    Args:
        predictions: one dict per image with ``image_id`` and ``proposals`` (``Instances`` with
            ``proposal_boxes`` in absolute XYXY and ``objectness_logits``), as
            ``COCOEvaluator.process`` collects them from a ``ProposalNetwork``.
        coco_api: a ``pycocotools.coco.COCO`` holding the ground truth.
        limits: proposal budgets; the ``limit`` highest-objectness proposals of each image count.
        areas: COCO area ranges among "all", "small", "medium", "large".

    Returns:
        ``{"AR@100": .., "ARs@100": .., "ARm@100": .., "ARl@100": .., "AR@300": .., ...}``
        (Detectron2's key names); NaN where the dataset has no ground truth of that size.
    """
    unknown = [a for a in areas if a not in AREA_SUFFIXES]
    if unknown:
        raise ValueError(f"proposal_recall: unknown area range(s) {unknown}; use some of {list(AREA_SUFFIXES)}")
    bad = [x for x in limits if int(x) != x or x < 1]
    if bad:
        raise ValueError(f"proposal_recall: limits must be positive integers, got {list(limits)}")
    res = OrderedDict()
    for limit in limits:
        for area in areas:
            stats = _evaluate_box_proposals(predictions, coco_api, area=area, limit=int(limit))
            key = f"AR{AREA_SUFFIXES[area]}@{int(limit)}"
            res[key] = float(stats["ar"].item() * 100) if stats["num_pos"] > 0 else float("nan")
    return res


def check_post_nms_topk(post_nms_topk: Union[int, Sequence[int]], limits: Sequence[int]) -> None:
    """Raise if the RPN keeps fewer proposals per image at test time than the largest budget.

    Args:
        post_nms_topk: the RPN's ``post_nms_topk``: a (train, test) pair as in Detectron2's RPN,
            or the test value alone.
        limits: the evaluated proposal budgets.
    """
    if isinstance(post_nms_topk, (int, float)):
        test_topk = int(post_nms_topk)
    else:
        values = list(post_nms_topk)
        if len(values) != 2:
            raise ValueError(
                f"post_nms_topk={values!r}: expected the RPN's (train, test) pair or one number"
            )
        test_topk = int(values[1])
    if test_topk < max(limits):
        raise ValueError(
            f"Proposal recall up to AR@{max(limits)} needs at least {max(limits)} proposals per image, "
            f"but the RPN keeps post_nms_topk={test_topk} at test time: AR@{max(limits)} would silently "
            f"equal AR@{test_topk}. Override model.proposal_generator.post_nms_topk=[TRAIN,{max(limits)}] "
            f"or evaluate smaller limits (dataloader.evaluator.limits)."
        )


class ProposalRecallEvaluator(COCOEvaluator):
    """``COCOEvaluator`` whose box-proposal metrics are AR at the given ``limits`` (default
    100/300/1000) for all/small/medium/large objects, under ``results["box_proposals"]``.

    Like the parent it also writes ``box_proposals.pkl`` to ``output_dir`` and evaluates
    ``instances`` (AP) when the model outputs detections.
    """

    def __init__(self, dataset_name: str, *args, limits: Sequence[int] = (100, 300, 1000), **kwargs):
        super().__init__(dataset_name, *args, **kwargs)
        if not limits:
            raise ValueError("ProposalRecallEvaluator: limits must name at least one proposal budget")
        self._limits = tuple(int(x) for x in limits)

    def _eval_box_proposals(self, predictions):
        if self._output_dir:
            _save_box_proposals(predictions, os.path.join(self._output_dir, "box_proposals.pkl"))
        if not self._do_evaluation:
            self._logger.info("Annotations are not available for evaluation.")
            return
        num_proposals = [len(p["proposals"]) for p in predictions]
        self._logger.info(
            f"Evaluating proposal recall at {list(self._limits)} ({len(predictions)} images, "
            f"{min(num_proposals)}-{max(num_proposals)} proposals per image) ..."
        )
        res = proposal_recall(predictions, self._coco_api, self._limits)
        self._logger.info("Proposal metrics: \n" + create_small_table(res))
        self._results["box_proposals"] = res


def _save_box_proposals(predictions: List[Dict], path: str) -> None:
    """The proposals as Detectron2's ``COCOEvaluator`` saves them (``box_proposals.pkl``: boxes in
    XYXY_ABS, objectness logits and image ids per image)."""
    data = {
        "boxes": [p["proposals"].proposal_boxes.tensor.numpy() for p in predictions],
        "objectness_logits": [p["proposals"].objectness_logits.numpy() for p in predictions],
        "ids": [p["image_id"] for p in predictions],
        "bbox_mode": BoxMode.XYXY_ABS.value,
    }
    PathManager.mkdirs(os.path.dirname(path))
    with PathManager.open(path, "wb") as f:
        pickle.dump(data, f)


def build_proposal_recall_evaluator(
    dataset_name: str,
    output_dir=None,
    limits: Sequence[int] = (100, 300, 1000),
    post_nms_topk=None,
    **kwargs,
) -> ProposalRecallEvaluator:
    """:class:`ProposalRecallEvaluator` for LazyConfigs, after making sure a generated dataset has
    written its COCO json (like :func:`detkit.evaluation.build_coco_evaluator`).

    Args:
        post_nms_topk: the RPN's ``post_nms_topk`` (configs pass
            ``"${model.proposal_generator.post_nms_topk}"``); when given, an error is raised if the
            model keeps fewer proposals at test time than ``max(limits)``.
        kwargs: go to ``COCOEvaluator`` (``tasks``, ``distributed``, ...).
    """
    limits = tuple(int(x) for x in limits)
    if post_nms_topk is not None:
        check_post_nms_topk(post_nms_topk, limits)
    ensure_prepared(dataset_name)
    return ProposalRecallEvaluator(dataset_name, output_dir=output_dir, limits=limits, **kwargs)
