"""What the analysis tools (``tools/visualize_anchors.py``, ``tools/plot_swn_weights.py``) need before
they can look inside a trained detector: its config's model with a checkpoint's weights, and dataset
images with their ground truth as model inputs.

The inputs are what the training loop would feed the model, minus the random training
augmentations: each image goes through the config's *test* augmentations (none for the CPU
configs) and keeps its annotations, so that a model's training-time statistics (labels, losses,
cleanliness, SWN inputs) can be recomputed on it.
"""
import os
from typing import Dict, List, Sequence

import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import LazyConfig, instantiate
from detectron2.data import DatasetCatalog

from .data.mapper import DatasetMapper
from .engine import add_test_defaults, apply_overrides_strict, select_device

__all__ = ["load_config", "load_model", "annotated_inputs", "batches"]


class _RecordingCheckpointer(DetectionCheckpointer):
    """Detectron2's checkpointer, keeping the missing / unexpected keys it only logs."""

    def _load_model(self, checkpoint):
        self.incompatible = super()._load_model(checkpoint)
        return self.incompatible


def load_config(config_file: str, opts: Sequence[str] = ()):
    """A LazyConfig file with ``key=value`` overrides (strict, as in ``train_net.py``), completed
    with the ``test`` node first (:func:`~detkit.engine.add_test_defaults`), so that
    ``test.aug.*`` / ``test.soft_nms.*`` overrides work on every config, as in ``train_net.py``."""
    if not os.path.isfile(config_file):
        raise FileNotFoundError(f"--config-file {config_file}: no such file")
    return apply_overrides_strict(add_test_defaults(LazyConfig.load(config_file)), list(opts))


def load_model(cfg, checkpoint: str, device: str = None, allow_missing: Sequence[str] = ()) -> torch.nn.Module:
    """``cfg.model`` instantiated, with the weights of ``checkpoint``, in eval mode.

    Args:
        cfg: a LazyConfig (see :func:`load_config`).
        checkpoint: a ``.pth`` written by ``train_net.py`` (or ``torch.save({"model": state_dict})``)
            or anything else ``DetectionCheckpointer`` reads. Parameters the model does not have
            (e.g. an SWN in a stock RetinaNet) are ignored.
        device: default ``cfg.train.device`` (CPU when no GPU is visible), else CPU.
        allow_missing: prefixes of parameter names that may be missing from the checkpoint.

    Raises:
        FileNotFoundError: no such checkpoint.
        ValueError: the checkpoint lacks parameters of the model (wrong ``--config-file`` for it):
            the pictures would show randomly initialised weights.
    """
    if not os.path.isfile(checkpoint):
        raise FileNotFoundError(f"--checkpoint {checkpoint}: no such file")
    if device is None:
        device = select_device(str(cfg.train.get("device", "cpu"))) if "train" in cfg else "cpu"
    model = instantiate(cfg.model).to(device)
    checkpointer = _RecordingCheckpointer(model)
    checkpointer.load(checkpoint, checkpointables=[])
    missing = [k for k in checkpointer.incompatible.missing_keys if not k.startswith(tuple(allow_missing))]
    if missing:
        raise ValueError(
            f"--checkpoint {checkpoint} lacks {len(missing)} parameters of the config's model "
            f"({', '.join(missing[:3])}{', ...' if len(missing) > 3 else ''}): is it a checkpoint of "
            f"this --config-file's model ({type(model).__name__})?"
        )
    return model.eval()


def annotated_inputs(cfg, model, dataset_name: str, indices: Sequence[int]) -> List[Dict]:
    """Model inputs (``{"image": (C, H, W) uint8, "instances": Instances, "height", "width",
    "file_name"}``) of dataset images, with their ground truth, in the model's input format, after
    the config's test augmentations (``cfg.dataloader.test.mapper.augmentations``, if any).

    Raises:
        KeyError: unknown dataset (the message lists the registered ones).
        IndexError: an index outside the dataset.
    """
    if dataset_name not in DatasetCatalog.list():
        raise KeyError(
            f"--dataset {dataset_name!r} is not registered; known: {', '.join(sorted(DatasetCatalog.list()))}"
        )
    dicts = DatasetCatalog.get(dataset_name)
    bad = [i for i in indices if not 0 <= i < len(dicts)]
    if bad:
        raise IndexError(f"image index {bad[0]} is outside dataset {dataset_name!r} ({len(dicts)} images)")
    augmentations = []
    test_mapper = cfg.get("dataloader", {}).get("test", {}).get("mapper", None)
    if test_mapper is not None and "augmentations" in test_mapper:
        augmentations = instantiate(test_mapper.augmentations)
    mapper = DatasetMapper(
        is_train=True,  # keeps the annotations; the augmentations are the deterministic test ones
        augmentations=list(augmentations),
        image_format=getattr(model, "input_format", "BGR"),
        use_instance_mask=False,
    )
    return [mapper(dicts[i]) for i in indices]


def batches(items: Sequence, batch_size: int):
    """``items`` in consecutive chunks of ``batch_size`` (the last one shorter)."""
    if batch_size < 1:
        raise ValueError(f"batch size must be >= 1, got {batch_size}")
    return [items[i : i + batch_size] for i in range(0, len(items), batch_size)]
