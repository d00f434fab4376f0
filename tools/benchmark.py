#!/usr/bin/env python
"""`make bench`: what CleanAnchors and SWN cost, measured against the stock Detectron2 models.

    python tools/benchmark.py [--iters 30] [--warmup 5] [--json out.json] [--sections train,infer,assign,cuda]
    python tools/benchmark.py --group STOCK_CONFIG METHOD_CONFIG... [--image-size H W] [key=value ...]
    python tools/benchmark.py --device cuda          # adds R-50-FPN AMP throughput at 800x1333

A benchmark, not a test: it prints Markdown tables (stdout; progress on stderr) and, with --json,
writes every number. Sections:

train   Training-step time (forward + backward + optimizer step, as Detectron2's SimpleTrainer runs
        it, with each config's optimizer, gradient clipping and LR schedule: SWN's SGD + Adam) of
        each group's models: by default stock RetinaNet / CleanAnchors / SWN and stock Faster R-CNN /
        CleanAnchors-RPN / SWN Faster R-CNN, the MobileNetV2-FPN tree-crown configs on the real
        400x400 tiles, 4 per batch as in training. All models of a group live in one process, start
        from the same weights (the stock model's; the SWN's own layers are the only extra ones) and
        are stepped round-robin on the same batch and the same RNG seed at every iteration, so that
        machine noise hits them alike. The first --warmup rounds are dropped; reported: the median
        wall-clock s/iter, its ratio to the stock model's median with a 95 % bootstrap interval
        (rounds resampled in pairs), the same ratio of process CPU time (less sensitive to other
        processes on a shared machine), and the peak tensor memory of one step (CPU: the PyTorch
        allocator's live tensor bytes, from torch.profiler's memory events, on top of the
        parameters, gradients and optimizer state; CUDA: torch.cuda.max_memory_allocated).
        --control adds a second copy of each stock model: its "ratio" is the noise level.
infer   Inference time of each method's checkpoint loaded into the stock model (SWN parameters
        dropped by swn.checkpoint.export_stock_checkpoint, strict load) against the stock model,
        same batches, round-robin; the models as initialised, so that the shared weights are the
        same (--infer-trained: as the training section left them, when the outputs, and with them
        the post-processing work, differ); and whether the stock model with the method's weights
        gives bit-identical detections to the method's own model (checked with the score threshold
        at 0 so that there are detections to compare).
assign  The label-assignment / weighting step alone as the number of ground-truth boxes of one
        image grows (--num-boxes), at 800x1333 with the anchors of the R-50-FPN RetinaNet configs
        (Detectron2's DefaultAnchorGenerator: 201,600 anchors, 80 classes): the model's anchor
        labelling (stock and SWN: RetinaNet.label_anchors, i.e. pairwise IoU + Matcher;
        CleanAnchors: top-N candidates, in chunks of ground truths) and then its `losses`
        (CleanAnchors: cleanliness scores, soft labels, re-weighting; SWN: the SWN's inputs and
        network), forward only, on random predictions; time and peak tensor memory of each.
cuda    With --device cuda: training throughput (images/s) of the R-50-FPN RetinaNets at 800x1333,
        2 images per iteration, AMP (Detectron2's AMPTrainer), next to Detectron2's model-zoo figure
        for RetinaNet R50-FPN 1x (0.205 s/iter at 2 images per V100, about 9.8 images/s). Without a
        GPU this prints that it was skipped.
"""
import argparse
import contextlib
import copy
import functools
import itertools
import json
import math
import os
import platform
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, List, Optional, Sequence

import numpy as np
import torch

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

