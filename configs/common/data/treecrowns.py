"""NEON tree-crown tiles (400x400; train: 42 tiles / 574 crowns, val: 12 tiles / 279 crowns)."""
import detectron2.data.transforms as T
from detectron2.config import LazyCall as L
from detectron2.data import (
    build_detection_test_loader,
    build_detection_train_loader,
    get_detection_dataset_dicts,
)
from omegaconf import OmegaConf

from detkit.data.mapper import DatasetMapper
from detkit.data.validation import validated_dataset_dicts
from detkit.evaluation import build_iou_metrics_evaluator

dataloader = OmegaConf.create()

dataloader.train = L(build_detection_train_loader)(
    # get_detection_dataset_dicts plus checks: boxes clipped to the image, zero-area boxes dropped
    # (one warning per dataset), a clear error for a malformed annotation or class id
    dataset=L(validated_dataset_dicts)(names="treecrowns_train"),
    mapper=L(DatasetMapper)(
        is_train=True,
        # Nadir imagery: any flip is a valid view of the same forest.
        augmentations=[
            L(T.RandomFlip)(horizontal=True, vertical=False),
            L(T.RandomFlip)(horizontal=False, vertical=True),
        ],
        image_format="RGB",
        use_instance_mask=False,
        # no resize here (the tiles are 400x400): refuse an image a CPU step could not hold, naming it
        max_image_size=2048,
    ),
    total_batch_size=4,
    num_workers=2,
)

dataloader.test = L(build_detection_test_loader)(
    dataset=L(get_detection_dataset_dicts)(names="treecrowns_val", filter_empty=False),
    mapper=L(DatasetMapper)(
        is_train=False, augmentations=[], image_format="${...train.mapper.image_format}"
    ),
    num_workers=2,
)

# COCO box AP/AP50/AP75 plus the NEON tree-crown benchmark's IoU 0.4: AP40, and precision P40 /
# recall R40 of the detections scoring >= score_thresh (DeepForest's default 0.1), one-to-one
# matching (detkit/evaluation/iou_metrics.py)
dataloader.evaluator = L(build_iou_metrics_evaluator)(
    dataset_name="${..test.dataset.names}",
    output_dir="${train.output_dir}/inference",
    max_dets_per_image=100,
    iou=0.4,
    score_thresh=0.1,
)

# Test-time augmentation around the tiles' own 400 px (train_net.py takes the rest of `test`,
# e.g. flip=True and Soft-NMS off, from detkit.engine.TEST_DEFAULTS). The papers' 400-1200 px
# protocol is 0.5x-1.5x of their 800 px training scale; the crowns are small (median side ~35 px),
# so the tiles are tested at 0.75x-1.5x, both flips of nadir imagery being valid views.
test = OmegaConf.create(dict(aug=dict(min_sizes=[300, 400, 500, 600], max_size=1000)))
