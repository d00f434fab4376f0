"""Checkpoints that survive a kill, load without running pickled code, and say when they do not fit.

:class:`SafeCheckpointer` is Detectron2's ``DetectionCheckpointer`` with four changes:

* **Atomic saves.** A checkpoint is written to a temporary file in the same folder, flushed,
  ``fsync``-ed and renamed over its final name (``os.replace``); ``last_checkpoint`` is written the
  same way, after the checkpoint is complete. A kill (or a crash of the machine) at any moment
  leaves either the old files or the complete new ones, so ``--resume`` never picks a truncated
  file. Detectron2 writes both files in place: a kill while ``model_final.pth`` is re-written (a
  resumed run with a larger ``max_iter``) leaves ``last_checkpoint`` pointing at a truncated file.
  A save also refuses weights that are NaN or infinite, so that a diverged state never becomes
  ``last_checkpoint`` nor pushes a good checkpoint out of ``max_to_keep``.
* **No arbitrary unpickling.** ``.pth`` files load with ``torch.load(weights_only=True)``:
  tensors, numbers, strings and Python containers, which is all that Detectron2 checkpoints hold
  (model, ``trainer`` = iteration, optimizer incl. SWN's ``CombinedOptimizer``, LR-scheduler hook
  state, AMP grad scaler, and :mod:`detkit.engine.trainer`'s RNG state). Detectron2 / Caffe2
  model-zoo ``.pkl`` files (dicts of numpy arrays, e.g. ``detectron2://ImageNetPretrained/MSRA/
  R-50.pkl``) load through :class:`NumpyOnlyUnpickler`, which rebuilds numpy arrays and nothing
  else (Detectron2 itself calls ``pickle.load`` on them). A file that needs any other Python
  object is refused with :class:`UnsafeCheckpointError` unless ``allow_unsafe=True``
  (``train_net.py --allow-unsafe-checkpoint``).
* **Clear mismatch reports.** Detectron2 loads whatever matches and logs a warning per skipped
  tensor. Here the result of every load is one :class:`LoadReport`: an error
  (:class:`CheckpointMismatchError`, naming the file and what does not match) when less than
  ``min_loaded_fraction`` (:data:`MIN_LOADED_FRACTION`) of the model's weights were loaded, or
  when the checkpoint is used for evaluation or resuming (``require_complete``) and any weight
  of the model is missing or has another shape; otherwise one warning that lists what was
  skipped (a new class count, a different head: fine-tuning).
* ``--eval-only`` without a checkpoint is an error instead of an evaluation of random weights.
* A local file is loaded by its name as it is, also with "?" or "#" in it (Detectron2 parses
  every path as a URL and cuts it at "?"); only paths that are no local file go through
  Detectron2's ``PathManager`` (URLs, ``detectron2://``).

Built on public API only: ``save``, ``tag_last_checkpoint``, ``load`` and ``resume_or_load`` are
overridden; the file is read by :func:`read_checkpoint`, model-zoo names are matched by
Detectron2's ``align_and_update_state_dicts``, the weights set by ``load_state_dict(strict=False)``.
"""
import logging
import os
import pickle
import shutil
from collections import defaultdict
from contextlib import contextmanager
from typing import Any, Dict, Iterable, List, NamedTuple, Optional, Sequence, Tuple
from urllib.parse import parse_qs, urlparse

import numpy as np
import torch
from detectron2.checkpoint import DetectionCheckpointer

from ..utils import atomic_write
from detectron2.checkpoint.c2_model_loading import align_and_update_state_dicts
from detectron2.utils.file_io import PathManager
from torch.nn.modules.utils import consume_prefix_in_state_dict_if_present

__all__ = [
    "ALLOW_UNSAFE_FLAG",
    "MIN_LOADED_FRACTION",
    "CheckpointError",
    "CheckpointMismatchError",
    "LoadReport",
    "NonFiniteWeightsError",
    "NumpyOnlyUnpickler",
    "SafeCheckpointer",
    "UnsafeCheckpointError",
    "atomic_write",
    "load_pickle_checkpoint",
    "load_report",
    "nonfinite_tensors",
    "read_checkpoint",
    "torch_load_weights_only",
]