DEFAULT_GROUPS = {
    "RetinaNet": [
        "configs/TreeCrowns/retinanet_mnv2_fpn.py",
        "configs/TreeCrowns/clean_anchors_retinanet_mnv2_fpn.py",
        "configs/TreeCrowns/swn_retinanet_mnv2_fpn.py",
    ],
    "Faster R-CNN": [
        "configs/TreeCrowns/faster_rcnn_mnv2_fpn.py",
        "configs/TreeCrowns/clean_anchors_faster_rcnn_mnv2_fpn.py",
        "configs/TreeCrowns/swn_faster_rcnn_mnv2_fpn.py",
    ],
}
R50_RETINANETS = [
    "configs/COCO-Detection/retinanet_R_50_FPN_1x.py",
    "configs/COCO-Detection/clean_anchors_retinanet_R_50_FPN_1x.py",
    "configs/COCO-Detection/swn_retinanet_R_50_FPN_1x.py",
]
DEFAULT_NUM_BOXES = (1, 10, 100, 500, 1000)
ASSIGN_IMAGE_SIZE = (800, 1333)
# Detectron2 MODEL_ZOO.md, COCO detection, RetinaNet R50-FPN 1x: "train time (s/iter)" 0.205 on
# 8 V100s with 16 images per iteration, i.e. 2 images per GPU.
MODEL_ZOO_S_PER_ITER = 0.205
MODEL_ZOO_IMAGES_PER_GPU = 2

MB = 2.0**20


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------- statistics


def ratio_with_interval(times: Sequence[float], reference: Sequence[float], resamples: int = 2000, seed: int = 0):
    """Ratio of medians ``median(times) / median(reference)`` of paired measurements (round ``i`` of
    both), and its 95 % percentile-bootstrap interval over rounds resampled as pairs.

    Returns:
        (ratio, low, high); all NaN for empty input.
    """
    t, r = np.asarray(times, dtype=float), np.asarray(reference, dtype=float)
    if t.shape != r.shape or t.ndim != 1:
        raise ValueError(f"ratio_with_interval: need two 1-d sequences of the same length, got {t.shape} and {r.shape}")
    if t.size == 0:
        return math.nan, math.nan, math.nan
    ratio = float(np.median(t) / np.median(r))
    idx = np.random.default_rng(seed).integers(0, t.size, size=(resamples, t.size))
    boot = np.median(t[idx], axis=1) / np.median(r[idx], axis=1)
    low, high = np.percentile(boot, [2.5, 97.5])
    return ratio, float(low), float(high)


# ----------------------------------------------------------------------------- memory


def _unique_tensor_bytes(tensors) -> int:
    seen, total = set(), 0
    for t in tensors:
        if isinstance(t, torch.Tensor) and t.device.type == "cpu":
            storage = t.untyped_storage()
            if storage.data_ptr() not in seen:
                seen.add(storage.data_ptr())
                total += storage.nbytes()
    return total


def resident_bytes(model: torch.nn.Module, optimizer: Optional[torch.optim.Optimizer] = None) -> int:
    """Bytes of the CPU tensors a training step starts with: parameters, buffers, gradients and
    optimizer state (each storage counted once)."""
    tensors = list(model.parameters()) + list(model.buffers())
    tensors += [p.grad for p in model.parameters() if p.grad is not None]
    if optimizer is not None:
        for state in optimizer.state.values():
            tensors += [v for v in state.values() if isinstance(v, torch.Tensor)]
    return _unique_tensor_bytes(tensors)


def profiled_peak_bytes(fn: Callable[[], None], before: Optional[Callable[[], None]] = None) -> int:
    """Peak of the live CPU tensor bytes allocated by ``fn()`` above what was live when it began,
    from torch.profiler's memory events (the CPU counterpart of CUDA's max_memory_allocated,
    restricted to the call).

    The CPU allocator reports a free only for blocks it saw allocated while profiling, so
    ``before()`` (e.g. the previous training step, which allocates the gradients that ``fn``
    frees) runs inside the same profile, un-measured.
    """
    from torch.profiler import ProfilerActivity, profile, record_function

    marker = "benchmark::measured"
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        if before is not None:
            before()
        with record_function(marker):
            fn()
    events = prof.profiler.kineto_results.events()
    span = [e for e in events if e.name() == marker]
    if len(span) != 1:
        raise RuntimeError(f"profiled_peak_bytes: expected one '{marker}' range, found {len(span)}")
    start, end = span[0].start_ns(), span[0].end_ns()
    inside = sorted(
        (e.start_ns(), e.nbytes())
        for e in events
        if e.name() == "[memory]" and start <= e.start_ns() <= end and "CPU" in str(e.device_type())
    )
    return max(0, max(itertools.accumulate((b for _, b in inside), initial=0)))


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


# ----------------------------------------------------------------------------- models and data


