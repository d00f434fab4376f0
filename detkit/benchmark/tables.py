"""The benchmark's Markdown: one table per section and the machine line of the heading."""
import math
import os
from typing import List, Sequence

import torch

from ..engine.provenance import device_info
from .assignment import AssignResult
from .inference import InferenceResult
from .training import TrainResult

# Detectron2 MODEL_ZOO.md, COCO detection, RetinaNet R50-FPN 1x: "train time (s/iter)" 0.205 on
# 8 V100s with 16 images per iteration, i.e. 2 images per GPU.
MODEL_ZOO_S_PER_ITER = 0.205
MODEL_ZOO_IMAGES_PER_GPU = 2


def _fmt_ratio(ratio: float, low: float = math.nan, high: float = math.nan) -> str:
    if math.isnan(ratio):
        return "-"
    if math.isnan(low):
        return f"{ratio:.3f}×"
    return f"{ratio:.3f}× [{low:.3f}, {high:.3f}]"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A Markdown table, cells as given (an empty cell is written ``| |``)."""
    line = lambda cells: "|" + "|".join(f" {c} " if c != "" else " " for c in cells) + "|"  # noqa: E731
    return "\n".join([line(header), "|" + "---|" * len(header)] + [line(r) for r in rows])


def format_training(results: List[TrainResult]) -> str:
    header = ["group", "model", "s/iter", "ratio to stock [95% CI]", "CPU s/iter", "CPU-time ratio [95% CI]",
              "peak memory (MB)", "memory ratio"]
    return _table(header, [
        [r.group, r.model, f"{r.s_per_iter:.3f}", _fmt_ratio(r.ratio, r.ratio_low, r.ratio_high),
         f"{r.cpu_s_per_iter:.3f}", _fmt_ratio(r.cpu_ratio, r.cpu_ratio_low, r.cpu_ratio_high), f"{r.peak_mb:.0f}",
         _fmt_ratio(r.peak_ratio)]
        for r in results
    ])


def format_throughput(results: List[TrainResult]) -> str:
    zoo = [f"Detectron2 model zoo, RetinaNet R50-FPN 1x (V100, {MODEL_ZOO_IMAGES_PER_GPU} img/GPU)",
           f"{MODEL_ZOO_S_PER_ITER:.3f}", f"{MODEL_ZOO_IMAGES_PER_GPU / MODEL_ZOO_S_PER_ITER:.1f}", "", ""]
    return _table(["model", "s/iter", "images/s", "ratio to stock [95% CI]", "peak memory (MB)"], [zoo] + [
        [r.model, f"{r.s_per_iter:.3f}", f"{r.images_per_iter / r.s_per_iter:.1f}",
         _fmt_ratio(r.ratio, r.ratio_low, r.ratio_high), f"{r.peak_mb:.0f}"]
        for r in results
    ])


def format_inference(results: List[InferenceResult]) -> str:
    def check(r):
        return "(reference)" if r.checkpoint == r.stock else (
            f"{'yes' if r.identical_detections else 'NO'} ({r.detections_compared})")

    header = ["group", "checkpoint in the stock model", "s/batch", "ratio to stock [95% CI]", "detections/image",
              "identical detections (compared)"]
    return _table(header, [
        [r.group, r.checkpoint, f"{r.s_per_batch:.3f}", _fmt_ratio(r.ratio, r.ratio_low, r.ratio_high),
         f"{r.detections_per_image:.1f}", check(r)]
        for r in results
    ])


def format_assignment(results: List[AssignResult]) -> str:
    def cell(value, ratio, fmt):
        return f"{value:{fmt}} ({_fmt_ratio(ratio)})"

    header = ["GT boxes", "model", "labelling s (× stock)", "labelling peak MB (× stock)", "losses s (× stock)",
              "losses peak MB (× stock)"]
    return _table(header, [
        [str(r.num_boxes), r.model, cell(r.label_s, r.label_time_ratio, ".3f"),
         cell(r.label_peak_mb, r.label_peak_ratio, ".0f"), cell(r.loss_s, r.loss_time_ratio, ".3f"),
         cell(r.loss_peak_mb, r.loss_peak_ratio, ".0f")]
        for r in results
    ])


def machine_description(device: str) -> str:
    """CPU model, cores, torch version and threads (and the GPU's name on CUDA), for the heading."""
    info = device_info(device)
    text = f"{info['cpu']}, {os.cpu_count()} cores, torch {torch.__version__}, {info['num_threads']} threads"
    return text + (f", GPU {info['name']}" if device.startswith("cuda") and torch.cuda.is_available() else "")
