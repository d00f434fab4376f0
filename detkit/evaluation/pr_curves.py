"""Precision-recall curves from COCOeval's precision array (NoisyAnchors Fig. 2).

``COCOeval.accumulate()`` leaves ``eval["precision"]``, shape ``[T, R, K, A, M]``: T=10 IoU
thresholds 0.50:0.05:0.95, R=101 recall points 0:0.01:1, K classes, A=4 area ranges (all, small,
medium, large), M=3 detection limits per image (1, 10, 100); -1 where a class has no ground truth
of that area. Precision there is COCO's interpolated precision (the maximum precision at any
recall >= r), so the mean of a curve over its recall points is exactly the COCO AP of that setting.
"""
import contextlib
import io
import json
import os
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

__all__ = [
    "AREAS",
    "IOUS",
    "MAX_DETS",
    "PANELS",
    "coco_precision",
    "load_runs",
    "panel_aps",
    "plot_pr_curves",
    "pr_curve",
    "run_dataset_and_results",
    "write_pr_curves",
]

#: IoU settings of a curve and the threshold indices (into 0.50:0.05:0.95) they average over.
IOUS = {"0.5": [0], "0.75": [5], "0.5:0.95": list(range(10))}
#: COCOeval's default area ranges, in the order of the precision array's A axis.
AREAS = ("all", "small", "medium", "large")
#: COCOeval's default detection limits per image, in the order of the M axis.
MAX_DETS = (1, 10, 100)
#: The panels of :func:`plot_pr_curves`, one row each for IoU, object size and maxDet; the
#: settings not varied in a row are COCO's headline ones (IoU 0.5:0.95, all sizes, 100 per image).
PANELS = (
    [("0.5", "all", 100), ("0.75", "all", 100), ("0.5:0.95", "all", 100)],
    [("0.5:0.95", "small", 100), ("0.5:0.95", "medium", 100), ("0.5:0.95", "large", 100)],
    [("0.5:0.95", "all", 1), ("0.5:0.95", "all", 10), ("0.5:0.95", "all", 100)],
)


def coco_precision(gt_json: str, results: Union[str, List[Dict]]) -> np.ndarray:
    """Run pycocotools' COCOeval (bbox, default parameters) and return ``eval["precision"]``.

    Args:
        gt_json: COCO instances json with the ground truth.
        results: a COCO results json file (``coco_instances_results.json`` as Detectron2's
            COCOEvaluator writes it) or its list of ``{"image_id", "category_id", "bbox", "score"}``.
            No detections at all give precision 0 wherever there is ground truth.

    Returns:
        float array ``[10, 101, K, 4, 3]`` (see the module docstring).
    """
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    if isinstance(results, str):
        if not os.path.isfile(results):
            raise FileNotFoundError(f"{results}: no such COCO results file")
        with open(results) as f:
            results = json.load(f)
    if not isinstance(results, list):
        raise ValueError(f"COCO results must be a list of detections, got {type(results).__name__}")
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO(gt_json)
        if results:
            coco_dt = coco_gt.loadRes(results)
        else:  # pycocotools' loadRes cannot take an empty list
            coco_dt = COCO()
            coco_dt.dataset = {k: coco_gt.dataset[k] for k in ("images", "categories")}
            coco_dt.dataset["annotations"] = []
            coco_dt.createIndex()
        coco_eval = COCOeval(coco_gt, coco_dt, "bbox")
        coco_eval.evaluate()
        coco_eval.accumulate()
    return coco_eval.eval["precision"]