def load_config(path: str, overrides: Sequence[str] = ()):
    from detectron2.config import LazyConfig

    from detkit.engine import apply_overrides_strict

    full = path if os.path.isabs(path) else os.path.join(REPO_ROOT, path)
    if not os.path.isfile(full):
        raise FileNotFoundError(f"benchmark: config file {path} not found (paths are relative to {REPO_ROOT})")
    return apply_overrides_strict(LazyConfig.load(full), list(overrides))


def config_name(path: str) -> str:
    return os.path.splitext(os.path.basename(path))[0]


@dataclass
class BenchModel:
    name: str
    cfg: object
    model: torch.nn.Module


def build_models(
    config_files: Sequence[str], overrides: Sequence[str] = (), device: str = "cpu", seed: int = 0
) -> List[BenchModel]:
    """Each config's model on ``device``, all with the first (stock) model's initial weights.

    A method model must have every parameter and buffer of the stock model; the only keys it may
    have besides are the SWN's (``swn.checkpoint.is_swn_key``), which keep their own
    initialisation.
    """
    from detectron2.config import instantiate

    from swn.checkpoint import is_swn_key

    built, stock_state = [], None
    for path in config_files:
        cfg = load_config(path, overrides)
        torch.manual_seed(seed)
        model = instantiate(cfg.model).to(device)
        if stock_state is None:
            stock_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        else:
            missing, unexpected = model.load_state_dict(stock_state, strict=False)
            extra = [k for k in missing if not is_swn_key(k)]
            if extra or unexpected:
                raise ValueError(
                    f"{path}: its model is not the stock model {config_files[0]} plus an SWN "
                    f"(keys only in the method: {extra[:5]}, only in the stock model: {list(unexpected)[:5]})"
                )
        name = config_name(path)
        while name in [b.name for b in built]:  # the same config twice: an A/A control
            name += " (again)"
        built.append(BenchModel(name, cfg, model))
    return built


def load_batches(
    dataset: str, batch_size: int, num_batches: Optional[int] = None, image_size: Optional[Sequence[int]] = None
) -> List[List[dict]]:
    """Consecutive images of a registered dataset as training inputs (CHW uint8 in the dataset's
    RGB, ``instances`` with ``gt_boxes`` / ``gt_classes``), ``batch_size`` per batch, in dataset
    order; each image resized to ``image_size`` (H, W) when given. An incomplete last batch is
    dropped."""
    import detectron2.data.transforms as T
    from detectron2.data import DatasetCatalog
    from detectron2.data.detection_utils import annotations_to_instances, read_image, transform_instance_annotations

    import detkit  # noqa: F401  (registers the datasets)

    dicts = DatasetCatalog.get(dataset)
    count = len(dicts) // batch_size if num_batches is None else num_batches
    if count < 1 or count * batch_size > len(dicts):
        raise ValueError(f"dataset {dataset!r} has {len(dicts)} images: not enough for {count} batches of {batch_size}")
    batches = []
    for b in range(count):
        batch = []
        for d in dicts[b * batch_size : (b + 1) * batch_size]:
            image = read_image(d["file_name"], format="RGB")
            annotations = [a for a in d.get("annotations", []) if a.get("iscrowd", 0) == 0]
            if image_size is not None:
                tfm = T.TransformList(
                    [T.ResizeTransform(image.shape[0], image.shape[1], int(image_size[0]), int(image_size[1]))]
                )
                image = tfm.apply_image(image)
                annotations = [transform_instance_annotations(a, tfm, image.shape[:2]) for a in annotations]
            tensor = torch.as_tensor(np.ascontiguousarray(image.transpose(2, 0, 1)))
            batch.append(
                {
                    "image": tensor,
                    "height": tensor.shape[1],
                    "width": tensor.shape[2],
                    "instances": annotations_to_instances(annotations, tensor.shape[1:]),
                }
            )
        batches.append(batch)
    return batches


# ----------------------------------------------------------------------------- training steps


@dataclass
class _Runner:
    bench: BenchModel
    trainer: object
    scheduler: object
    storage: object
    wall: List[float] = field(default_factory=list)
    cpu: List[float] = field(default_factory=list)


