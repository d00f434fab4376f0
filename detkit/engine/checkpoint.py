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
"""
import glob
import logging
import os
import pickle
import shutil
import tempfile
import uuid
from contextlib import contextmanager
from typing import IO, Any, Callable, Dict, Iterable, List, NamedTuple, Optional, Sequence, Tuple

import torch
from detectron2.checkpoint import DetectionCheckpointer
from fvcore.common.checkpoint import _filter_reused_missing_keys, _group_checkpoint_keys, _group_to_str

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


def atomic_write(path: str, write: Callable[[IO[bytes]], Any]) -> None:
    """Write the file ``path`` so that it is, at every moment, either absent / the old file or the
    complete new one.

    ``write(f)`` fills a new temporary file ``.<name>.<random>.tmp`` in the same folder (so that
    the rename stays on one file system), which is flushed, ``fsync``-ed and renamed over ``path``
    with ``os.replace`` (atomic on POSIX and Windows); then the folder is ``fsync``-ed so that the
    rename survives a crash of the machine. On an exception the temporary file is removed; a
    SIGKILL leaves it behind (hidden, ``.tmp``: never taken for a checkpoint), and the next
    :func:`atomic_write` of the same ``path`` removes it.
    """
    path = os.path.abspath(path)
    directory, name = os.path.split(path)
    for stale in glob.glob(os.path.join(glob.escape(directory), f".{glob.escape(name)}.*.tmp")):
        try:
            os.remove(stale)
        except FileNotFoundError:
            pass
    tmp = os.path.join(directory, f".{name}.{uuid.uuid4().hex[:12]}.tmp")
    try:
        with open(tmp, "xb") as f:  # "x": never follows or reuses an existing file
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.remove(tmp)
        except FileNotFoundError:
            pass
        raise
    if os.name == "posix":
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


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
    groups = sorted(head + _group_to_str(tails) for head, tails in _group_checkpoint_keys(list(keys)).items())
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


@contextmanager
def _url_safe_local_path(path: Optional[str]):
    """``path``, or for a local file whose name holds "?" or "#" (which Detectron2's checkpointer
    parses as a URL query / fragment and cuts off) a temporary link to it without them."""
    if not path or not ("?" in path or "#" in path) or not os.path.isfile(path):
        yield path
        return
    folder = tempfile.mkdtemp(prefix="detkit-checkpoint-")
    link = os.path.join(folder, os.path.basename(path).replace("?", "_").replace("#", "_"))
    try:
        os.symlink(os.path.abspath(path), link)
        yield link
    finally:
        shutil.rmtree(folder, ignore_errors=True)


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
        self._loading = None
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
        if not path and self._needs_complete():
            raise CheckpointError(
                f"No checkpoint given for {self._purpose}: the model would keep its random "
                "initial weights. Set train.init_checkpoint=PATH (e.g. OUTPUT_DIR/model_final.pth)."
            )
        self._loading = path
        try:
            with _url_safe_local_path(path) as safe:
                return super().load(safe, checkpointables=checkpointables)
        finally:
            self._loading = None

    def _needs_complete(self) -> bool:
        return self.require_complete or self._purpose == "resuming"

    def _torch_load(self, f: str) -> Any:
        return torch_load_weights_only(f, self.allow_unsafe)

    def _load_file(self, filename: str) -> Dict[str, Any]:
        if filename.endswith(".pkl"):
            # DetectionCheckpointer._load_file, with NumpyOnlyUnpickler instead of pickle.load
            data = load_pickle_checkpoint(filename, self.allow_unsafe)
            if not isinstance(data, dict):
                raise CheckpointError(f"{filename}: a .pkl checkpoint must hold a dict, not a {type(data).__name__}")
            if "model" in data and "__author__" in data:  # Detectron2 model-zoo format
                self.logger.info("Reading a file from '{}'".format(data["__author__"]))
                return data
            if "blobs" in data:  # Caffe2 / Detectron1 detection models
                data = data["blobs"]
            data = {k: v for k, v in data.items() if not k.endswith("_momentum")}
            return {"model": data, "__author__": "Caffe2", "matching_heuristics": True}
        if filename.endswith(".pyth"):  # pycls
            data = torch_load_weights_only(filename, self.allow_unsafe)
            if "model_state" not in data:
                raise CheckpointError(f"{filename}: a pycls .pyth checkpoint must contain 'model_state'")
            state = {k: v for k, v in data["model_state"].items() if not k.endswith("num_batches_tracked")}
            return {"model": state, "__author__": "pycls", "matching_heuristics": True}
        loaded = super()._load_file(filename)  # -> self._torch_load
        if not isinstance(loaded.get("model"), dict):
            raise CheckpointError(
                f"{filename}: no state dict in this file (its 'model' is a "
                f"{type(loaded.get('model')).__name__}); expected a checkpoint of train_net.py or "
                "a plain {name: tensor} state dict."
            )
        return loaded

    def _convert_ndarray_to_tensor(self, state_dict: Dict[str, Any]) -> None:
        # fvcore calls this on the state dict it is about to load (last, after Detectron2's
        # name-matching heuristics): remember its keys, which are what the checkpoint provides.
        super()._convert_ndarray_to_tensor(state_dict)
        keys = list(state_dict.keys())
        if keys and all(k.startswith("module.") for k in keys):  # fvcore strips a DDP prefix
            keys = [k[len("module."):] for k in keys]
        self._checkpoint_keys = keys

    def _load_model(self, checkpoint: Any):
        shapes = {k: tuple(v.shape) for k, v in self.model.state_dict().items()}
        self._checkpoint_keys = []
        incompatible = super()._load_model(checkpoint)
        # Not missing for Detectron2 either: pixel_mean/std (set from the config) and parameters
        # that the checkpoint holds under another of their names. (Keys that a module's
        # _load_from_state_dict fills with defaults, e.g. BatchNorm statistics, are missing.)
        absent = [k for k in shapes if k not in self._checkpoint_keys]
        top_level_buffers = dict(self.model.named_buffers(recurse=False))
        tolerated = {k for k in ("pixel_mean", "pixel_std") if k in top_level_buffers}
        tolerated |= set(absent) - set(_filter_reused_missing_keys(self.model, absent))
        report = load_report(shapes, self._checkpoint_keys, incompatible.incorrect_shapes, not_needed=tolerated)
        self.last_report = report
        path, model = self._loading, type(self.model).__name__
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
        return incompatible

    def _log_incompatible_keys(self, incompatible) -> None:
        # One warning for the whole load instead of fvcore's one per kind of mismatch.
        report = self.last_report
        if report is not None and (not report.complete or report.unused):
            self.logger.warning(f"Checkpoint {self._loading}: {report.summary()}")
