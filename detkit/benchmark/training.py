"""The training section: each model's training step (Detectron2's SimpleTrainer / AMPTrainer
``run_step`` with the config's optimizer, gradient clipping and LR schedule), round-robin on the
same batches, timed against the stock model, and the peak memory of one step."""
import itertools
import math
import time
from dataclasses import dataclass, field
from typing import List, Sequence

import numpy as np
import torch

from .memory import MB, profiled_peak_bytes, resident_bytes
from .models import BenchModel, build_models, log, sync
from .stats import median, ratio_with_interval


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

    from ..engine import add_gradient_clipping

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
    sync(device)
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
            sync(device)
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
        results.append(TrainResult(
            group=group, model=runner.bench.name, stock=stock.bench.name, iters=iters, warmup=warmup,
            s_per_iter=median(runner.wall), ratio=ratio, ratio_low=low, ratio_high=high,
            cpu_s_per_iter=median(runner.cpu), cpu_ratio=cpu_ratio, cpu_ratio_low=cpu_low, cpu_ratio_high=cpu_high,
            peak_mb=peak / MB, peak_ratio=peak / peaks[0] if peaks[0] else math.nan, images_per_iter=len(batches[0]),
        ))
    return results, runners