def _make_runner(bench: BenchModel, batches: List[List[dict]], amp: bool) -> _Runner:
    from detectron2.config import instantiate
    from detectron2.engine import AMPTrainer, SimpleTrainer
    from detectron2.solver import LRMultiplier
    from detectron2.utils.events import EventStorage

    from detkit.engine import add_gradient_clipping

    cfg = bench.cfg
    bench.model.train()
    cfg.optimizer.params.model = bench.model
    optimizer = instantiate(cfg.optimizer)
    clip = cfg.train.get("clip_grad", None)
    if clip is not None and clip.get("enabled", False):
        add_gradient_clipping(optimizer, clip.max_norm, clip.get("norm_type", 2.0))
    trainer = (AMPTrainer if amp else SimpleTrainer)(bench.model, itertools.cycle(batches), optimizer)
    scheduler = LRMultiplier(optimizer, instantiate(cfg.lr_multiplier), cfg.train.max_iter)
    return _Runner(bench, trainer, scheduler, EventStorage(0))


def _train_step(runner: _Runner, iteration: int, seed: int, device: str) -> None:
    """One ``run_step`` of the runner's trainer, then the LR scheduler's step (as Detectron2's
    LRScheduler hook does after every iteration)."""
    torch.manual_seed(seed + iteration)  # same RoI / anchor sampling for every model
    runner.trainer.iter = runner.storage.iter = iteration
    with runner.storage:
        runner.trainer.run_step()
    _sync(device)
    runner.scheduler.step()


@dataclass
class TrainResult:
    group: str
    model: str
    stock: str
    iters: int
    warmup: int
    s_per_iter: float
    ratio: float
    ratio_low: float
    ratio_high: float
    cpu_s_per_iter: float
    cpu_ratio: float
    cpu_ratio_low: float
    cpu_ratio_high: float
    peak_mb: float
    peak_ratio: float
    images_per_iter: int


def benchmark_training(
    group: str,
    config_files: Sequence[str],
    batches: List[List[dict]],
    iters: int,
    warmup: int,
    device: str = "cpu",
    overrides: Sequence[str] = (),
    seed: int = 0,
    amp: bool = False,
    measure_memory: bool = True,
):
    """Time ``iters`` training steps (after ``warmup`` untimed ones) of every config's model,
    round-robin, on the same batches; the first config is the stock model the ratios refer to.
    Then one more step of each (plus one un-measured step before it on the CPU, see
    :func:`profiled_peak_bytes`) for its peak memory.

    Returns:
        (list of :class:`TrainResult`, the runners: their ``bench`` models are trained by then)."""
    runners = [_make_runner(b, batches, amp) for b in build_models(config_files, overrides, device, seed)]
    for it in range(warmup + iters):
        order = runners if it % 2 == 0 else runners[::-1]  # nobody always runs right after the same model
        for runner in order:
            _sync(device)
            wall, cpu = time.perf_counter(), time.process_time()
            _train_step(runner, it, seed, device)
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            if it >= warmup:
                runner.wall.append(wall)
                runner.cpu.append(cpu)
        if it >= warmup and ((it - warmup + 1) % 10 == 0 or it == warmup + iters - 1):
            log(
                f"  [{group}] {it - warmup + 1}/{iters} timed: "
                + ", ".join(f"{r.bench.name} {np.median(r.wall):.3f}s" for r in runners)
            )

    peaks = []
    for runner in runners:
        if not measure_memory:
            peaks.append(math.nan)
            continue
        it = warmup + iters
        if device.startswith("cuda"):
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            _train_step(runner, it, seed, device)
            peaks.append(torch.cuda.max_memory_allocated())
        else:
            resident = []

            def before(runner=runner, it=it):
                _train_step(runner, it, seed, device)
                resident.append(resident_bytes(runner.bench.model, runner.trainer.optimizer))

            peak = profiled_peak_bytes(lambda: _train_step(runner, it + 1, seed, device), before=before)
            peaks.append(resident[0] + peak)

    stock = runners[0]
    results = []
    for runner, peak in zip(runners, peaks):
        ratio, low, high = ratio_with_interval(runner.wall, stock.wall)
        cpu_ratio, cpu_low, cpu_high = ratio_with_interval(runner.cpu, stock.cpu)
        results.append(
            TrainResult(
                group=group,
                model=runner.bench.name,
                stock=stock.bench.name,
                iters=iters,
                warmup=warmup,
                s_per_iter=float(np.median(runner.wall)) if runner.wall else math.nan,
                ratio=ratio,
                ratio_low=low,
                ratio_high=high,
                cpu_s_per_iter=float(np.median(runner.cpu)) if runner.cpu else math.nan,
                cpu_ratio=cpu_ratio,
                cpu_ratio_low=cpu_low,
                cpu_ratio_high=cpu_high,
                peak_mb=peak / MB,
                peak_ratio=peak / peaks[0] if peaks[0] else math.nan,
                images_per_iter=len(batches[0]),
            )
        )
    return results, runners


