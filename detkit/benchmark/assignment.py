"""The label-assignment section: each dense detector's anchor labelling, then its ``losses``, on
random predictions for one image with more and more ground-truth boxes (CPU, forward only): time
and peak tensor memory against the stock model's."""
import functools
import math
import time
from dataclasses import dataclass
from typing import List, Sequence

import torch

from .memory import MB, profiled_peak_bytes
from .models import build_models, log
from .stats import median

R50_RETINANETS = [
    "configs/COCO-Detection/retinanet_R_50_FPN_1x.py",
    "configs/COCO-Detection/clean_anchors_retinanet_R_50_FPN_1x.py",
    "configs/COCO-Detection/swn_retinanet_R_50_FPN_1x.py",
]
DEFAULT_NUM_BOXES = (1, 10, 100, 500, 1000)
ASSIGN_IMAGE_SIZE = (800, 1333)


def random_gt_instances(num_boxes: int, image_size: Sequence[int], num_classes: int, seed: int = 0):
    """``num_boxes`` ground-truth boxes inside an image of ``image_size`` (H, W): sides
    log-uniform in [16, 400] px, uniform positions, random classes (seeded)."""
    from detectron2.structures import Boxes, Instances

    g = torch.Generator().manual_seed(seed)
    height, width = image_size
    side = torch.empty(num_boxes, 2).uniform_(math.log(16.0), math.log(min(400.0, height, width)), generator=g).exp()
    corner = torch.rand(num_boxes, 2, generator=g) * (torch.tensor([width, height], dtype=torch.float32) - side)
    instances = Instances(tuple(image_size))
    instances.gt_boxes = Boxes(torch.cat([corner, corner + side], dim=1))
    instances.gt_classes = torch.randint(0, num_classes, (num_boxes,), generator=g)
    return instances


def dense_anchors(model, image_size: Sequence[int]):
    """The model's anchors (list of Boxes per level) for one image of ``image_size``, padded to the
    backbone's size divisibility as ImageList pads it."""
    div = max(getattr(model.backbone, "size_divisibility", 0), 1)
    height, width = (math.ceil(s / div) * div for s in image_size)
    strides = model.anchor_generator.strides
    shapes = [(math.ceil(height / s), math.ceil(width / s)) for s in strides]
    return model.anchor_generator([torch.empty(1, 0, h, w) for h, w in shapes])


def labelling_method(model):
    """The method that labels the anchors in the model's ``forward_training``."""
    if getattr(model, "assigner", None) == "topn" and hasattr(model, "label_candidates"):
        return model.label_candidates
    return model.label_anchors


@dataclass
class AssignResult:
    model: str
    num_boxes: int
    num_anchors: int
    label_s: float
    label_peak_mb: float
    loss_s: float
    loss_peak_mb: float
    label_time_ratio: float = math.nan
    label_peak_ratio: float = math.nan
    loss_time_ratio: float = math.nan
    loss_peak_ratio: float = math.nan


def benchmark_assignment(
    config_files: Sequence[str] = R50_RETINANETS,
    num_boxes: Sequence[int] = DEFAULT_NUM_BOXES,
    image_size: Sequence[int] = ASSIGN_IMAGE_SIZE,
    reps: int = 3,
    overrides: Sequence[str] = (),
    seed: int = 0,
) -> List[AssignResult]:
    """Time and peak tensor memory (CPU, forward only) of each dense detector's anchor labelling
    and then of its ``losses`` on random predictions, for one image with ``num_boxes`` ground
    truths (see `tools/benchmark.py --help`); the first config is the stock model the ratios refer to.
    Time: median of ``reps`` rounds after one warm-up round, the models round-robin in each
    (from 500 boxes on: one round, no warm-up); memory: one more, profiled run of each."""
    from detectron2.utils.events import EventStorage

    models = build_models(config_files, overrides, "cpu", seed)
    anchors = dense_anchors(models[0].model, image_size)
    num_anchors = sum(len(a) for a in anchors)
    g = torch.Generator().manual_seed(seed)
    num_classes = models[0].model.num_classes
    logits = [torch.randn(1, len(a), num_classes, generator=g) - 4.6 for a in anchors]  # ~ the prior 0.01
    deltas = [0.1 * torch.randn(1, len(a), 4, generator=g) for a in anchors]
    steps = {}
    for bench in models:
        model = bench.model.train()
        label = labelling_method(model)
        steps[bench.name] = (
            functools.partial(label, anchors),
            lambda labelled, model=model: model.losses(anchors, logits, labelled[0], deltas, labelled[1]),
        )
    results = []
    with torch.no_grad(), EventStorage(0):
        for count in num_boxes:
            gt = [random_gt_instances(count, image_size, num_classes, seed)]
            rounds, warm = (reps, 1) if count < 500 else (1, 0)
            times = {b.name: ([], []) for b in models}
            labelled = {}
            for rnd in range(warm + rounds):
                for bench in models if rnd % 2 == 0 else models[::-1]:
                    label, losses = steps[bench.name]
                    start = time.perf_counter()
                    labelled[bench.name] = label(gt)
                    middle = time.perf_counter()
                    losses(labelled[bench.name])
                    if rnd >= warm:
                        times[bench.name][0].append(middle - start)
                        times[bench.name][1].append(time.perf_counter() - middle)
            for bench in models:
                label, losses = steps[bench.name]
                label_peak = profiled_peak_bytes(lambda: label(gt))
                loss_peak = profiled_peak_bytes(lambda: losses(labelled[bench.name]))
                label_s, loss_s = (median(t) for t in times[bench.name])
                results.append(
                    AssignResult(bench.name, count, num_anchors, label_s, label_peak / MB, loss_s, loss_peak / MB)
                )
                log(
                    f"  [assign] {count} boxes, {bench.name}: labelling {label_s:.3f}s {label_peak / MB:.0f} MB, "
                    f"losses {loss_s:.3f}s {loss_peak / MB:.0f} MB"
                )
            stock = results[-len(models)]
            for r in results[-len(models) :]:
                r.label_time_ratio = r.label_s / stock.label_s
                r.label_peak_ratio = r.label_peak_mb / stock.label_peak_mb if stock.label_peak_mb else math.nan
                r.loss_time_ratio = r.loss_s / stock.loss_s
                r.loss_peak_ratio = r.loss_peak_mb / stock.loss_peak_mb if stock.loss_peak_mb else math.nan
    return results
