"""What the benchmark sections run on: each config's model with the stock model's initial weights,
consecutive dataset images as training batches, and the two helpers the sections share (progress
on stderr, waiting for the device)."""
import os
import sys
from dataclasses import dataclass
from typing import List, Optional, Sequence

import torch

from ..analysis import load_config
from ..study.runner import config_name

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def sync(device: str) -> None:
    """Wait for the device's queued work (CUDA), so that a timer around a step times the step."""
    if device.startswith("cuda"):
        torch.cuda.synchronize()


@dataclass
class BenchModel:
    name: str
    cfg: object
    model: torch.nn.Module


def build_models(
    config_files: Sequence[str], overrides: Sequence[str] = (), device: str = "cpu", seed: int = 0
) -> List[BenchModel]:
    """Each config's model on ``device`` (config paths relative to the repository), all with the
    first (stock) model's initial weights.

    A method model must have every parameter and buffer of the stock model; the only keys it may
    have besides are the SWN's (``swn.checkpoint.is_swn_key``), which keep their own
    initialisation.
    """
    from detectron2.config import instantiate

    from swn.checkpoint import is_swn_key

    built, stock_state = [], None
    for path in config_files:
        cfg = load_config(path, overrides, root=REPO_ROOT)
        torch.manual_seed(seed)
        model = instantiate(cfg.model).to(device)
        if stock_state is None:
            stock_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        else:
            missing, unexpected = model.load_state_dict(stock_state, strict=False)
            extra = [k for k in missing if not is_swn_key(k)]
            if extra or unexpected:
                raise ValueError(
                    f"{path}: its model is not the stock model {config_files[0]} plus an SWN "
                    f"(keys only in the method: {extra[:5]}, only in the stock model: {list(unexpected)[:5]})"
                )
        name = config_name(path)
        while name in [b.name for b in built]:  # the same config twice: an A/A control
            name += " (again)"
        built.append(BenchModel(name, cfg, model))
    return built


def load_batches(
    dataset: str, batch_size: int, num_batches: Optional[int] = None, image_size: Optional[Sequence[int]] = None
) -> List[List[dict]]:
    """Consecutive images of a registered dataset as training inputs (CHW uint8 in the dataset's
    RGB, ``instances`` with ``gt_boxes`` / ``gt_classes``, ``height`` / ``width`` of the image as
    fed), ``batch_size`` per batch, in dataset order, through detkit's ``DatasetMapper`` with no
    augmentation but a resize to ``image_size`` (H, W) when given. An incomplete last batch is
    dropped."""
    import detectron2.data.transforms as T
    from detectron2.data import DatasetCatalog

    from ..data.mapper import DatasetMapper

    dicts = DatasetCatalog.get(dataset)
    count = len(dicts) // batch_size if num_batches is None else num_batches
    if count < 1 or count * batch_size > len(dicts):
        raise ValueError(f"dataset {dataset!r} has {len(dicts)} images: not enough for {count} batches of {batch_size}")
    resize = [] if image_size is None else [T.Resize((int(image_size[0]), int(image_size[1])))]
    mapper = DatasetMapper(is_train=True, augmentations=resize, image_format="RGB", use_instance_mask=False)
    inputs = [mapper(d) for d in dicts[: count * batch_size]]
    inputs = [{"image": x["image"], "height": x["image"].shape[1], "width": x["image"].shape[2],
               "instances": x["instances"]} for x in inputs]
    return [inputs[b * batch_size : (b + 1) * batch_size] for b in range(count)]
