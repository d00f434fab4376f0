"""CleanAnchors RetinaNet ResNeXt-101-32x8d-FPN, reference 1x schedule (ImageNet X-101-32x8d from
Detectron2's zoo, with the settings of its faster_rcnn_X_101_32x8d_FPN_3x.yaml)."""
from detectron2.config import LazyCall as L

from detkit.modeling import make_resnext_stages

from .clean_anchors_retinanet_R_50_FPN_1x import dataloader, lr_multiplier, model, optimizer, train

model.backbone.bottom_up.stages = L(make_resnext_stages)(
    depth=101, num_groups=32, width_per_group=8, stride_in_1x1=False, norm="FrozenBN"
)
model.pixel_std = [57.375, 57.120, 58.395]
train.init_checkpoint = "detectron2://ImageNetPretrained/FAIR/X-101-32x8d.pkl"
train.output_dir = "./output/COCO-Detection/clean_anchors_retinanet_X_101_32x8d_FPN_1x"
