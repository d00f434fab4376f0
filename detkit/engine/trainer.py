"""Detectron2's training loop, made to stop clearly on a non-finite loss and to resume exactly.

:class:`CheckedSimpleTrainer` and :class:`CheckedAMPTrainer` are Detectron2's ``SimpleTrainer`` and
``AMPTrainer`` (same constructor, same step: forward, zero_grad, backward, ``after_backward``,
metrics, optimizer step) plus:

* **A finite-loss check before the backward pass.** A NaN or infinite loss term raises
  :class:`NonFiniteLossError` naming the term(s), the iteration, the image ids and file names of
  the batch (with a note on images or boxes that themselves hold NaN/inf) and the last checkpoint.
  Detectron2 notices only in ``write_metrics``, after the backward pass, with the loss values
  alone. Nothing is saved on the way out: the failing step has not touched the weights, and
  ``PeriodicCheckpointer`` (which only saves in ``after_step``) leaves ``last_checkpoint`` on the
  last periodic checkpoint. :class:`~detkit.engine.checkpoint.SafeCheckpointer` refuses to save
  weights that are already NaN/inf (a gradient overflow with a finite loss), so that state
  never replaces a good checkpoint either. Under DDP the per-term flags are all-reduced (one
  small collective per iteration), so every process stops at the same iteration with the
  description of every process's batch, instead of the others hanging in the next all-reduce.
* **Exact resume.** Detectron2's ``--resume`` restores the weights, optimizer, LR schedule and
  iteration, but restarts the data loader at the beginning of its (seeded) stream, draws fresh
  random augmentations and proposal samples, and restarts RetinaNet's positive-count EMA (a plain
  attribute) at 100, so a resumed run ends with other weights than an uninterrupted one. Here the
  trainer's state dict also holds the RNG states (torch CPU and CUDA, numpy, ``random``) and
  ``DenseDetector`` EMA attributes (``loss_normalizer``), and ``train(start_iter>0)`` first replays
  the first ``start_iter`` batches of the data loader (loading and augmenting them, no training:
  the price is the data-loading time of those iterations, logged) and then restores the RNG
  states. The ``after_step`` hooks run on a copy of the RNG states (restored afterwards), so that
  an evaluation or checkpoint in the middle of training never changes the random stream that
  training sees: the state a checkpoint stores is exactly the one the next iteration starts with.
  Needs ``train.seed >= 0`` (the sampler's shuffle and the data-loader workers' seeds derive from
  it). Under DDP only rank 0 writes the checkpoint: ranks > 0 replay their data exactly, but their
  RNG and EMA states are not saved (they matter for Faster R-CNN's proposal sampling and for
  RetinaNet's per-process normaliser; with ``GlobalLossNormalizer`` the EMA is the same on every
  rank and restored everywhere).
"""
import logging
import os
import random
import time
from contextlib import nullcontext
from typing import Any, Dict, List, Mapping, Optional, Sequence

import numpy as np
import torch
import torch.distributed as dist
from detectron2.engine import AMPTrainer, SimpleTrainer
from detectron2.utils import comm
from detectron2.utils.events import get_event_storage
from torch.nn.parallel import DataParallel, DistributedDataParallel

from .checkpoint import nonfinite_tensors

__all__ = [
    "CheckedAMPTrainer",
    "CheckedSimpleTrainer",
    "NonFiniteLossError",
    "capture_rng_state",
    "describe_images",
    "nonfinite_loss_terms",
    "restore_rng_state",
]

# Under "detectron2" so that the log files and console of train_net.py (Detectron2's setup_logger) show it
logger = logging.getLogger("detectron2." + __name__)

#: Float attributes that Detectron2's ``DenseDetector._ema_update`` keeps on the model without
#: checkpointing them (RetinaNet, FCOS and their subclasses).
EMA_ATTRIBUTES = ("loss_normalizer",)


class NonFiniteLossError(FloatingPointError):
    """A loss term is NaN or infinite (the same exception type Detectron2 raises)."""


# ------------------------------------------------------------------------------ loss checking


def nonfinite_loss_terms(loss_dict: Mapping[str, torch.Tensor]) -> List[str]:
    """Names of the terms of ``loss_dict`` that hold a NaN or an infinity (one sync)."""
    if not loss_dict:
        return []
    flags = torch.stack([~torch.isfinite(v.detach()).all() for v in loss_dict.values()])
    return [k for k, bad in zip(loss_dict, flags.tolist()) if bad]


