"""Checks of dataset dicts and of the model against its data, run when a training loader is built.

What Detectron2 does with bad annotations, and what this module does instead:

* a box partly outside its image: Detectron2's mapper clips it after the augmentations, silently.
  Here it is clipped to the image in the dataset dicts and counted in the one warning below.
* a box of zero or negative area (also after clipping, e.g. a box wholly outside the image): the
  mapper drops it silently (``filter_empty_instances``); a custom mapper that kept it would give
  ``log(0) = -inf`` box-regression targets and a NaN loss later. Here it is dropped from the dicts
  and counted in the same warning: ONE warning per dataset, with the counts and an example file.
* a non-finite coordinate, a bbox that is not 4 numbers, a missing or unsupported ``bbox_mode``: a
  :class:`~detkit.data.DatasetError` naming the file, the annotation index and the value.
* integer box coordinates: Detectron2's resize transforms scale the box array in place, so an
  integer array is truncated (``[100, 100, 200, 200]`` at 1024 -> 128 px becomes ``[12, 12, 37, 37]``,
  a 3-px box vanishes). Here every box of the dicts is made of floats.
* a class id outside ``0..len(thing_classes)-1``: Detectron2 stops with a bare
  ``AssertionError`` while printing its class histogram, or, when ids are not checked there, trains
  an id equal to the model's ``num_classes`` silently as background. Here it is a DatasetError
  naming the file, the id and the valid range; :func:`check_model_classes` (called by
  ``train_net.py``) refuses a dataset with more classes than the model predicts.

:func:`validated_dataset_dicts` is a drop-in for Detectron2's ``get_detection_dataset_dicts`` for
LazyConfig data loaders (``configs/common/data/*.py``).
"""
import logging
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from .errors import DatasetError

__all__ = [
    "boxes_to_xyxy",
    "clip_boxes",
    "validate_dataset_dicts",
    "validated_dataset_dicts",
    "model_num_classes",
    "check_model_classes",
]

logger = logging.getLogger(__name__)

_XYXY_ABS, _XYWH_ABS = 0, 1  # detectron2.structures.BoxMode values (an IntEnum)
_MODE_NAMES = {_XYXY_ABS: "XYXY_ABS", _XYWH_ABS: "XYWH_ABS"}


def boxes_to_xyxy(boxes: np.ndarray, modes: np.ndarray) -> np.ndarray:
    """Convert boxes given in Detectron2's ``XYXY_ABS`` (0) or ``XYWH_ABS`` (1) mode to XYXY.

    Args:
        boxes: (N, 4) float.
        modes: (N,) int, each 0 or 1.
    Returns:
        (N, 4) float XYXY, a new array.
    """
    xyxy = np.array(boxes, dtype=np.float64, copy=True).reshape(-1, 4)
    wh = modes == _XYWH_ABS
    xyxy[wh, 2:] += xyxy[wh, :2]
    return xyxy