# ----------------------------------------------------------------------------- inference


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
                _sync(device)
                start = time.perf_counter()
                outputs = model(batch)
                _sync(device)
                if it >= warmup:
                    times[name].append(time.perf_counter() - start)
                    detections[name] += [len(o["instances"]) for o in outputs]
    results = []
    for name, _, check, dropped in contenders:
        ratio, low, high = ratio_with_interval(times[name], times[stock.name])
        same, count = check if check is not None else (True, 0)
        results.append(
            InferenceResult(
                group=group,
                checkpoint=name,
                stock=stock.name,
                iters=iters,
                s_per_batch=float(np.median(times[name])) if times[name] else math.nan,
                ratio=ratio,
                ratio_low=low,
                ratio_high=high,
                detections_per_image=float(np.mean(detections[name])) if detections[name] else math.nan,
                identical_detections=same,
                detections_compared=count,
                dropped_keys=dropped,
            )
        )
    return results


# ----------------------------------------------------------------------------- label assignment


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
    truths (see the module docstring); the first config is the stock model the ratios refer to.
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
                label_s, loss_s = (float(np.median(t)) for t in times[bench.name])
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


# ----------------------------------------------------------------------------- report


def _fmt_ratio(ratio: float, low: float = math.nan, high: float = math.nan) -> str:
    if math.isnan(ratio):
        return "-"
    if math.isnan(low):
        return f"{ratio:.3f}×"
    return f"{ratio:.3f}× [{low:.3f}, {high:.3f}]"


def format_training(results: List[TrainResult]) -> str:
    lines = [
        "| group | model | s/iter | ratio to stock [95% CI] | CPU s/iter | CPU-time ratio [95% CI] | peak memory (MB) "
        "| memory ratio |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r.group} | {r.model} | {r.s_per_iter:.3f} | {_fmt_ratio(r.ratio, r.ratio_low, r.ratio_high)} | "
            f"{r.cpu_s_per_iter:.3f} | {_fmt_ratio(r.cpu_ratio, r.cpu_ratio_low, r.cpu_ratio_high)} | "
            f"{r.peak_mb:.0f} | {_fmt_ratio(r.peak_ratio)} |"
        )
    return "\n".join(lines)


def format_throughput(results: List[TrainResult]) -> str:
    zoo = MODEL_ZOO_IMAGES_PER_GPU / MODEL_ZOO_S_PER_ITER
    lines = [
        "| model | s/iter | images/s | ratio to stock [95% CI] | peak memory (MB) |",
        "|---|---|---|---|---|",
        f"| Detectron2 model zoo, RetinaNet R50-FPN 1x (V100, {MODEL_ZOO_IMAGES_PER_GPU} img/GPU) | "
        f"{MODEL_ZOO_S_PER_ITER:.3f} | {zoo:.1f} | | |",
    ]
    for r in results:
        lines.append(
            f"| {r.model} | {r.s_per_iter:.3f} | {r.images_per_iter / r.s_per_iter:.1f} | "
            f"{_fmt_ratio(r.ratio, r.ratio_low, r.ratio_high)} | {r.peak_mb:.0f} |"
        )
    return "\n".join(lines)


def format_inference(results: List[InferenceResult]) -> str:
    lines = [
        "| group | checkpoint in the stock model | s/batch | ratio to stock [95% CI] | detections/image "
        "| identical detections (compared) |",
        "|---|---|---|---|---|---|",
    ]
    for r in results:
        check = f"{'yes' if r.identical_detections else 'NO'} ({r.detections_compared})"
        if r.checkpoint == r.stock:
            check = "(reference)"
        lines.append(
            f"| {r.group} | {r.checkpoint} | {r.s_per_batch:.3f} | {_fmt_ratio(r.ratio, r.ratio_low, r.ratio_high)} | "
            f"{r.detections_per_image:.1f} | {check} |"
        )
    return "\n".join(lines)


