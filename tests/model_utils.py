"""Helpers shared by the model tests of both projects."""
import os

import torch
from detectron2.config import LazyConfig
from detectron2.data import DatasetCatalog
from detectron2.data.detection_utils import annotations_to_instances, read_image
from detectron2.utils.events import EventStorage

from detkit.engine import apply_overrides_strict

from conftest import REPO_ROOT


def load_synthetic_cfg(name, *overrides):
    """A configs/Synthetic config without the ImageNet weights (faster, and irrelevant here)."""
    cfg = LazyConfig.load(os.path.join(REPO_ROOT, "configs", "Synthetic", name))
    return apply_overrides_strict(cfg, ["model.backbone.pretrained=False", *overrides])


def synthetic_batch(n=2, with_empty=False):
    """n synthetic images as model inputs (CHW uint8 RGB + Instances); the last one has no boxes
    when ``with_empty``."""
    batch = []
    for i, d in enumerate(DatasetCatalog.get("synthetic_train")[:n]):
        image = torch.as_tensor(read_image(d["file_name"], format="RGB").copy()).permute(2, 0, 1)
        anns = [] if (with_empty and i == n - 1) else d["annotations"]
        instances = annotations_to_instances(anns, image.shape[1:])
        batch.append({"image": image, "instances": instances, "height": image.shape[1], "width": image.shape[2]})
    return batch


def train_steps(model, steps=2, lr=0.01, make_batch=lambda: synthetic_batch(2)):
    """A few SGD steps, to move the weights away from their initialisation."""
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    with EventStorage(0):
        for _ in range(steps):
            loss = sum(model(make_batch()).values())
            opt.zero_grad()
            loss.backward()
            opt.step()


def assert_same_detections(model_a, model_b):
    """Both models, in eval mode, give bit-identical detections (and some) on synthetic images:
    boxes, scores, classes and, for Mask R-CNN, masks."""
    model_a.eval(), model_b.eval()
    inputs = [{k: v for k, v in d.items() if k != "instances"} for d in synthetic_batch(2)]
    with torch.no_grad():
        a, b = model_a(inputs), model_b(inputs)
    for x, y in zip(a, b):
        assert len(x["instances"]) > 0
        assert torch.equal(x["instances"].pred_boxes.tensor, y["instances"].pred_boxes.tensor)
        assert torch.equal(x["instances"].scores, y["instances"].scores)
        assert torch.equal(x["instances"].pred_classes, y["instances"].pred_classes)
        assert x["instances"].has("pred_masks") == y["instances"].has("pred_masks")
        if x["instances"].has("pred_masks"):  # Mask R-CNN: the masks too
            assert torch.equal(x["instances"].pred_masks, y["instances"].pred_masks)