def describe_images(batch: Sequence[Any]) -> List[str]:
    """``"image_id 12 (path/to/file.png)"`` for every dataset dict of ``batch``, with a note when
    the image tensor or the boxes of that image themselves hold NaN/inf."""
    out = []
    for i, d in enumerate(batch):
        if not isinstance(d, Mapping):
            out.append(f"item {i} (a {type(d).__name__})")
            continue
        text = f"image_id {d.get('image_id', '?')}"
        if "file_name" in d:
            text += f" ({d['file_name']})"
        problems = []
        image = d.get("image")
        if torch.is_tensor(image) and image.is_floating_point() and not bool(torch.isfinite(image).all()):
            problems.append("its image tensor holds NaN/inf")
        instances = d.get("instances")
        if instances is not None and instances.has("gt_boxes"):
            if not bool(torch.isfinite(instances.gt_boxes.tensor).all()):
                problems.append("its gt_boxes hold NaN/inf")
        out.append(text + (f" <- {', '.join(problems)}" if problems else ""))
    return out


def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    while isinstance(model, (DistributedDataParallel, DataParallel)):
        model = model.module
    return model


def _last_checkpoint(checkpoint_dir: Optional[str]) -> Optional[str]:
    if not checkpoint_dir:
        return None
    try:
        with open(os.path.join(checkpoint_dir, "last_checkpoint")) as f:
            return os.path.join(checkpoint_dir, f.read().strip())
    except OSError:
        return None


def nonfinite_loss_message(
    iteration: int,
    reports: Sequence[Dict[str, Any]],
    bad_weights: Sequence[str] = (),
    last_checkpoint: Optional[str] = None,
) -> str:
    """The text of :class:`NonFiniteLossError`. ``reports``: one dict per process, with ``rank``,
    ``losses`` ({term: value}), ``bad`` (non-finite terms) and ``images`` (:func:`describe_images`)."""
    lines = [f"Non-finite loss at iteration {iteration}:"]
    for r in reports:
        where = f" on rank {r['rank']}" if len(reports) > 1 else ""
        if r["bad"]:
            terms = ", ".join(f"{k} = {r['losses'][k]}" for k in r["bad"])
            finite = ", ".join(f"{k} = {v:.4g}" for k, v in r["losses"].items() if k not in r["bad"])
            lines.append(f"  {terms}{where}" + (f" (finite: {finite})" if finite else ""))
            lines.append(f"  batch{where}: " + "; ".join(r["images"]))
        elif len(reports) > 1:
            lines.append(f"  all terms finite on rank {r['rank']} (batch: {'; '.join(r['images'])})")
    if bad_weights:
        lines.append(
            f"The weights themselves already hold NaN/inf ({', '.join(bad_weights[:6])}"
            f"{', ...' if len(bad_weights) > 6 else ''}): the optimizer step of iteration "
            f"{iteration - 1} produced them (a gradient overflowed while the loss was finite)."
        )
    else:
        lines.append(
            f"Training stopped before the backward pass of iteration {iteration}: the weights are "
            f"those after iteration {iteration - 1}, and nothing was saved for iteration {iteration}."
        )
    if last_checkpoint:
        lines.append(f"The last checkpoint, {last_checkpoint}, is intact (train_net.py --resume continues from it).")
    lines.append(
        "If these images and their annotations are fine, training diverged: lower the learning "
        "rate, lengthen the warmup or enable train.clip_grad."
    )
    return "\n".join(lines)


def check_finite_losses(
    loss_dict: Mapping[str, torch.Tensor],
    batch: Sequence[Any],
    iteration: int,
    model: Optional[torch.nn.Module] = None,
    checkpoint_dir: Optional[str] = None,
) -> None:
    """Raise :class:`NonFiniteLossError` if a term of ``loss_dict`` is NaN/inf in any process.

    Under DDP (world size > 1) every process must call it at every iteration: the per-term flags
    are summed over processes, and on a failure the descriptions of all batches are gathered, so
    that all processes raise the same error at the same iteration.
    """
    names = list(loss_dict)
    if not names:
        return
    flags = torch.stack([~torch.isfinite(v.detach()).all() for v in loss_dict.values()])
    if comm.get_world_size() > 1:
        counts = flags.to(torch.int32)
        dist.all_reduce(counts)
        any_bad = bool(counts.any())
    else:
        any_bad = bool(flags.any())
    if not any_bad:
        return
    local = flags.tolist()
    report = {
        "rank": comm.get_rank(),
        "losses": {k: float(v.detach().float().mean()) for k, v in loss_dict.items()},
        "bad": [k for k, bad in zip(names, local) if bad],
        "images": describe_images(batch),
    }
    reports = comm.all_gather(report) if comm.get_world_size() > 1 else [report]
    bad_weights = nonfinite_tensors(_unwrap(model).state_dict()) if model is not None else []
    raise NonFiniteLossError(
        nonfinite_loss_message(iteration, reports, bad_weights, _last_checkpoint(checkpoint_dir))
    )


