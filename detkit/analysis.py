"""What the analysis tools (``tools/visualize_anchors.py``, ``tools/plot_swn_weights.py``) need before
they can look inside a trained detector: its config's model with a checkpoint's weights, and dataset
images with their ground truth as model inputs.

The inputs are what the training loop would feed the model, minus the random training
augmentations: each image goes through the config's *test* augmentations (none for the CPU
configs) and keeps its annotations, so that a model's training-time statistics (labels, losses,
cleanliness, SWN inputs) can be recomputed on it.
"""
import os
from typing import Dict, List, Optional, Sequence

import torch
from detectron2.config import instantiate
from detectron2.data import DatasetCatalog

from .data.mapper import DatasetMapper
from .engine import load_checked_config, select_device
from .engine.checkpoint import SafeCheckpointer

__all__ = ["load_config", "load_model", "annotated_inputs", "batches", "dense_head_outputs"]


def load_config(config_file: str, opts: Sequence[str] = (), root: Optional[str] = None):
    """A LazyConfig file with ``key=value`` overrides, checked as in ``train_net.py --eval-only``
    (:func:`detkit.engine.load_checked_config`, without the dataset check: the tools take
    ``--dataset``); a relative ``config_file`` is relative to ``root`` when given
    (``tools/benchmark.py``: the repository), else to the working directory.

    Raises:
        FileNotFoundError: no such file under ``root``.
        ConfigError (a ``ValueError``): one line naming the file or key.
    """
    if root is not None:
        path = config_file if os.path.isabs(config_file) else os.path.join(root, config_file)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"config file {config_file}: no such file (paths are relative to {root})")
        config_file = path
    return load_checked_config(config_file, list(opts), train=False, check_data=False)


def load_model(cfg, checkpoint: str, device: str = None) -> torch.nn.Module:
    """``cfg.model`` instantiated, with the weights of ``checkpoint``, in eval mode: the one way the
    tools load a trained model (through :class:`~detkit.engine.checkpoint.SafeCheckpointer`, as
    ``train_net.py --eval-only`` does: weights-only unpickling, every weight of the model required).

    Args:
        cfg: a LazyConfig (see :func:`load_config`).
        checkpoint: a ``.pth`` written by ``train_net.py`` (or ``torch.save({"model": state_dict})``)
            or any other file the checkpointer reads. Parameters the model does not have (e.g. an
            SWN in a stock RetinaNet: a method checkpoint runs in its stock model) are ignored.
        device: default ``cfg.train.device`` (CPU when no GPU is visible), else CPU.

    Raises:
        FileNotFoundError: no such checkpoint.
        CheckpointMismatchError (a ``ValueError``): the checkpoint lacks weights of the model (wrong
            ``--config-file`` for it): the outputs would come from randomly initialised weights.
    """
    if not os.path.isfile(checkpoint):
        raise FileNotFoundError(f"--checkpoint {checkpoint}: no such file")
    if device is None:
        device = select_device(str(cfg.train.get("device", "cpu"))) if "train" in cfg else "cpu"
    model = instantiate(cfg.model).to(device)
    SafeCheckpointer(model, require_complete=True).load(checkpoint, checkpointables=[])
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


def dense_head_outputs(model, batched_inputs: List[Dict]):
    """What a Detectron2 ``DenseDetector`` (RetinaNet) hands its ``forward_training`` on a batch with
    ground truth, for recomputing its training quantities: ``(anchors, pred_logits, pred_deltas,
    gt_instances)``: list[Boxes] per level, lists of (N, Hi*Wi*A, K) and (N, Hi*Wi*A, 4) per level,
    list[Instances] on the model's device."""
    if any("instances" not in x for x in batched_inputs):
        raise ValueError("every input needs its ground truth under 'instances'")
    images = model.preprocess_image(batched_inputs)
    features = model.backbone(images.tensor)
    features = [features[f] for f in model.head_in_features]
    pred_logits, pred_deltas = model._transpose_dense_predictions(model.head(features), [model.num_classes, 4])
    gt_instances = [x["instances"].to(model.device) for x in batched_inputs]
    return model.anchor_generator(features), pred_logits, pred_deltas, gt_instances