def pr_curve(
    precision: np.ndarray, iou: str = "0.5:0.95", area: str = "all", max_det: int = 100
) -> Tuple[np.ndarray, np.ndarray]:
    """One precision-recall curve, averaged over classes (and IoU thresholds for "0.5:0.95").

    Args:
        precision: COCOeval's ``eval["precision"]`` ``[T=10, R=101, K, A=4, M=3]``.
        iou: "0.5", "0.75" or "0.5:0.95".
        area: "all", "small", "medium" or "large".
        max_det: 1, 10 or 100 detections per image.

    Returns:
        ``(recall (101,), precision (101,))``; precision is the mean over the entries that are
        not -1 (classes with ground truth of that area), NaN where there are none.
    """
    if iou not in IOUS:
        raise ValueError(f"pr_curve: iou={iou!r}; use one of {list(IOUS)}")
    if area not in AREAS:
        raise ValueError(f"pr_curve: area={area!r}; use one of {list(AREAS)}")
    if max_det not in MAX_DETS:
        raise ValueError(f"pr_curve: max_det={max_det!r}; use one of {list(MAX_DETS)}")
    precision = np.asarray(precision, dtype=np.float64)
    if precision.ndim != 5 or precision.shape[0] != 10 or precision.shape[3:] != (4, 3):
        raise ValueError(
            f"pr_curve: expected COCOeval's precision array [10, R, K, 4, 3], got shape {precision.shape}"
        )
    p = precision[IOUS[iou], :, :, AREAS.index(area), MAX_DETS.index(max_det)]  # (t, R, K)
    p = np.moveaxis(p, 1, 0).reshape(p.shape[1], -1)  # (R, t*K)
    valid = p > -1
    count = valid.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(count > 0, np.where(valid, p, 0.0).sum(axis=1) / count, np.nan)
    recall = np.linspace(0.0, 1.0, p.shape[0])
    return recall, mean