# ------------------------------------------------------------------------------- RNG and EMA


def capture_rng_state() -> Dict[str, Any]:
    """The global RNG states of this process: torch CPU, CUDA (if initialised), numpy, random."""
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def rng_state_for_checkpoint(state: Dict[str, Any]) -> Dict[str, Any]:
    """:func:`capture_rng_state`'s dict in types that ``torch.load(weights_only=True)`` reads
    (numpy's key array as a tensor)."""
    kind, keys, pos, has_gauss, cached = state["numpy"]
    out = dict(state)
    out["numpy"] = {
        "kind": str(kind),
        "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
        "pos": int(pos),
        "has_gauss": int(has_gauss),
        "cached_gaussian": float(cached),
    }
    return out


def restore_rng_state(state: Dict[str, Any]) -> None:
    """Set the global RNGs to ``state`` (from :func:`capture_rng_state` or a checkpoint)."""
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    if isinstance(n, Mapping):
        n = (n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"])
    np.random.set_state(n)
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    cuda = state.get("cuda")
    if cuda is not None and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)


def ema_state(model: torch.nn.Module) -> Dict[str, Dict[str, float]]:
    """``{module name: {attribute: value}}`` of the :data:`EMA_ATTRIBUTES` set on the modules."""
    out = {}
    for name, module in _unwrap(model).named_modules():
        values = {
            a: float(getattr(module, a))
            for a in EMA_ATTRIBUTES
            if isinstance(getattr(module, a, None), (float, int)) and not isinstance(getattr(module, a), bool)
        }
        if values:
            out[name] = values
    return out


def load_ema_state(model: torch.nn.Module, state: Mapping[str, Mapping[str, float]], saved_by_this_rank: bool) -> int:
    """Set the EMA attributes of :func:`ema_state`; on a rank other than the one that saved them,
    only on modules whose EMA is the same on every rank (``global_loss_normalizer``). Returns how
    many were set."""
    modules = dict(_unwrap(model).named_modules())
    n = 0
    for name, values in state.items():
        module = modules.get(name)
        if module is None or not (saved_by_this_rank or getattr(module, "global_loss_normalizer", False)):
            continue
        for attr, value in values.items():
            setattr(module, attr, float(value))
            n += 1
    return n


# ----------------------------------------------------------------------------------- trainers


class _CheckedTrainerMixin:
    """What :class:`CheckedSimpleTrainer` and :class:`CheckedAMPTrainer` add (module docstring)."""

    def _init_checks(self, checkpoint_dir: Optional[str], replay_data_on_resume: bool) -> None:
        self.checkpoint_dir = checkpoint_dir
        self.replay_data_on_resume = replay_data_on_resume
        self._rng_at_step_end: Optional[Dict[str, Any]] = None
        self._resume_state: Optional[Dict[str, Any]] = None

    # -- one step (SimpleTrainer.run_step / AMPTrainer.run_step with the check before backward)

    def _autocast(self):
        return nullcontext()

    def _backward(self, losses: torch.Tensor) -> None:
        losses.backward()

    def _optimizer_step(self) -> None:
        self.optimizer.step()

    def run_step(self):
        assert self.model.training, f"[{type(self).__name__}] model was changed to eval mode!"
        start = time.perf_counter()
        data = next(self._data_loader_iter)
        data_time = time.perf_counter() - start
        if self.zero_grad_before_forward:
            self.optimizer.zero_grad()
        with self._autocast():
            loss_dict = self.model(data)
            if isinstance(loss_dict, torch.Tensor):
                losses = loss_dict
                loss_dict = {"total_loss": loss_dict}
            else:
                losses = sum(loss_dict.values())
        check_finite_losses(loss_dict, data, self.iter, self.model, self.checkpoint_dir)
        if not self.zero_grad_before_forward:
            self.optimizer.zero_grad()
        self._backward(losses)
        self.after_backward()
        if self.async_write_metrics:
            self.concurrent_executor.submit(self._write_metrics, loss_dict, data_time, iter=self.iter)
        else:
            self._write_metrics(loss_dict, data_time)
        self._optimizer_step()

    # -- exact resume

    def after_step(self):
        self._rng_at_step_end = capture_rng_state()
        try:
            super().after_step()
        finally:
            restore_rng_state(self._rng_at_step_end)
            self._rng_at_step_end = None

    def state_dict(self):
        ret = super().state_dict()
        rng = self._rng_at_step_end if self._rng_at_step_end is not None else capture_rng_state()
        ret["rng"] = dict(rng_state_for_checkpoint(rng), rank=comm.get_rank())
        ret["model_ema"] = ema_state(self.model)
        ret["world_size"] = comm.get_world_size()
        return ret

    def load_state_dict(self, state_dict):
        super().load_state_dict(state_dict)
        self._resume_state = {"rng": state_dict.get("rng"), "model_ema": state_dict.get("model_ema"),
                              "world_size": state_dict.get("world_size")}

    def train(self, start_iter: int, max_iter: int):
        if start_iter > 0:
            self._continue_at(start_iter)
        return super().train(start_iter, max_iter)

    def _continue_at(self, start_iter: int) -> None:
        saved_world = (self._resume_state or {}).get("world_size")
        world = comm.get_world_size()
        if saved_world is not None and saved_world != world:
            logger.warning(
                f"Resuming a run trained with {saved_world} process(es) with {world}: the images of each "
                f"iteration's batch are split over {world} instead of {saved_world} processes (another data "
                "order per process, other per-process random augmentations and RNG states), so the run does "
                "not continue exactly as the interrupted one would have; its results are not bit-identical to "
                f"an uninterrupted run. Resume with --num-gpus {saved_world} (and the same --num-machines) to "
                "continue exactly."
            )
        if self.replay_data_on_resume:
            t0 = time.perf_counter()
            for _ in range(start_iter):
                next(self._data_loader_iter)
            logger.info(
                f"Resuming at iteration {start_iter}: replayed the first {start_iter} batches of the "
                f"training data in {time.perf_counter() - t0:.1f} s (no training), so that the data "
                + ("order and augmentations continue where the interrupted run stopped."
                   if saved_world in (None, world) else
                   f"stream skips as many batches, though split over {world} processes instead of {saved_world}.")
            )
        else:
            logger.warning(
                f"Resuming at iteration {start_iter} without replaying the data: the data loader "
                "starts its stream again, so the run differs from an uninterrupted one."
            )
        state, self._resume_state = self._resume_state or {}, None
        rank = comm.get_rank()
        rng = state.get("rng")
        if rng is None:
            logger.warning(
                "The checkpoint holds no RNG state (written by another trainer): random "
                "augmentations and sampling after the resume differ from an uninterrupted run."
            )
        elif rng.get("rank", 0) == rank:
            restore_rng_state(rng)
        else:
            logger.info(f"RNG state of rank {rng.get('rank', 0)} in the checkpoint; rank {rank} keeps its own.")
        saved_rank = rng.get("rank", 0) if rng is not None else 0
        if state.get("model_ema"):
            load_ema_state(self.model, state["model_ema"], saved_by_this_rank=(saved_rank == rank))