def format_assignment(results: List[AssignResult]) -> str:
    def cell(value, ratio, fmt):
        return f"{value:{fmt}} ({_fmt_ratio(ratio)})"

    lines = [
        "| GT boxes | model | labelling s (× stock) | labelling peak MB (× stock) | losses s (× stock) "
        "| losses peak MB (× stock) |",
        "|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r.num_boxes} | {r.model} | {cell(r.label_s, r.label_time_ratio, '.3f')} | "
            f"{cell(r.label_peak_mb, r.label_peak_ratio, '.0f')} | {cell(r.loss_s, r.loss_time_ratio, '.3f')} | "
            f"{cell(r.loss_peak_mb, r.loss_peak_ratio, '.0f')} |"
        )
    return "\n".join(lines)


def machine_description(device: str) -> str:
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    text = f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} threads"
    if device.startswith("cuda") and torch.cuda.is_available():
        text += f", GPU {torch.cuda.get_device_name(torch.device(device))}"
    return text


# ----------------------------------------------------------------------------- main


SECTIONS = ("train", "infer", "assign", "cuda")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda[:N]")
    parser.add_argument(
        "--sections", default=",".join(SECTIONS), help=f"comma-separated subset of {','.join(SECTIONS)}"
    )
    parser.add_argument(
        "--group", nargs="+", action="append", metavar="CONFIG",
        help="a stock config followed by method configs; repeatable "
        "(default: the TreeCrowns RetinaNet and Faster R-CNN groups)",
    )
    parser.add_argument(
        "--control", action="store_true",
        help="also run a second copy of each group's stock model (A/A control: its ratio is the noise level)",
    )
    parser.add_argument(
        "--dataset", default="treecrowns_train", help="registered dataset the training batches come from"
    )
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--num-batches", type=int, default=None, help="distinct batches cycled through (default: all)")
    parser.add_argument(
        "--image-size", type=int, nargs=2, metavar=("H", "W"), default=None,
        help="resize the images (default: as stored)",
    )
    parser.add_argument("--iters", type=int, default=30, help="timed training iterations per model")
    parser.add_argument("--warmup", type=int, default=5, help="untimed training iterations first")
    parser.add_argument("--infer-iters", type=int, default=20)
    parser.add_argument(
        "--infer-trained", action="store_true",
        help="time the checkpoints as the training section left them instead of as initialised (same shared "
        "weights); their outputs then differ, and so does the post-processing work",
    )
    parser.add_argument("--infer-warmup", type=int, default=2)
    parser.add_argument("--num-boxes", type=int, nargs="+", default=list(DEFAULT_NUM_BOXES))
    parser.add_argument("--assign-image-size", type=int, nargs=2, metavar=("H", "W"), default=list(ASSIGN_IMAGE_SIZE))
    parser.add_argument("--assign-configs", nargs="+", default=R50_RETINANETS)
    parser.add_argument("--assign-reps", type=int, default=3)
    parser.add_argument("--cuda-iters", type=int, default=50)
    parser.add_argument("--cuda-warmup", type=int, default=10)
    parser.add_argument("--cuda-configs", nargs="+", default=R50_RETINANETS)
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=None, help="also write all results to this JSON file")
    parser.add_argument("opts", nargs="*", default=[], help="key=value overrides applied to every config (strict)")
    args = parser.parse_args(argv)
    sections = [s for s in args.sections.split(",") if s]
    unknown = [s for s in sections if s not in SECTIONS]
    if unknown:
        parser.error(f"--sections: unknown {unknown}; choose from {list(SECTIONS)}")
    args.sections = sections
    return args


