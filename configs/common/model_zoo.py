"""Detectron2's own model-zoo LazyConfigs, taken from the installed Detectron2 so that the baselines
stay identical to upstream."""
from detectron2.model_zoo import get_config


def model_zoo_parts(name: str):
    """``(dataloader, model, optimizer, lr_multiplier, train)`` of a model-zoo LazyConfig, e.g.
    ``"COCO-Detection/retinanet_R_50_FPN_1x.py"``."""
    cfg = get_config(name)
    return cfg.dataloader, cfg.model, cfg.optimizer, cfg.lr_multiplier, cfg.train


def faster_rcnn_parts():
    """Model-zoo Faster R-CNN R50-FPN 1x: upstream ships it only as yaml, so this is the LazyConfig
    Mask R-CNN R50-FPN 1x with its mask branch removed."""
    dataloader, model, optimizer, lr_multiplier, train = model_zoo_parts(
        "COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_1x.py"
    )
    model.roi_heads.update(mask_in_features=None, mask_pooler=None, mask_head=None)
    dataloader.train.mapper.use_instance_mask = False
    return dataloader, model, optimizer, lr_multiplier, train


def swn_reference_box_head(model):
    """The SWN reference code's (mmdetection v0.6) Fast R-CNN box loss, for the SWN R-CNN configs and
    the baselines they are compared with: smooth-L1 with beta 1.0 (Detectron2's default is 0.0, L1)
    on deltas normalised by target stds 0.1/0.1/0.2/0.2, i.e. Detectron2's box weights 10/10/5/5
    (already upstream's)."""
    predictor = model.roi_heads.box_predictor
    predictor.smooth_l1_beta = 1.0
    assert tuple(predictor.box2box_transform.weights) == (10, 10, 5, 5), predictor.box2box_transform.weights


def voc_schedule(lr_multiplier, train, max_iter=18000, steps=(12000, 16000), warmup_iters=100):
    """Detectron2's Pascal VOC schedule (PascalVOC-Detection/faster_rcnn_R_50_FPN.yaml)."""
    train.max_iter = max_iter
    lr_multiplier.scheduler.milestones = [*steps, max_iter]
    lr_multiplier.warmup_length = warmup_iters / max_iter
    train.eval_period = max_iter
    train.checkpointer.period = 2000


X101_32X4D_WEIGHTS = "weights/X-101-32x4d-torchvision.pkl"


def resnext101_32x4d(model, train):
    """Swap a model-zoo R50-FPN backbone for ResNeXt-101-32x4d (SWN paper Table 1). Detectron2's zoo
    has no ImageNet X-101-32x4d: its weights come in torchvision layout (RGB input, torchvision
    mean/std, stride in the 3x3 conv) and are converted by tools/convert_torchvision_resnet.py to
    ``X101_32X4D_WEIGHTS``."""
    from detectron2.config import LazyCall as L

    from detkit.modeling import IMAGENET_RGB_MEAN, IMAGENET_RGB_STD, make_resnext_stages

    model.backbone.bottom_up.stages = L(make_resnext_stages)(
        depth=101, num_groups=32, width_per_group=4, stride_in_1x1=False, norm="FrozenBN"
    )
    model.input_format = "RGB"
    model.pixel_mean = list(IMAGENET_RGB_MEAN)
    model.pixel_std = list(IMAGENET_RGB_STD)
    train.init_checkpoint = X101_32X4D_WEIGHTS