class CheckedSimpleTrainer(_CheckedTrainerMixin, SimpleTrainer):
    """``SimpleTrainer`` with the finite-loss check and exact resume (module docstring).

    Args:
        model, data_loader, optimizer, kwargs: as ``SimpleTrainer``.
        checkpoint_dir: the checkpointer's folder, named in the non-finite-loss message.
        replay_data_on_resume: replay the batches before ``start_iter`` on resume (default True).
    """

    def __init__(self, model, data_loader, optimizer, *, checkpoint_dir=None, replay_data_on_resume=True, **kwargs):
        super().__init__(model, data_loader, optimizer, **kwargs)
        self._init_checks(checkpoint_dir, replay_data_on_resume)


class CheckedAMPTrainer(_CheckedTrainerMixin, AMPTrainer):
    """``AMPTrainer`` with the finite-loss check and exact resume. Autocast runs on the device
    type of the model's parameters (CUDA in train_net.py; on the CPU, pass a
    ``torch.amp.GradScaler("cpu")`` and ``precision=torch.bfloat16``)."""

    def __init__(self, model, data_loader, optimizer, *, checkpoint_dir=None, replay_data_on_resume=True, **kwargs):
        super().__init__(model, data_loader, optimizer, **kwargs)
        self._init_checks(checkpoint_dir, replay_data_on_resume)
        self._amp_device = next(_unwrap(model).parameters()).device.type
        if self._amp_device == "cpu" and self.precision == torch.float16:
            raise ValueError(
                "CheckedAMPTrainer on the CPU with precision=torch.float16: float16 needs a working loss "
                "scaler, which on the CPU is disabled without a word (gradients underflow to 0). Use "
                "precision=torch.bfloat16 (and torch.amp.GradScaler('cpu')), or train in float32 "
                "(train_net.py uses AMP only on CUDA)."
            )

    def _autocast(self):
        return torch.autocast(device_type=self._amp_device, dtype=self.precision)

    def _backward(self, losses: torch.Tensor) -> None:
        self.grad_scaler.scale(losses).backward()
        if self.log_grad_scaler:
            get_event_storage().put_scalar("[metric]grad_scaler", self.grad_scaler.get_scale())

    def _optimizer_step(self) -> None:
        self.grad_scaler.step(self.optimizer)
        self.grad_scaler.update()