# Under "detectron2" so that the log files and console of train_net.py (Detectron2's setup_logger) show it
logger = logging.getLogger("detectron2." + __name__)

#: The command-line flag of train_net.py that allows full unpickling (see UnsafeCheckpointError).
ALLOW_UNSAFE_FLAG = "--allow-unsafe-checkpoint"

#: Below this fraction of the model's weights (counted in elements of its state dict) loaded from
#: a checkpoint, loading is an error: the file is of another architecture. For scale: an ImageNet
#: backbone is 50-70 % of a Detectron2 detector (R-50 in Mask R-CNN ~53 %, in RetinaNet ~62 %), a
#: Faster R-CNN checkpoint gives a RetinaNet of the same backbone its backbone and FPN, a new
#: class count loses well under 1 %.
MIN_LOADED_FRACTION = 0.1


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used as asked; the message names the file and what to do."""


class UnsafeCheckpointError(CheckpointError):
    """The file needs full unpickling (it holds a Python object other than tensors/numpy arrays,
    numbers, strings and containers), which can run arbitrary code."""


class CheckpointMismatchError(CheckpointError, ValueError):
    """The checkpoint does not fit the model (another architecture, or incomplete where the whole
    model is needed)."""


class NonFiniteWeightsError(CheckpointError, FloatingPointError):
    """A save was asked for weights that are NaN or infinite; nothing was written."""


# --------------------------------------------------------------------------------------- saving


def nonfinite_tensors(state_dict: Dict[str, Any]) -> List[str]:
    """Keys of the floating-point tensors of ``state_dict`` that hold a NaN or an infinity (one
    device synchronisation for all of them)."""
    keys = [k for k, v in state_dict.items() if torch.is_tensor(v) and v.is_floating_point() and v.numel()]
    if not keys:
        return []
    flags = [torch.isfinite(state_dict[k]).all() for k in keys]
    finite = torch.stack([f.to(flags[0].device) for f in flags]).tolist()
    return [k for k, ok in zip(keys, finite) if not ok]


# -------------------------------------------------------------------------------------- loading


def _unsafe_message(path: str, what: str) -> str:
    return (
        f"{path}: refusing to load this checkpoint: it needs full unpickling ({what}), and "
        "unpickling can run arbitrary code. Checkpoints written by Detectron2 / train_net.py "
        "hold only tensors, numbers and strings and load safely; a file with other Python "
        f"objects may come from another tool or be tampered with. If you trust the file, pass "
        f"{ALLOW_UNSAFE_FLAG} to train_net.py (SafeCheckpointer(allow_unsafe=True) in Python)."
    )


def _unsupported_global(error: Exception) -> str:
    """The 'Unsupported global: ...' line of torch's weights-only error (or its last line)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    for line in lines:
        if "Unsupported global" in line or "WeightsUnpickler error" in line:
            return line.replace("WeightsUnpickler error: ", "").split(". Please use")[0]
    return lines[-1] if lines else type(error).__name__


def _unreadable_message(path: str, error: Exception) -> str:
    first = (str(error).strip().splitlines() or [type(error).__name__])[0]
    return (
        f"{path}: cannot read this checkpoint ({type(error).__name__}: {first[:200]}). It is "
        "truncated or not a checkpoint: a file cut short by a kill during a save (by a tool that "
        "does not write atomically) looks like this. Delete it; with --resume, write the name of "
        "an intact checkpoint of the same folder into its 'last_checkpoint' file."
    )