def clip_boxes(boxes_xyxy: np.ndarray, image_wh: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Clip boxes to their images and find those of zero or negative area after clipping.

    Args:
        boxes_xyxy: (N, 4) float XYXY in absolute pixels.
        image_wh: (N, 2) width and height of each box's image (``inf`` where unknown).
    Returns:
        clipped: (N, 4) boxes clipped to ``[0, width] x [0, height]``.
        degenerate: (N,) bool, True where the clipped box has zero or negative width or height.
    """
    limits = np.concatenate([image_wh, image_wh], axis=1)
    clipped = np.minimum(np.maximum(boxes_xyxy, 0.0), limits)
    degenerate = ~((clipped[:, 2] > clipped[:, 0]) & (clipped[:, 3] > clipped[:, 1]))
    return clipped, degenerate


def validate_dataset_dicts(
    dataset_dicts: List[Dict], dataset_name: str, class_names: Optional[Sequence[str]] = None
) -> List[Dict]:
    """Check the annotations of Detectron2 dataset dicts, clip boxes to their images and drop boxes
    of zero or negative area (see the module docstring).

    All boxes of the dataset are checked at once with numpy. Records and annotations that change
    are copied, never modified in place (a DatasetCatalog function may return cached dicts).

    Args:
        dataset_dicts: Detectron2 dataset dicts (``file_name``, ``image_id``, ``width``,
            ``height``, ``annotations`` with ``bbox``, ``bbox_mode``, ``category_id``).
        dataset_name: for the messages.
        class_names: the dataset's ``thing_classes``; when given, category ids must lie in
            ``0..len(class_names)-1``, otherwise they must be non-negative integers.
    Returns:
        the dataset dicts, with boxes clipped and degenerate boxes removed.
    Raises:
        DatasetError: a malformed annotation, naming the file, the annotation index and the value.
    """
    counts = np.array([len(d.get("annotations", ())) for d in dataset_dicts], dtype=np.int64)
    anns = [a for d in dataset_dicts for a in d.get("annotations", ())]
    if not anns:
        return dataset_dicts
    image_of = np.repeat(np.arange(len(dataset_dicts)), counts)
    first_of_image = np.cumsum(counts) - counts

    def where(k: int) -> str:
        d = dataset_dicts[image_of[k]]
        return (
            f"{d.get('file_name', '<no file_name>')} (image id {d.get('image_id')}, dataset "
            f"{dataset_name!r}), annotations[{k - first_of_image[image_of[k]]}]"
        )

    boxes = _column(anns, "bbox", (4,), where, "a bbox of 4 numbers in its bbox_mode")
    modes = _column(anns, "bbox_mode", (), where, "a bbox_mode (detectron2.structures.BoxMode)")
    cats = _column(anns, "category_id", (), where, "an integer category_id")

    bad = np.flatnonzero(~np.isfinite(boxes).all(axis=1))
    if bad.size:
        raise DatasetError(
            f"{where(bad[0])}: bbox {anns[bad[0]]['bbox']!r} has a non-finite coordinate "
            f"({bad.size} such boxes). Fix or remove these annotations."
        )
    bad = np.flatnonzero((modes != _XYXY_ABS) & (modes != _XYWH_ABS))
    if bad.size:
        raise DatasetError(
            f"{where(bad[0])}: bbox_mode {anns[bad[0]]['bbox_mode']!r} is not supported; boxes must "
            "be BoxMode.XYXY_ABS or BoxMode.XYWH_ABS (absolute pixels). Convert them in the "
            "dataset's loading function."
        )
    num_classes = len(class_names) if class_names is not None else None
    in_range = (cats >= 0) & (cats == np.round(cats))
    if num_classes is not None:
        in_range &= cats < num_classes
    bad = np.flatnonzero(~in_range)
    if bad.size:
        valid = (
            f"0..{num_classes - 1}, the indices into its thing_classes {list(class_names)}"
            if num_classes is not None
            else "a non-negative integer"
        )
        raise DatasetError(
            f"{where(bad[0])}: category_id {anns[bad[0]]['category_id']!r} is out of range: it must "
            f"be {valid} ({bad.size} annotation(s) are out of range). Fix these annotations, or "
            "list the missing classes in the dataset's thing_classes (for a COCO json: its "
            '"categories").'
        )

    image_wh = np.array(
        [[d.get("width", np.inf), d.get("height", np.inf)] for d in dataset_dicts], dtype=np.float64
    )[image_of]
    xyxy = boxes_to_xyxy(boxes, modes)
    clipped, degenerate = clip_boxes(xyxy, image_wh)
    was_clipped = (clipped != xyxy).any(axis=1) & ~degenerate
    # Integer coordinates would be truncated by Detectron2's resize transforms (they scale the box
    # array in place): [100, 100, 200, 200] at 1024 -> 128 px becomes [12, 12, 37, 37]. Make them floats.
    has_int = np.fromiter((not all(type(v) is float for v in a["bbox"]) for a in anns), dtype=bool, count=len(anns))
    if not (was_clipped.any() or degenerate.any() or has_int.any()):
        return dataset_dicts

    new_boxes = np.where((modes == _XYWH_ABS)[:, None], _xyxy_to_xywh(clipped), clipped)
    out = list(dataset_dicts)
    for i in np.unique(image_of[was_clipped | degenerate | has_int]):
        ks = range(first_of_image[i], first_of_image[i] + counts[i])
        record = dict(dataset_dicts[i])
        record["annotations"] = [
            dict(anns[k], bbox=new_boxes[k].tolist()) if was_clipped[k]
            else dict(anns[k], bbox=[float(v) for v in anns[k]["bbox"]]) if has_int[k]
            else anns[k]
            for k in ks
            if not degenerate[k]
        ]
        out[i] = record
    if was_clipped.any() or degenerate.any():
        _warn_once(dataset_name, len(anns), anns, where, image_wh, was_clipped, degenerate, new_boxes)
    return out


def _xyxy_to_xywh(boxes: np.ndarray) -> np.ndarray:
    return np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], axis=1)


def _column(anns: List[Dict], key: str, shape: Tuple[int, ...], where, what: str) -> np.ndarray:
    """``np.asarray([a[key] for a in anns], float64)`` of shape (N, *shape); on failure a
    DatasetError naming the first annotation at fault."""
    try:
        values = np.asarray([a[key] for a in anns], dtype=np.float64)
        if values.shape == (len(anns), *shape):
            return values
    except (KeyError, ValueError, TypeError):
        pass
    for k, a in enumerate(anns):  # error path only: find the culprit
        if key not in a:
            raise DatasetError(
                f"{where(k)}: no {key!r} (keys: {sorted(a)}); every annotation needs {what}."
            )
        try:
            ok = np.asarray(a[key], dtype=np.float64).shape == shape
        except (ValueError, TypeError):
            ok = False
        if not ok:
            raise DatasetError(
                f"{where(k)}: {key} = {a[key]!r}, but every annotation needs {what}. Fix the "
                "annotation or the dataset's loading function."
            )
    raise AssertionError("unreachable: a column failed to convert but no entry is at fault")


def _warn_once(dataset_name, num_boxes, anns, where, image_wh, was_clipped, degenerate, new_boxes):
    parts = []
    if was_clipped.any():
        k = int(np.flatnonzero(was_clipped)[0])
        w, h = image_wh[k]
        parts.append(
            f"{int(was_clipped.sum())} box(es) extend beyond their image and were clipped to it "
            f"(e.g. {where(k)}: bbox {_fmt(anns[k]['bbox'])} in a {w:g}x{h:g} image became "
            f"{_fmt(new_boxes[k])})"
        )
    if degenerate.any():
        k = int(np.flatnonzero(degenerate)[0])
        parts.append(
            f"{int(degenerate.sum())} box(es) of zero or negative area (after clipping to the "
            f"image) were dropped, as they would give infinite box-regression targets (e.g. "
            f"{where(k)}: bbox {_fmt(anns[k]['bbox'])}, {_MODE_NAMES[int(anns[k]['bbox_mode'])]})"
        )
    logger.warning(
        f"Dataset {dataset_name!r}, {num_boxes} boxes: " + "; ".join(parts)
        + ". Fix these annotations to silence this warning."
    )


def _fmt(box) -> str:
    return "[" + ", ".join(f"{float(v):g}" for v in box) + "]"


def validated_dataset_dicts(
    names: Union[str, Sequence[str]],
    filter_empty: bool = True,
    min_keypoints: int = 0,
    proposal_files=None,
    check_consistency: bool = True,
):
    """Detectron2's ``get_detection_dataset_dicts`` (same arguments, same result for clean data)
    with :func:`validate_dataset_dicts` run on the dicts before images without boxes are filtered
    out (so an image whose boxes were all degenerate is filtered like one that had none) and
    before Detectron2's class histogram (which stops on a bad class id with a bare assertion)."""
    import torch.utils.data as torchdata
    from detectron2.data import MetadataCatalog, get_detection_dataset_dicts
    from detectron2.data.build import (
        filter_images_with_few_keypoints,
        filter_images_with_only_crowd_annotations,
        print_instances_class_histogram,
    )
    from detectron2.data.detection_utils import check_metadata_consistency

    names = [names] if isinstance(names, str) else list(names)
    dicts = get_detection_dataset_dicts(
        names,
        filter_empty=False,
        min_keypoints=0,
        proposal_files=proposal_files,
        check_consistency=False,
    )
    if isinstance(dicts, torchdata.Dataset) or "annotations" not in dicts[0]:
        return dicts  # an iterable dataset, or images without annotations: nothing to check
    if check_consistency:
        try:
            check_metadata_consistency("thing_classes", names)
        except AttributeError:  # no class names for these datasets (as Detectron2 allows)
            pass
    class_names = MetadataCatalog.get(names[0]).get("thing_classes", None)
    dicts = validate_dataset_dicts(dicts, ",".join(names), class_names)
    if filter_empty:
        dicts = filter_images_with_only_crowd_annotations(dicts)
    if min_keypoints > 0:
        dicts = filter_images_with_few_keypoints(dicts, min_keypoints)
    if check_consistency and class_names is not None:
        print_instances_class_histogram(dicts, class_names)
    if not dicts:
        raise DatasetError(
            f"Dataset(s) {names}: no image has a usable (non-crowd, non-degenerate) box. Check the "
            "annotations, or pass filter_empty=False to train on images without boxes."
        )
    return dicts


def model_num_classes(model) -> Optional[int]:
    """The number of object classes a detector predicts: ``num_classes`` of a RetinaNet-style
    model or of the ROI heads of an R-CNN; None for a class-agnostic model (an RPN alone)."""
    model = getattr(model, "module", model)  # DistributedDataParallel
    for part in (model, getattr(model, "roi_heads", None)):
        n = getattr(part, "num_classes", None)
        if isinstance(n, int):
            return n
    return None


def check_model_classes(model, dataset_names: Union[str, Sequence[str], None]) -> None:
    """Refuse to train a model on a dataset with more classes than it predicts.

    A class id equal to the model's ``num_classes`` is the background id in Detectron2's RetinaNet
    and Fast R-CNN losses: those objects would silently be learned as background (larger ids
    crash deep inside the loss). Call this once the training data are loaded (a COCO json sets
    ``thing_classes`` when it is read). Fewer dataset classes than the model predicts is allowed,
    with a warning.

    Raises:
        ValueError: naming both numbers and the config key to change.
    """
    n_model = model_num_classes(model)
    if n_model is None or dataset_names is None:
        return
    from detectron2.data import MetadataCatalog

    names = [dataset_names] if isinstance(dataset_names, str) else list(dataset_names)
    top_level = isinstance(getattr(getattr(model, "module", model), "num_classes", None), int)
    key = "model.num_classes" if top_level else "model.roi_heads.num_classes"
    for name in names:
        classes = MetadataCatalog.get(name).get("thing_classes", None)
        if classes is None:
            continue
        if len(classes) > n_model:
            raise ValueError(
                f"Dataset {name!r} has {len(classes)} classes {list(classes)}, but the model "
                f"predicts {n_model} ({key}={n_model}): objects of class ids {n_model} and up would "
                f"be trained as background or crash the loss. Set {key}={len(classes)}."
            )
        if len(classes) < n_model:
            logger.warning(
                f"Dataset {name!r} has {len(classes)} classes but the model predicts {n_model} "
                f"({key}={n_model}); the extra outputs are never trained positive."
            )
