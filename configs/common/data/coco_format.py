"""Your own COCO-format data (registered with detkit.data.register_coco_dataset), sized for a CPU:
images resized to a short side of 416-544 px in training (one size drawn per image) and 480 px in
testing (long side at most 800), horizontal flips, Detectron2's COCO evaluator. The config that uses
this piece sets the dataset names (see configs/Examples/retinanet_mnv2_fpn.py)."""
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
from detkit.evaluation import build_coco_evaluator

dataloader = OmegaConf.create()

dataloader.train = L(build_detection_train_loader)(
    # get_detection_dataset_dicts plus checks: boxes clipped to the image, zero-area boxes dropped
    # (one warning per dataset), a clear error for a malformed annotation or class id
    dataset=L(validated_dataset_dicts)(names="???"),
    mapper=L(DatasetMapper)(
        is_train=True,
        augmentations=[
            L(T.ResizeShortestEdge)(short_edge_length=(416, 448, 480, 512, 544), max_size=800, sample_style="choice"),
            L(T.RandomFlip)(horizontal=True, vertical=False),
        ],
        image_format="RGB",
        use_instance_mask=False,
    ),
    total_batch_size=4,
    num_workers=2,
)

dataloader.test = L(build_detection_test_loader)(
    dataset=L(get_detection_dataset_dicts)(names="???", filter_empty=False),
    mapper=L(DatasetMapper)(
        is_train=False,
        augmentations=[L(T.ResizeShortestEdge)(short_edge_length=480, max_size=800)],
        image_format="${...train.mapper.image_format}",
    ),
    num_workers=2,
)

dataloader.evaluator = L(build_coco_evaluator)(
    dataset_name="${..test.dataset.names}",
    output_dir="${train.output_dir}/inference",
)

# test-time augmentation (test.aug.enabled=True) around the 480 px test size: 0.67x-1.33x, flip
test = OmegaConf.create(dict(aug=dict(min_sizes=[320, 400, 480, 560, 640], max_size=1066)))
