"""Pascal VOC 07+12 trainval → VOC 2007 test (Detectron2's builtin `voc_*` datasets under
$DETECTRON2_DATASETS/VOC20{07,12}), with the settings of Detectron2's
PascalVOC-Detection/faster_rcnn_R_50_FPN.yaml: multi-scale 480-800 training, 800 testing, the
VOC-style evaluator (AP, AP50, AP75 over 11 IoUs)."""
import detectron2.data.transforms as T
from detectron2.config import LazyCall as L
from detectron2.evaluation import PascalVOCDetectionEvaluator
from detectron2.model_zoo import get_config

from detkit.data.validation import validated_dataset_dicts

dataloader = get_config("common/data/coco.py").dataloader  # Detectron2's loaders, VOC data below

dataloader.train.dataset._target_ = validated_dataset_dicts  # + box and class-id checks
dataloader.train.dataset.names = ("voc_2007_trainval", "voc_2012_trainval")
dataloader.train.mapper.use_instance_mask = False
dataloader.train.mapper.augmentations[0] = L(T.ResizeShortestEdge)(
    short_edge_length=(480, 512, 544, 576, 608, 640, 672, 704, 736, 768, 800),
    sample_style="choice",
    max_size=1333,
)
dataloader.test.dataset.names = "voc_2007_test"
dataloader.evaluator = L(PascalVOCDetectionEvaluator)(dataset_name="${..test.dataset.names}")