def torch_load_weights_only(path: str, allow_unsafe: bool = False) -> Any:
    """``torch.load(path, map_location="cpu", weights_only=True)``, with clear errors.

    Raises:
        UnsafeCheckpointError: the file needs full unpickling and ``allow_unsafe`` is False (with
            ``allow_unsafe`` it is loaded with ``weights_only=False`` and a warning).
        CheckpointError: the file is truncated, empty or not a torch file.
    """
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if not allow_unsafe:
            raise UnsafeCheckpointError(_unsafe_message(path, _unsupported_global(e))) from None
        logger.warning(
            f"{path}: loading with full unpickling ({_unsupported_global(e)}) because unsafe "
            "checkpoints are allowed."
        )
        return torch.load(path, map_location="cpu", weights_only=False)
    except (RuntimeError, EOFError, ValueError) as e:
        raise CheckpointError(_unreadable_message(path, e)) from e


class _ForbiddenGlobal(pickle.UnpicklingError):
    pass


class NumpyOnlyUnpickler(pickle.Unpickler):
    """An unpickler that rebuilds numpy arrays, numpy scalars and Python containers, and refuses
    every other global (the "restricting globals" recipe of Python's ``pickle`` documentation).

    That is all a Detectron2 or Caffe2 model-zoo ``.pkl`` holds (a dict, maybe under ``"blobs"``
    or ``"model"``, of name -> ``numpy.ndarray``). Allowed: numpy's ``_reconstruct`` (both the
    numpy 1 and 2 module paths), ``ndarray``, ``dtype``, ``scalar``, ``_frombuffer`` (protocol 5);
    ``_codecs.encode`` (how a protocol-2 pickle written by Python 3 stores the bytes of an array);
    ``OrderedDict``. None of them can call anything else: an object array's elements go through
    :meth:`find_class` again.
    """

    ALLOWED = frozenset(
        {
            ("numpy.core.multiarray", "_reconstruct"),
            ("numpy._core.multiarray", "_reconstruct"),
            ("numpy.core.multiarray", "scalar"),
            ("numpy._core.multiarray", "scalar"),
            ("numpy.core.numeric", "_frombuffer"),  # protocol 5
            ("numpy._core.numeric", "_frombuffer"),
            ("numpy", "ndarray"),
            ("numpy", "dtype"),
            ("_codecs", "encode"),
            ("collections", "OrderedDict"),
        }
    )

    def find_class(self, module: str, name: str):
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise _ForbiddenGlobal(f"it refers to the Python object {module}.{name}")


def load_pickle_checkpoint(path: str, allow_unsafe: bool = False) -> Any:
    """Load a ``.pkl`` checkpoint (latin-1 strings, as Detectron2 does) with
    :class:`NumpyOnlyUnpickler`; with ``allow_unsafe``, a file it refuses is loaded by
    ``pickle.load`` with a warning.

    Raises:
        UnsafeCheckpointError, CheckpointError: as :func:`torch_load_weights_only`.
    """
    with open(path, "rb") as f:
        try:
            return NumpyOnlyUnpickler(f, encoding="latin1").load()
        except _ForbiddenGlobal as e:
            if not allow_unsafe:
                raise UnsafeCheckpointError(_unsafe_message(path, str(e))) from None
            logger.warning(f"{path}: loading with full unpickling ({e}) because unsafe checkpoints are allowed.")
            f.seek(0)
            return pickle.load(f, encoding="latin1")
        except (pickle.UnpicklingError, EOFError, ValueError, TypeError) as e:
            raise CheckpointError(_unreadable_message(path, e)) from e


# --------------------------------------------------------------------------- what was loaded


