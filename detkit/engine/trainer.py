"""Detectron2's training loop, made to stop clearly on a non-finite loss and to resume exactly.

:class:`CheckedSimpleTrainer` and :class:`CheckedAMPTrainer` are Detectron2's ``SimpleTrainer`` and
``AMPTrainer`` (same constructor, Detectron2's own ``run_step``) plus, by composition over public
API:

* **A finite-loss check before the backward pass**, as a forward hook on the model
  (:class:`FiniteLossCheck`). A NaN or infinite loss term raises
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
  RNG states (torch CPU and CUDA, numpy, ``random``: :class:`TrainingRNG`) and the
  ``DenseDetector`` EMA attributes (``loss_normalizer``: :class:`ModelEMAState`) are checkpointables
  of their own (``SafeCheckpointer(model, dir, **trainer.checkpointables())``), and ``train(start_iter>0)`` first replays
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
from typing import Any, Dict, List, Mapping, Optional, Sequence

import numpy as np
import torch
import torch.distributed as dist
from detectron2.engine import AMPTrainer, SimpleTrainer
from detectron2.utils import comm
from detectron2.utils.events import get_event_storage

from ..utils import unwrap_model
from .checkpoint import nonfinite_tensors

__all__ = [
    "CheckedAMPTrainer",
    "CheckedSimpleTrainer",
    "FiniteLossCheck",
    "ModelEMAState",
    "NonFiniteLossError",
    "TrainingRNG",
    "capture_rng_state",
    "describe_images",
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
    bad_weights = nonfinite_tensors(unwrap_model(model).state_dict()) if model is not None else []
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
    for name, module in unwrap_model(model).named_modules():
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
    modules = dict(unwrap_model(model).named_modules())
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


class FiniteLossCheck:
    """A forward hook that raises :class:`NonFiniteLossError` (:func:`check_finite_losses`) when a
    training forward pass returns a NaN / infinite loss term: it runs right after the model's
    forward, before the trainer's backward pass. Evaluation (``model.training`` False) is not
    checked. Register it with ``model.register_forward_hook(FiniteLossCheck(...))``.

    Args:
        checkpoint_dir: the checkpointer's folder, named in the message.
    """

    def __init__(self, checkpoint_dir: Optional[str] = None):
        self.checkpoint_dir = checkpoint_dir

    def __call__(self, module: torch.nn.Module, args, output) -> None:
        if not module.training or not args:
            return
        loss_dict = output if isinstance(output, Mapping) else {"total_loss": output}
        check_finite_losses(loss_dict, args[0], get_event_storage().iter, module, self.checkpoint_dir)


class TrainingRNG:
    """The global RNG states of this process as a checkpointable (``state_dict`` /
    ``load_state_dict``), for ``Checkpointer(..., rng=trainer.rng)``.

    Saved: the states at the end of the last training step (:meth:`capture_step_end`), so that a
    checkpoint written by an ``after_step`` hook holds the state the next iteration starts with.
    Loaded states are kept in :attr:`pending` until the trainer applies them (after replaying the
    data of the skipped iterations, which draws from the same RNGs).
    """

    def __init__(self):
        self.at_step_end: Optional[Dict[str, Any]] = None
        self.pending: Optional[Dict[str, Any]] = None

    def capture_step_end(self) -> None:
        self.at_step_end = capture_rng_state()

    def state_dict(self) -> Dict[str, Any]:
        rng = self.at_step_end if self.at_step_end is not None else capture_rng_state()
        return dict(rng_state_for_checkpoint(rng), rank=comm.get_rank())

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        self.pending = state


class ModelEMAState:
    """The :data:`EMA_ATTRIBUTES` of a model's modules as a checkpointable, for
    ``Checkpointer(..., model_ema=trainer.model_ema)``; loading sets them at once (on a rank other
    than the one that saved them, only the all-process ones, see :func:`load_ema_state`)."""

    def __init__(self, model: torch.nn.Module):
        self.model = model

    def state_dict(self) -> Dict[str, Any]:
        return {"rank": comm.get_rank(), "modules": ema_state(self.model)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        load_ema_state(self.model, state["modules"], saved_by_this_rank=state.get("rank", 0) == comm.get_rank())


class _CheckedTrainerMixin:
    """What :class:`CheckedSimpleTrainer` and :class:`CheckedAMPTrainer` add (module docstring), by
    composition: a :class:`FiniteLossCheck` forward hook on the model, the RNG and EMA states as
    checkpointables (:meth:`checkpointables`), and the data replay before the first resumed step."""

    def _init_checks(self, checkpoint_dir: Optional[str], replay_data_on_resume: bool) -> None:
        self.replay_data_on_resume = replay_data_on_resume
        self.rng = TrainingRNG()
        self.model_ema = ModelEMAState(self.model)
        self._saved_world_size: Optional[int] = None
        self.model.register_forward_hook(FiniteLossCheck(checkpoint_dir))

    def checkpointables(self) -> Dict[str, Any]:
        """What a checkpointer needs to save and resume this run exactly:
        ``SafeCheckpointer(model, output_dir, **trainer.checkpointables())``."""
        return {"trainer": self, "rng": self.rng, "model_ema": self.model_ema}

    def after_step(self):
        # the after_step hooks (evaluation, checkpoints) run on a copy of the RNG states
        self.rng.capture_step_end()
        try:
            super().after_step()
        finally:
            restore_rng_state(self.rng.at_step_end)
            self.rng.at_step_end = None

    def state_dict(self):
        return dict(super().state_dict(), world_size=comm.get_world_size())

    def load_state_dict(self, state_dict):
        super().load_state_dict(state_dict)
        self._saved_world_size = state_dict.get("world_size")
        # checkpoints written before the RNG and EMA states became checkpointables of their own
        if "rng" in state_dict and self.rng.pending is None:
            self.rng.load_state_dict(state_dict["rng"])
        if state_dict.get("model_ema"):
            rank = state_dict.get("rng", {}).get("rank", 0)
            self.model_ema.load_state_dict({"rank": rank, "modules": state_dict["model_ema"]})

    def train(self, start_iter: int, max_iter: int):
        if start_iter > 0:
            self._continue_at(start_iter)
        return super().train(start_iter, max_iter)

    def _continue_at(self, start_iter: int) -> None:
        saved_world, world = self._saved_world_size, comm.get_world_size()
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
        rng, self.rng.pending = self.rng.pending, None
        rank = comm.get_rank()
        if rng is None:
            logger.warning(
                "The checkpoint holds no RNG state (written by another trainer, or a checkpointer "
                "without trainer.checkpointables()): random augmentations and sampling after the "
                "resume differ from an uninterrupted run."
            )
        elif rng.get("rank", 0) == rank:
            restore_rng_state(rng)
        else:
            logger.info(f"RNG state of rank {rng.get('rank', 0)} in the checkpoint; rank {rank} keeps its own.")


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
    """``AMPTrainer`` (CUDA only, as Detectron2's) with the finite-loss check and exact resume."""

    def __init__(self, model, data_loader, optimizer, *, checkpoint_dir=None, replay_data_on_resume=True, **kwargs):
        device = next(unwrap_model(model).parameters()).device.type
        if device != "cuda":
            raise ValueError(
                f"CheckedAMPTrainer: the model is on the {device}; Detectron2's AMPTrainer (autocast and "
                "loss scaling) needs CUDA. Train in float32 there (train_net.py uses AMP only on CUDA)."
            )
        super().__init__(model, data_loader, optimizer, **kwargs)
        self._init_checks(checkpoint_dir, replay_data_on_resume)