def plot_pr_curves(runs: Dict[str, np.ndarray], out_png: str, title: Optional[str] = None) -> str:
    """Draw the :data:`PANELS` grid (3x3) of precision-recall curves, every run on each panel,
    labelled with the AP of that setting, and save it as a PNG.

    Args:
        runs: name -> COCOeval precision array (e.g. ``{"baseline": p0, "CleanAnchors": p1}``).
        out_png: output path (folders are created).

    Returns:
        ``out_png``.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not runs:
        raise ValueError("plot_pr_curves: no runs to plot")
    fig, axes = plt.subplots(len(PANELS), len(PANELS[0]), figsize=(13, 12), squeeze=False)
    for row, panels in zip(axes, PANELS):
        for ax, (iou, area, max_det) in zip(row, panels):
            drawn = False
            for name, precision in runs.items():
                recall, prec = pr_curve(precision, iou=iou, area=area, max_det=max_det)
                if np.all(np.isnan(prec)):
                    continue
                ax.plot(recall, prec, label=f"{name} (AP {100 * np.nanmean(prec):.1f})")
                drawn = True
            ax.set_title(f"IoU={iou}, area={area}, maxDet={max_det}", fontsize=10)
            ax.set_xlim(0, 1)
            ax.set_ylim(0, 1.02)
            ax.set_xlabel("recall")
            ax.set_ylabel("precision")
            ax.grid(alpha=0.3)
            if drawn:
                ax.legend(fontsize=8, loc="upper right")
            else:
                ax.text(0.5, 0.5, "no ground truth\nof this size", ha="center", va="center", transform=ax.transAxes)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(out_png)), exist_ok=True)
    fig.savefig(out_png, dpi=100)
    plt.close(fig)
    return out_png


def run_dataset_and_results(output_dir: str) -> Tuple[str, str, str]:
    """``(dataset name, ground-truth json, results json)`` of a Detectron2 run folder.

    The dataset is ``dataloader.test.dataset.names`` of ``OUTPUT_DIR/config.yaml``; the ground
    truth is the dataset's ``MetadataCatalog`` ``json_file`` (generated datasets are written first),
    or the ``<name>_coco_format.json`` that COCOEvaluator converts other datasets to; the results
    are ``OUTPUT_DIR/inference/coco_instances_results.json``.
    """
    from detectron2.config import LazyConfig
    from detectron2.data import MetadataCatalog

    import detkit  # noqa: F401  (registers the built-in datasets)
    from detkit.data.coco_files import ensure_prepared

    config_file = os.path.join(output_dir, "config.yaml")
    if not os.path.isfile(config_file):
        raise FileNotFoundError(
            f"{config_file}: not found; pass the OUTPUT_DIR of a train_net.py run (it writes config.yaml)"
        )
    cfg = LazyConfig.load(config_file)
    try:
        names = cfg.dataloader.test.dataset.names
    except Exception as e:
        raise KeyError(f"{config_file}: has no dataloader.test.dataset.names ({e})") from None
    if not isinstance(names, str):
        names = list(names)
        if len(names) != 1:
            raise ValueError(f"{config_file}: dataloader.test.dataset.names={names}; expected one dataset")
        names = names[0]
    ensure_prepared(names)
    gt_json = MetadataCatalog.get(names).get("json_file")
    inference_dir = os.path.join(output_dir, "inference")
    if gt_json is None:
        gt_json = os.path.join(inference_dir, f"{names}_coco_format.json")
    if not os.path.isfile(gt_json):
        raise FileNotFoundError(
            f"{gt_json}: ground truth of dataset {names!r} not found (is the dataset registered and present?)"
        )
    results = os.path.join(inference_dir, "coco_instances_results.json")
    if not os.path.isfile(results):
        raise FileNotFoundError(
            f"{results}: not found; evaluate the run first "
            f"(train_net.py --config-file CFG --eval-only train.init_checkpoint=... train.output_dir={output_dir})"
        )
    return names, gt_json, results


def load_runs(
    output_dirs: Sequence[str], names: Optional[Sequence[str]] = None
) -> Tuple[Dict[str, np.ndarray], List[str]]:
    """COCOeval precision arrays of Detectron2 run folders (see :func:`run_dataset_and_results`).

    Args:
        output_dirs: run folders (``train.output_dir``) evaluated by COCOEvaluator.
        names: one name per folder (default: the folder names); must be unique.

    Returns:
        ``({name: precision [10, 101, K, 4, 3]}, [dataset name per folder])``.
    """
    output_dirs = list(output_dirs)
    if not output_dirs:
        raise ValueError("no run folders given")
    if names is None:
        names = [os.path.basename(os.path.normpath(d)) for d in output_dirs]
    names = list(names)
    if len(names) != len(output_dirs):
        raise ValueError(f"{len(names)} names for {len(output_dirs)} run folders")
    if len(set(names)) != len(names):
        raise ValueError(f"run names {names} are not unique; pass names explicitly")
    runs, datasets = {}, []
    for name, output_dir in zip(names, output_dirs):
        dataset, gt_json, results = run_dataset_and_results(output_dir)
        datasets.append(dataset)
        runs[name] = coco_precision(gt_json, results)
    return runs, datasets


def panel_aps(runs: Dict[str, np.ndarray]) -> Tuple[List[Tuple[str, str, int]], Dict[str, List[float]]]:
    """The AP (%, NaN without ground truth) of every distinct panel of :data:`PANELS` per run:
    ``([(iou, area, max_det), ...], {name: [AP per panel]})``."""
    panels = list(dict.fromkeys(p for row in PANELS for p in row))
    aps = {}
    for name, precision in runs.items():
        aps[name] = []
        for iou, area, max_det in panels:
            prec = pr_curve(precision, iou=iou, area=area, max_det=max_det)[1]
            aps[name].append(float("nan") if np.all(np.isnan(prec)) else 100 * float(np.nanmean(prec)))
    return panels, aps


def write_pr_curves(output_dirs: Sequence[str], out_png: str, names: Optional[Sequence[str]] = None) -> str:
    """PR-curve grid (:func:`plot_pr_curves`) comparing Detectron2 run folders on their test set
    (:func:`load_runs`); returns ``out_png``.

    Args:
        output_dirs: run folders (``train.output_dir``) evaluated by COCOEvaluator.
        out_png: the PNG to write.
        names: legend names, one per folder (default: the folder names).
    """
    runs, datasets = load_runs(output_dirs, names)
    return plot_pr_curves(runs, out_png, title=f"dataset: {', '.join(sorted(set(datasets)))}")