class LoadReport(NamedTuple):
    """What loading a checkpoint into a model did, key by key of the model's state dict."""

    loaded: List[str]  # model keys set from the checkpoint
    missing: List[str]  # model keys the checkpoint lacks (left as initialised)
    shape_mismatch: List[Tuple[str, Tuple[int, ...], Tuple[int, ...]]]  # (key, checkpoint, model)
    unused: List[str]  # checkpoint keys this model has no use for
    loaded_fraction: float  # loaded elements / all elements of the model's state dict

    @property
    def complete(self) -> bool:
        return not self.missing and not self.shape_mismatch

    def summary(self) -> str:
        """One paragraph: counts, then the groups of keys of each kind."""
        total = len(self.loaded) + len(self.missing) + len(self.shape_mismatch)
        lines = [
            f"loaded {len(self.loaded)} of the model's {total} tensors "
            f"({100 * self.loaded_fraction:.1f} % of its weights)"
        ]
        if self.shape_mismatch:
            shapes = "; ".join(f"{k}: {tuple(c)} in the checkpoint, {tuple(m)} in the model" for k, c, m in self.shape_mismatch[:8])
            more = f"; and {len(self.shape_mismatch) - 8} more" if len(self.shape_mismatch) > 8 else ""
            lines.append(f"skipped, other shape ({len(self.shape_mismatch)}): {shapes}{more}")
        if self.missing:
            lines.append(f"not in the checkpoint, left as initialised ({len(self.missing)}): {_grouped(self.missing)}")
        if self.unused:
            lines.append(f"in the checkpoint but not used by this model ({len(self.unused)}): {_grouped(self.unused)}")
        return "\n  ".join(lines)


def _grouped(keys: Sequence[str], limit: int = 12) -> str:
    """``"backbone.conv1.{bias, weight}, head.score.weight"``: keys grouped by their module."""
    by_module = defaultdict(list)
    for key in keys:
        head, _, tail = key.rpartition(".")
        by_module[head].append(tail)
    groups = sorted(
        (head + "." if head else "") + (tails[0] if len(tails) == 1 else "{" + ", ".join(sorted(tails)) + "}")
        for head, tails in by_module.items()
    )
    more = f", ... ({len(groups) - limit} more groups)" if len(groups) > limit else ""
    return ", ".join(groups[:limit]) + more


def load_report(
    model_shapes: Dict[str, Tuple[int, ...]],
    checkpoint_keys: Iterable[str],
    shape_mismatch: Iterable[Tuple[str, Tuple[int, ...], Tuple[int, ...]]] = (),
    not_needed: Iterable[str] = (),
) -> LoadReport:
    """A :class:`LoadReport` from the model's state-dict shapes (``{key: shape}``), the keys of the
    state dict taken from the checkpoint, the ``(key, checkpoint shape, model shape)`` of the
    tensors skipped for their shape (fvcore's ``incorrect_shapes``), and model keys that count as
    loaded although the checkpoint lacks them (buffers set from the config, such as
    ``pixel_mean``; parameters shared under two names)."""
    checkpoint_keys, shape_mismatch = set(checkpoint_keys), sorted(shape_mismatch)
    skipped = {k for k, _, _ in shape_mismatch}
    not_needed = set(not_needed)
    loaded = [k for k in model_shapes if k not in skipped and (k in checkpoint_keys or k in not_needed)]
    missing = sorted(k for k in model_shapes if k not in checkpoint_keys and k not in skipped and k not in not_needed)
    unused = sorted(checkpoint_keys - set(model_shapes))

    def numel(keys):
        total = 0
        for k in keys:
            n = 1
            for s in model_shapes[k]:
                n *= int(s)
            total += n
        return total

    all_elements = numel(model_shapes)
    fraction = numel(loaded) / all_elements if all_elements else 1.0
    return LoadReport(loaded, missing, shape_mismatch, unused, fraction)


# ----------------------------------------------------------------------------- the checkpointer


