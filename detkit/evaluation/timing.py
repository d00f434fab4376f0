"""Inference time per image, measured around Detectron2's ``inference_on_dataset``.

``inference_on_dataset`` calls ``evaluator.reset()`` before the first batch, ``process()`` after
every batch and ``evaluate()`` after the last one. An :class:`InferenceStopwatch` put first in a
``DatasetEvaluators`` therefore measures the wall time of the whole inference loop (data loading,
the model, the other evaluators' per-batch ``process``) but not the final evaluation (COCOeval),
and counts the images. Through ``inference_on_dataset``'s ``before_inference`` / ``after_inference``
callbacks it also times each model call: the *pure compute* time per image, as Detectron2 defines
it in its "Total inference pure compute time" log line (model calls only, the first
``min(5, batches - 1)`` batches left out as warmup), but per image rather than per batch. In
distributed inference each process times its own share.
"""
import time
from typing import Dict, List, Optional, Tuple

import torch
from detectron2.evaluation import DatasetEvaluator, DatasetEvaluators, inference_on_dataset

__all__ = ["InferenceStopwatch", "inference_times_on_dataset", "timed_inference_on_dataset"]


class InferenceStopwatch(DatasetEvaluator):
    """A ``DatasetEvaluator`` that measures time instead of accuracy (it returns no results)."""

    def __init__(self):
        self.reset()

    def reset(self):
        self.num_images = 0
        self.seconds: Optional[float] = None
        self._start = time.perf_counter()
        self.batch_compute: List[Tuple[int, float]] = []  # (images, seconds of the model call)
        self._call_start: Optional[float] = None
        self._call_seconds: Optional[float] = None

    def before_inference(self):
        self._call_start = time.perf_counter()

    def after_inference(self):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        self._call_seconds = time.perf_counter() - self._call_start

    def callbacks(self) -> Dict:
        """The ``callbacks`` argument of ``inference_on_dataset`` that times each model call."""
        return {"before_inference": self.before_inference, "after_inference": self.after_inference}

    def process(self, inputs, outputs):
        self.num_images += len(inputs)
        if self._call_seconds is not None:
            self.batch_compute.append((len(inputs), self._call_seconds))
            self._call_seconds = None

    def evaluate(self):
        self.seconds = time.perf_counter() - self._start
        return None

    @property
    def seconds_per_image(self) -> Optional[float]:
        """Wall seconds of the inference loop per image (None before evaluate() or without images)."""
        if self.seconds is None or self.num_images == 0:
            return None
        return self.seconds / self.num_images

    @property
    def compute_seconds_per_image(self) -> Optional[float]:
        """Seconds of the model calls per image after Detectron2's warmup batches (None when the
        model calls were not timed or no image is left)."""
        warmup = min(5, len(self.batch_compute) - 1)
        timed = self.batch_compute[max(warmup, 0):]
        images = sum(n for n, _ in timed)
        return sum(s for _, s in timed) / images if images else None


def inference_times_on_dataset(model, data_loader, evaluator) -> Tuple[Dict, Dict[str, Optional[float]]]:
    """``inference_on_dataset(model, data_loader, evaluator)`` and its times per image, in seconds:
    ``{"wall": the whole inference loop, "compute": the model calls after the warmup batches}``
    (see the module docstring)."""
    stopwatch = InferenceStopwatch()
    others = [] if evaluator is None else list(evaluator) if isinstance(evaluator, (list, tuple)) else [evaluator]
    results = inference_on_dataset(model, data_loader, DatasetEvaluators([stopwatch] + others),
                                   callbacks=stopwatch.callbacks())
    return results, {"wall": stopwatch.seconds_per_image, "compute": stopwatch.compute_seconds_per_image}


def timed_inference_on_dataset(model, data_loader, evaluator) -> Tuple[Dict, Optional[float]]:
    """``inference_on_dataset(model, data_loader, evaluator)`` and the wall time of its inference
    loop per image, in seconds (see the module docstring)."""
    results, times = inference_times_on_dataset(model, data_loader, evaluator)
    return results, times["wall"]
