"""Inference time per image, measured around Detectron2's ``inference_on_dataset``.

``inference_on_dataset`` calls ``evaluator.reset()`` before the first batch, ``process()`` after
every batch and ``evaluate()`` after the last one. An :class:`InferenceStopwatch` put first in a
``DatasetEvaluators`` therefore measures the wall time of the whole inference loop (data loading,
the model, the other evaluators' per-batch ``process``) but not the final evaluation (COCOeval),
and counts the images. In distributed inference each process times its own share.
"""
import time
from typing import Dict, Optional, Tuple

from detectron2.evaluation import DatasetEvaluator, DatasetEvaluators, inference_on_dataset

__all__ = ["InferenceStopwatch", "timed_inference_on_dataset"]


class InferenceStopwatch(DatasetEvaluator):
    """A ``DatasetEvaluator`` that measures time instead of accuracy (it returns no results)."""

    def __init__(self):
        self.reset()

    def reset(self):
        self.num_images = 0
        self.seconds: Optional[float] = None
        self._start = time.perf_counter()

    def process(self, inputs, outputs):
        self.num_images += len(inputs)

    def evaluate(self):
        self.seconds = time.perf_counter() - self._start
        return None

    @property
    def seconds_per_image(self) -> Optional[float]:
        """Wall seconds of the inference loop per image (None before evaluate() or without images)."""
        if self.seconds is None or self.num_images == 0:
            return None
        return self.seconds / self.num_images


def timed_inference_on_dataset(model, data_loader, evaluator) -> Tuple[Dict, Optional[float]]:
    """``inference_on_dataset(model, data_loader, evaluator)`` and the wall time of its inference
    loop per image, in seconds (see the module docstring)."""
    stopwatch = InferenceStopwatch()
    if evaluator is None:
        others = []
    elif isinstance(evaluator, (list, tuple)):
        others = list(evaluator)
    else:
        others = [evaluator]
    evaluators = [stopwatch] + others
    results = inference_on_dataset(model, data_loader, DatasetEvaluators(evaluators))
    return results, stopwatch.seconds_per_image
