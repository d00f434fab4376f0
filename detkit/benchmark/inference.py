"""The inference section: each method's checkpoint exported for and loaded into the stock model,
timed against the stock model on the same batches, and whether it gives the method model's
detections bit for bit."""
import contextlib
import copy
import math
import os
import tempfile
import time
from dataclasses import dataclass
from typing import List

import numpy as np
import torch

from .models import BenchModel, sync
from .stats import median, ratio_with_interval


@dataclass
class InferenceResult:
    group: str
    checkpoint: str
    stock: str
    iters: int
    s_per_batch: float
    ratio: float
    ratio_low: float
    ratio_high: float
    detections_per_image: float
    identical_detections: bool
    detections_compared: int
    dropped_keys: int


def stock_model_with_method_weights(stock: BenchModel, method: BenchModel, workdir: str):
    """A fresh stock model loaded (strictly) with the method's checkpoint as a user would export
    it: the method's state dict saved, passed through swn.checkpoint.export_stock_checkpoint
    (which drops SWN parameters; CleanAnchors has none to drop) and loaded back.

    Returns:
        (model in eval mode, number of dropped keys).
    """
    from detectron2.config import instantiate

    from swn.checkpoint import export_stock_checkpoint

    src = os.path.join(workdir, f"{method.name}.pth")
    dst = os.path.join(workdir, f"{method.name}_stock.pth")
    torch.save({"model": method.model.state_dict()}, src)
    dropped = export_stock_checkpoint(src, dst)
    model = instantiate(copy.deepcopy(stock.cfg.model)).to(next(method.model.parameters()).device)
    model.load_state_dict(torch.load(dst, map_location="cpu", weights_only=True)["model"], strict=True)
    return model.eval(), len(dropped)


@contextlib.contextmanager
def _score_threshold(models, value: float):
    """Set every model's test score threshold (RetinaNet's ``test_score_thresh``, the box
    predictor's for R-CNNs) to ``value`` for the duration."""
    owners = []
    for model in models:
        owner = model.roi_heads.box_predictor if hasattr(model, "roi_heads") else model
        owners.append((owner, owner.test_score_thresh))
        owner.test_score_thresh = value
    try:
        yield
    finally:
        for owner, old in owners:
            owner.test_score_thresh = old


def same_detections(model_a, model_b, inputs: List[dict]):
    """Whether two eval-mode models give bit-identical boxes, scores and classes on ``inputs``
    (score threshold 0, so that untrained models have detections to compare); and how many
    detections were compared."""
    with torch.no_grad(), _score_threshold([model_a, model_b], 0.0):
        a, b = model_a(inputs), model_b(inputs)
    same, count = True, 0
    for x, y in zip(a, b):
        x, y = x["instances"].to("cpu"), y["instances"].to("cpu")
        count += len(x)
        same &= (
            len(x) == len(y)
            and torch.equal(x.pred_boxes.tensor, y.pred_boxes.tensor)
            and torch.equal(x.scores, y.scores)
            and torch.equal(x.pred_classes, y.pred_classes)
        )
    return bool(same), count


def benchmark_inference(
    group: str, models: List[BenchModel], batches: List[List[dict]], iters: int, warmup: int, device: str = "cpu"
) -> List[InferenceResult]:
    """Inference time of the stock model (``models[0]``, its own weights) and of the stock model
    with each method's weights, round-robin over the same batches; plus the detection check of each
    method's own model against the stock model with its weights."""
    inputs = [[{k: v for k, v in d.items() if k != "instances"} for d in batch] for batch in batches]
    stock = models[0]
    stock.model.eval()
    contenders = [(stock.name, stock.model, None, 0)]
    with tempfile.TemporaryDirectory(prefix="benchmark-") as workdir:
        for method in models[1:]:
            twin, dropped = stock_model_with_method_weights(stock, method, workdir)
            method.model.eval()
            same, count = same_detections(method.model, twin, inputs[0])
            contenders.append((method.name, twin, (same, count), dropped))
    times = {name: [] for name, *_ in contenders}
    detections = {name: [] for name, *_ in contenders}
    with torch.no_grad():
        for it in range(warmup + iters):
            batch = inputs[it % len(inputs)]
            order = contenders if it % 2 == 0 else contenders[::-1]
            for name, model, _, _ in order:
                sync(device)
                start = time.perf_counter()
                outputs = model(batch)
                sync(device)
                if it >= warmup:
                    times[name].append(time.perf_counter() - start)
                    detections[name] += [len(o["instances"]) for o in outputs]
    results = []
    for name, _, check, dropped in contenders:
        ratio, low, high = ratio_with_interval(times[name], times[stock.name])
        same, count = check if check is not None else (True, 0)
        results.append(InferenceResult(
            group=group, checkpoint=name, stock=stock.name, iters=iters, s_per_batch=median(times[name]),
            ratio=ratio, ratio_low=low, ratio_high=high,
            detections_per_image=float(np.mean(detections[name])) if detections[name] else math.nan,
            identical_detections=same, detections_compared=count, dropped_keys=dropped,
        ))
    return results