def _tensor_bytes(obj: Any) -> int:
    """Bytes of the tensors in a nested dict / list (the size of a checkpoint, roughly)."""
    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, dict):
        return sum(_tensor_bytes(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(_tensor_bytes(v) for v in obj)
    return 0


def _save_failed_message(save_file: str, data: Dict[str, Any], error: Exception) -> str:
    mb = 2 ** 20
    need = _tensor_bytes(data)
    try:
        free = shutil.disk_usage(os.path.dirname(save_file)).free
    except OSError:
        free = None
    last = os.path.join(os.path.dirname(save_file), "last_checkpoint")
    previous = open(last).read().strip() if os.path.isfile(last) else None
    space = (f"{free / mb:.0f} MB free there; this checkpoint needs about {need / mb:.0f} MB, and the atomic save "
             "writes it next to the previous one before replacing it, so the folder needs room for two"
             if free is not None else f"this checkpoint needs about {need / mb:.0f} MB")
    full = free is not None and free < 2 * need
    return (
        f"Could not write the checkpoint {save_file}{' (the disk is full)' if full else ''}: "
        f"{type(error).__name__}: {error}. {space}. "
        + (f"The previous checkpoint {previous} is intact (last_checkpoint still names it). " if previous else "")
        + "Free some space or set train.output_dir to another disk, then run again with --resume."
    )


def read_checkpoint(filename: str, allow_unsafe: bool = False) -> Dict[str, Any]:
    """A local checkpoint file as Detectron2's checkpointer reads it, without arbitrary unpickling:
    ``{"model": state dict, ...}`` (``.pth`` through :func:`torch_load_weights_only`; Detectron2 /
    Caffe2 model-zoo ``.pkl`` through :func:`load_pickle_checkpoint`, with Detectron2's
    ``matching_heuristics`` flag for Caffe2 blobs; pycls ``.pyth``).

    Raises:
        UnsafeCheckpointError, CheckpointError: as :func:`torch_load_weights_only`, or the file
            holds no state dict.
    """
    if filename.endswith(".pkl"):
        data = load_pickle_checkpoint(filename, allow_unsafe)
        if not isinstance(data, dict):
            raise CheckpointError(f"{filename}: a .pkl checkpoint must hold a dict, not a {type(data).__name__}")
        if "model" in data and "__author__" in data:  # Detectron2 model-zoo format
            logger.info("Reading a file from '{}'".format(data["__author__"]))
            return data
        if "blobs" in data:  # Caffe2 / Detectron1 detection models
            data = data["blobs"]
        data = {k: v for k, v in data.items() if not k.endswith("_momentum")}
        return {"model": data, "__author__": "Caffe2", "matching_heuristics": True}
    if filename.endswith(".pyth"):  # pycls
        data = torch_load_weights_only(filename, allow_unsafe)
        if "model_state" not in data:
            raise CheckpointError(f"{filename}: a pycls .pyth checkpoint must contain 'model_state'")
        state = {k: v for k, v in data["model_state"].items() if not k.endswith("num_batches_tracked")}
        return {"model": state, "__author__": "pycls", "matching_heuristics": True}
    loaded = torch_load_weights_only(filename, allow_unsafe)
    if not isinstance(loaded, dict):
        raise CheckpointError(f"{filename}: not a checkpoint (it holds a {type(loaded).__name__}, not a dict)")
    if "model" not in loaded:
        loaded = {"model": loaded}
    if not isinstance(loaded.get("model"), dict):
        raise CheckpointError(
            f"{filename}: no state dict in this file (its 'model' is a "
            f"{type(loaded.get('model')).__name__}); expected a checkpoint of train_net.py or "
            "a plain {name: tensor} state dict."
        )
    return loaded


def _local_file(path: str) -> Tuple[str, bool]:
    """``(local file, matching_heuristics)`` of a checkpoint path: a local file as it is (also with
    "?" or "#" in its name), else a URL or ``detectron2://`` path through Detectron2's PathManager
    (downloaded and cached), whose ``?matching_heuristics=True`` query Detectron2 honours."""
    if os.path.isfile(path):
        return path, False
    url = urlparse(path)
    queries = parse_qs(url.query)
    heuristics = queries.pop("matching_heuristics", ["False"]) == ["True"]
    if queries:
        raise CheckpointError(f"{path}: unsupported URL query {dict(queries)} (only matching_heuristics=True)")
    local = PathManager.get_local_path(url._replace(query="").geturl())
    if not os.path.isfile(local):
        raise FileNotFoundError(f"Checkpoint {path} not found")
    return local, heuristics


def _shared_with(model: torch.nn.Module, keys: Iterable[str]) -> set:
    """The keys among ``keys`` whose tensor the model also holds under a name not in ``keys``
    (tied parameters: loaded through their other name)."""
    keys = set(keys)
    names_by_tensor = defaultdict(set)
    for name, tensor in model.state_dict(keep_vars=True).items():
        names_by_tensor[id(tensor)].add(name)
    return {k for names in names_by_tensor.values() if names - keys for k in names & keys}


class SafeCheckpointer(DetectionCheckpointer):
    """``DetectionCheckpointer`` with atomic saves, weights-only loading and mismatch errors (see
    the module docstring).

    Args:
        model, save_dir, save_to_disk, checkpointables: as ``DetectionCheckpointer``.
        allow_unsafe: load files that need full unpickling (with a warning) instead of refusing.
        require_complete: every weight of the model must come from the checkpoint (for
            ``--eval-only``); :meth:`resume_or_load` requires it when it resumes.
        min_loaded_fraction: below this fraction of the model's weights loaded, :meth:`load`
            raises :class:`CheckpointMismatchError`.
    """

    def __init__(
        self,
        model,
        save_dir: str = "",
        *,
        allow_unsafe: bool = False,
        require_complete: bool = False,
        min_loaded_fraction: float = MIN_LOADED_FRACTION,
        save_to_disk: Optional[bool] = None,
        **checkpointables,
    ):
        super().__init__(model, save_dir, save_to_disk=save_to_disk, **checkpointables)
        self.allow_unsafe = allow_unsafe
        self.require_complete = require_complete
        self.min_loaded_fraction = min_loaded_fraction
        self._purpose = "evaluation" if require_complete else "initialisation"
        self.last_report: Optional[LoadReport] = None

    # -- saving

    def save(self, name: str, **kwargs: Any) -> None:
        if not self.save_dir or not self.save_to_disk:
            return
        data = {"model": self.model.state_dict()}
        for key, obj in self.checkpointables.items():
            data[key] = obj.state_dict()
        data.update(kwargs)
        basename = f"{name}.pth"
        save_file = os.path.join(self.save_dir, basename)
        bad = nonfinite_tensors(data["model"])
        if bad:
            raise NonFiniteWeightsError(
                f"Not saving {save_file}: {len(bad)} weight tensors hold NaN or infinite values "
                f"({_grouped(bad, limit=6)}). Training diverged (a gradient overflowed in the last "
                "step); the previous checkpoint stays the last one. Lower the learning rate or "
                "enable train.clip_grad, then resume."
            )
        self.logger.info(f"Saving checkpoint to {save_file}")
        os.makedirs(self.save_dir, exist_ok=True)
        try:
            atomic_write(save_file, lambda f: torch.save(data, f))
        except (OSError, RuntimeError) as e:  # disk full: OSError(ENOSPC), or torch's "unexpected pos"
            raise CheckpointError(_save_failed_message(save_file, data, e)) from e
        self.tag_last_checkpoint(basename)

    def tag_last_checkpoint(self, last_filename_basename: str) -> None:
        atomic_write(
            os.path.join(self.save_dir, "last_checkpoint"),
            lambda f: f.write(last_filename_basename.encode("utf-8")),
        )

    # -- loading

    @contextmanager
    def _for(self, purpose: str):
        previous, self._purpose = self._purpose, purpose
        try:
            yield
        finally:
            self._purpose = previous

    def resume_or_load(self, path: str, *, resume: bool = True) -> Dict[str, Any]:
        """As Detectron2's; resuming (``resume`` and a ``last_checkpoint`` in ``save_dir``) needs
        the whole model in the checkpoint."""
        if resume and self.has_checkpoint():
            with self._for("resuming"):
                return self.load(self.get_checkpoint_file())
        return self.load(path, checkpointables=[])

    def load(self, path: str, checkpointables: Optional[List[str]] = None) -> Dict[str, Any]:
        """Load the model's weights from ``path`` (:func:`read_checkpoint`, Detectron2's name
        matching for model-zoo files, the :class:`LoadReport` checks) and the ``checkpointables``
        found in it (default: all); returns what else the file holds (e.g. ``iteration``)."""
        if not path:
            if self._needs_complete():
                raise CheckpointError(
                    f"No checkpoint given for {self._purpose}: the model would keep its random "
                    "initial weights. Set train.init_checkpoint=PATH (e.g. OUTPUT_DIR/model_final.pth)."
                )
            self.logger.info("No checkpoint found. Initializing model from scratch")
            return {}
        self.logger.info(f"[SafeCheckpointer] Loading from {path} ...")
        local, heuristics = _local_file(path)
        checkpoint = read_checkpoint(local, self.allow_unsafe)
        if heuristics:
            checkpoint["matching_heuristics"] = True
        self._load_weights(path, checkpoint)
        for key in self.checkpointables if checkpointables is None else checkpointables:
            if key in checkpoint:
                self.logger.info(f"Loading {key} from {path} ...")
                self.checkpointables[key].load_state_dict(checkpoint.pop(key))
        return checkpoint

    def _needs_complete(self) -> bool:
        return self.require_complete or self._purpose == "resuming"

    def _load_weights(self, path: str, checkpoint: Dict[str, Any]) -> LoadReport:
        """Put ``checkpoint["model"]`` into the model: tensors of another shape are skipped; raises
        :class:`CheckpointMismatchError` as the class docstring says, else logs one warning when
        something did not match."""
        state = {k: torch.as_tensor(v) if isinstance(v, np.ndarray) else v for k, v in checkpoint.pop("model").items()}
        model_state = self.model.state_dict()
        if checkpoint.get("matching_heuristics", False):  # Detectron2's name matching for zoo files
            state = align_and_update_state_dicts(
                model_state, state, c2_conversion=checkpoint.get("__author__", None) == "Caffe2"
            )
        consume_prefix_in_state_dict_if_present(state, "module.")  # a DDP-wrapped model's save
        shapes = {k: tuple(v.shape) for k, v in model_state.items()}
        checkpoint_keys = list(state)
        mismatch = [(k, tuple(state[k].shape), shapes[k]) for k in checkpoint_keys
                    if k in shapes and torch.is_tensor(state[k]) and tuple(state[k].shape) != shapes[k]]
        for k, _, _ in mismatch:
            del state[k]
        self.model.load_state_dict(state, strict=False)
        # Not missing for Detectron2 either: pixel_mean/std (set from the config) and parameters
        # that the checkpoint holds under another of their names. (Keys that a module's
        # _load_from_state_dict fills with defaults, e.g. BatchNorm statistics, are missing.)
        absent = [k for k in shapes if k not in state]
        top_level_buffers = dict(self.model.named_buffers(recurse=False))
        tolerated = {k for k in ("pixel_mean", "pixel_std") if k in top_level_buffers}
        tolerated |= _shared_with(self.model, absent)
        report = load_report(shapes, checkpoint_keys, mismatch, not_needed=tolerated)
        self.last_report = report
        model = type(self.model).__name__
        if report.loaded_fraction < self.min_loaded_fraction:
            raise CheckpointMismatchError(
                f"{path} does not fit this {model}: {report.summary()}.\nLess than "
                f"{100 * self.min_loaded_fraction:.0f} % of the model's weights could be loaded: "
                "is it a checkpoint of another architecture (backbone, detector type) or a "
                "config that does not match it?"
            )
        if self._needs_complete() and not report.complete:
            raise CheckpointMismatchError(
                f"{path} does not hold the whole {model}, which {self._purpose} needs: "
                f"{report.summary()}.\nWeights missing from the checkpoint would keep their random "
                "initial values. Is it a checkpoint of another architecture or class count, or a "
                "backbone-only file (for training, pass it as train.init_checkpoint without "
                "--eval-only / --resume)?"
            )
        if not report.complete or report.unused:
            self.logger.warning(f"Checkpoint {path}: {report.summary()}")
        return report