def run(args) -> dict:
    """Run the selected sections, printing each Markdown table (and rewriting the --json file) as
    soon as it is complete; returns {"settings", "machine", section: list of result dicts, ...}."""
    if args.threads:
        torch.set_num_threads(args.threads)
    device = args.device
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit(f"--device {device}: no CUDA device is visible")
    groups = DEFAULT_GROUPS
    if args.group:  # named after their stock config
        groups = {f"{config_name(g[0])}{f' ({i + 1})' if i else ''}": g for i, g in enumerate(args.group)}
    load_start = os.getloadavg()
    started = time.perf_counter()
    out = {"settings": dict(vars(args)), "machine": machine_description(device), "train": [], "infer": []}

    def emit(*lines: str) -> None:
        print("\n".join(lines) + "\n", flush=True)
        if args.json:
            os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
            with open(args.json, "w") as f:
                json.dump(out, f, indent=2, default=str)

    emit(f"# Benchmark ({out['machine']})")
    if "train" in args.sections or "infer" in args.sections:
        batches = load_batches(args.dataset, args.batch_size, args.num_batches, args.image_size)
        size = "x".join(str(s) for s in batches[0][0]["image"].shape[1:])
        for name, configs in groups.items():
            if args.control:
                configs = [configs[0], *configs]
            runners = []
            if "train" in args.sections:
                log(f"[train] {name}: {', '.join(config_name(c) for c in configs)}")
                results, runners = benchmark_training(
                    name, configs, batches, args.iters, args.warmup, device, args.opts, args.seed
                )
                out["train"] += [asdict(r) for r in results]
                emit(
                    f"## {name}: training step ({args.dataset}, {len(batches)} batch(es) of {args.batch_size} "
                    f"images at {size}; {args.warmup} warm-up + {args.iters} timed iterations per model, "
                    "round-robin)",
                    "",
                    format_training(results),
                )
            if "infer" in args.sections:
                log(f"[infer] {name}")
                if args.infer_trained and runners:
                    models, weights = [r.bench for r in runners], f"after the {args.warmup + args.iters} training steps"
                else:
                    models, weights = build_models(configs, args.opts, device, args.seed), "as initialised"
                inference = benchmark_inference(name, models, batches, args.infer_iters, args.infer_warmup, device)
                out["infer"] += [asdict(r) for r in inference]
                emit(
                    f"## {name}: inference of each method's checkpoint in the stock model (weights {weights}; "
                    f"{args.infer_warmup} warm-up + {args.infer_iters} timed batches of {args.batch_size} per model)",
                    "",
                    format_inference(inference),
                )
            del runners

    if "assign" in args.sections:
        log("[assign]")
        assign = benchmark_assignment(
            args.assign_configs, args.num_boxes, args.assign_image_size, args.assign_reps, args.opts, args.seed
        )
        out["assign"] = [asdict(r) for r in assign]
        emit(
            f"## Label assignment + losses of one {args.assign_image_size[0]}x{args.assign_image_size[1]} image "
            f"({assign[0].num_anchors} anchors; CPU, forward only; median of {args.assign_reps} round-robin rounds "
            "after a warm-up one, from 500 boxes on 1 round)",
            "",
            format_assignment(assign),
        )

    if "cuda" in args.sections:
        title = "## Training throughput on a GPU (800x1333, R-50-FPN, AMP"
        if not (device.startswith("cuda") and torch.cuda.is_available()):
            line = "no CUDA device: skipped (run with --device cuda on a GPU machine)"
            log(f"[cuda] {line}")
            out["cuda"] = {"skipped": line}
            emit(title + ")", "", line)
        else:
            log("[cuda] R-50-FPN RetinaNets, 800x1333, AMP")
            cuda_batches = load_batches(args.dataset, MODEL_ZOO_IMAGES_PER_GPU, None, ASSIGN_IMAGE_SIZE)
            results, runners = benchmark_training(
                "R-50-FPN AMP", args.cuda_configs, cuda_batches, args.cuda_iters, args.cuda_warmup, device,
                args.opts, args.seed, amp=True,
            )
            del runners
            out["cuda"] = [asdict(r) for r in results]
            emit(
                f"{title}; {args.cuda_warmup} warm-up + {args.cuda_iters} timed iterations of "
                f"{MODEL_ZOO_IMAGES_PER_GPU} images per model)",
                "",
                format_throughput(results),
            )

    elapsed = time.perf_counter() - started
    load_end = os.getloadavg()
    out["elapsed_s"] = elapsed
    out["load_average"] = {"start": load_start, "end": load_end}
    emit(
        f"Total time {elapsed / 60:.1f} min; load average (1 min) {load_start[0]:.2f} at the start, "
        f"{load_end[0]:.2f} at the end ({os.cpu_count()} cores: a load above that means the machine was shared)."
    )
    if args.json:
        log(f"results written to {args.json}")
    return out


def main(argv=None):
    run(parse_args(argv))


if __name__ == "__main__":
    main()
