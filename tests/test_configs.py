import glob
import os

import pytest
from detectron2.config import LazyConfig, instantiate
from detectron2.model_zoo import get_config
from omegaconf import OmegaConf

from clean_anchors import CleanAnchorsRetinaNet
from detkit.engine import apply_overrides_strict, warmup_multistep
from detkit.modeling import GlobalNormalizerRetinaNet
from swn import SWNRetinaNet

from conftest import REPO_ROOT

CONFIGS = sorted(
    os.path.relpath(p, REPO_ROOT)
    for p in glob.glob(os.path.join(REPO_ROOT, "configs", "*", "*.py"))
    if "/common/" not in p
)


def test_all_configs_are_found():
    assert "configs/TreeCrowns/retinanet_mnv2_fpn.py" in CONFIGS
    assert "configs/COCO-Detection/faster_rcnn_R_50_FPN_1x.py" in CONFIGS


@pytest.mark.parametrize("path", CONFIGS)
def test_config_loads_and_builds_a_model(path):
    cfg = LazyConfig.load(os.path.join(REPO_ROOT, path))
    for key in ("model", "dataloader", "optimizer", "lr_multiplier", "train"):
        assert key in cfg, f"{path} has no {key}"
    model = instantiate(cfg.model)
    assert sum(p.numel() for p in model.parameters()) > 0
    # the config survives Detectron2's save/load round trip (what default_setup writes)
    out = os.path.join(os.environ["DETKIT_CACHE"], "cfg-" + os.path.basename(path) + ".yaml")
    LazyConfig.save(cfg, out)
    assert os.path.getsize(out) > 0
    cfg.optimizer.params.model = model  # as train_net.py does
    optimizer = instantiate(cfg.optimizer)
    in_optimizer = [id(p) for g in optimizer.param_groups for p in g["params"]]
    trainable = [id(p) for p in model.parameters() if p.requires_grad]
    assert sorted(in_optimizer) == sorted(trainable)  # every trainable parameter exactly once


def test_coco_baselines_match_upstream_model_zoo_but_for_the_documented_changes():
    ours = LazyConfig.load(os.path.join(REPO_ROOT, "configs/COCO-Detection/retinanet_R_50_FPN_1x.py"))
    upstream = get_config("COCO-Detection/retinanet_R_50_FPN_1x.py")
    upstream.model._target_ = GlobalNormalizerRetinaNet
    upstream.model.global_loss_normalizer = True
    upstream.model.smooth_l1_beta = 0.11
    assert OmegaConf.to_yaml(ours.model) == OmegaConf.to_yaml(upstream.model)
    assert OmegaConf.to_yaml(ours.dataloader) == OmegaConf.to_yaml(upstream.dataloader)
    faster = LazyConfig.load(os.path.join(REPO_ROOT, "configs/COCO-Detection/faster_rcnn_R_50_FPN_1x.py"))
    assert faster.model.roi_heads.mask_head is None
    assert faster.dataloader.train.mapper.use_instance_mask is False


def _load(path):
    return LazyConfig.load(os.path.join(REPO_ROOT, "configs", path))


# (config, its paired baseline): the reference codes' box-loss betas, in both
CLEAN_ANCHORS_PAIRS = [
    ("COCO-Detection/clean_anchors_retinanet_R_50_FPN_1x.py", "COCO-Detection/retinanet_R_50_FPN_1x_bs8.py"),
    ("COCO-Detection/clean_anchors_retinanet_R_101_FPN_1x.py", None),
    ("COCO-Detection/clean_anchors_retinanet_R_50_FPN_1.5x_ms.py", None),
    ("COCO-Detection/clean_anchors_retinanet_X_101_32x8d_FPN_1x.py", None),
]
SWN_RETINANET_PAIRS = [
    ("COCO-Detection/swn_retinanet_R_50_FPN_1x.py", "COCO-Detection/retinanet_R_50_FPN_1x.py"),
    ("COCO-Detection/swn_retinanet_X_101_32x4d_FPN_1x.py", "COCO-Detection/retinanet_X_101_32x4d_FPN_1x.py"),
    ("PascalVOC-Detection/swn_retinanet_R_50_FPN.py", "PascalVOC-Detection/retinanet_R_50_FPN.py"),
]
SWN_RCNN_PAIRS = [
    ("COCO-Detection/swn_faster_rcnn_R_50_FPN_1x.py", "COCO-Detection/faster_rcnn_R_50_FPN_1x.py"),
    ("COCO-Detection/swn_faster_rcnn_X_101_32x4d_FPN_1x.py", "COCO-Detection/faster_rcnn_X_101_32x4d_FPN_1x.py"),
    ("COCO-InstanceSegmentation/swn_mask_rcnn_R_50_FPN_1x.py", "COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_1x.py"),
    ("COCO-InstanceSegmentation/swn_mask_rcnn_X_101_32x4d_FPN_1x.py",
     "COCO-InstanceSegmentation/mask_rcnn_X_101_32x4d_FPN_1x.py"),
    ("PascalVOC-Detection/swn_faster_rcnn_R_50_FPN.py", "PascalVOC-Detection/faster_rcnn_R_50_FPN.py"),
]


@pytest.mark.parametrize("pair", CLEAN_ANCHORS_PAIRS + SWN_RETINANET_PAIRS + SWN_RCNN_PAIRS, ids=lambda p: p[0])
def test_reference_box_loss_betas_in_method_configs_and_their_baselines(pair):
    """NoisyAnchor: smooth-L1 beta 0.1 (its Base-RetinaNet); SWN (mmdetection v0.6): 0.11 for
    RetinaNet, 1.0 for the Fast R-CNN box head with box weights 10/10/5/5 (target stds .1/.1/.2/.2)."""
    method, baseline = pair
    for path in filter(None, (method, baseline)):
        model = _load(path).model
        if pair in SWN_RCNN_PAIRS:
            predictor = model.roi_heads.box_predictor
            assert predictor.smooth_l1_beta == 1.0, path
            assert tuple(predictor.box2box_transform.weights) == (10, 10, 5, 5), path
        else:
            assert model.smooth_l1_beta == (0.1 if pair in CLEAN_ANCHORS_PAIRS else 0.11), path
            # positives counted over all processes; the method's reference normaliser for CleanAnchors
            assert model.global_loss_normalizer is True, path
            assert model._target_ in (GlobalNormalizerRetinaNet, CleanAnchorsRetinaNet, SWNRetinaNet), path
            if model._target_ is CleanAnchorsRetinaNet:
                assert model.normalizer == "ema_raw" and instantiate(model.cleanliness).matching == "all_gts"


@pytest.mark.parametrize("config", ["retinanet_mnv2_fpn.py", "clean_anchors_retinanet_mnv2_fpn.py", "swn_retinanet_mnv2_fpn.py"])
def test_tree_crown_retinanets_count_positives_over_all_processes(config):
    model = instantiate(_load(f"TreeCrowns/{config}").model)
    assert model.global_loss_normalizer is True


def test_strict_overrides_accept_existing_keys_and_explain_typos():
    cfg = LazyConfig.load(os.path.join(REPO_ROOT, "configs/TreeCrowns/retinanet_mnv2_fpn.py"))
    cfg = apply_overrides_strict(
        cfg, ["train.max_iter=7", "model.num_classes=2", "+train.note=hi", "model.backbone.pretrained=False"]
    )
    assert cfg.model.backbone.pretrained is False  # an argument of the LazyCall target
    assert cfg.train.max_iter == 7 and cfg.model.num_classes == 2 and cfg.train.note == "hi"
    with pytest.raises(KeyError, match=r"train\.max_iters.*Did you mean train\.max_iter"):
        apply_overrides_strict(cfg, ["train.max_iters=10"])
    with pytest.raises(ValueError, match="key=value"):
        apply_overrides_strict(cfg, ["train.max_iter"])


def test_schedule_follows_max_iter_override():
    cfg = LazyConfig.load(os.path.join(REPO_ROOT, "configs/TreeCrowns/retinanet_mnv2_fpn.py"))
    cfg = apply_overrides_strict(cfg, ["train.max_iter=1000"])
    sched = instantiate(cfg.lr_multiplier)
    # 100 warmup iterations (linear from 0.001), x0.1 at 80 % of max_iter
    assert sched(0.0) == pytest.approx(0.001)
    assert sched(50 / 1000) == pytest.approx(0.001 + 0.5 * 0.999)
    assert sched(0.5) == pytest.approx(1.0)
    assert sched(0.85) == pytest.approx(0.1)


def test_warmup_multistep_values():
    s = warmup_multistep(max_iter=100, steps=(0.5, 0.75), warmup_iters=10, warmup_factor=0.1)
    assert [pytest.approx(s(i / 100)) for i in (0, 5, 10, 49, 50, 75, 99)] == [
        0.1, 0.55, 1.0, 1.0, 0.1, 0.01, 0.01
    ]


def test_evaluator_interpolates_output_dir():
    cfg = LazyConfig.load(os.path.join(REPO_ROOT, "configs/TreeCrowns/retinanet_mnv2_fpn.py"))
    cfg = apply_overrides_strict(cfg, ["train.output_dir=/tmp/somewhere"])
    assert cfg.dataloader.evaluator.output_dir == "/tmp/somewhere/inference"
    evaluator = instantiate(cfg.dataloader.evaluator)
    assert evaluator._output_dir == "/tmp/somewhere/inference"


@pytest.mark.parametrize("max_iter, expected", [(2, [0.001, 1.0]), (1, [1.0])])
def test_warmup_multistep_tiny_runs(max_iter, expected):
    s = warmup_multistep(max_iter=max_iter, steps=(0.8,), warmup_iters=1, warmup_factor=0.001)
    assert [pytest.approx(s(i / max_iter)) for i in range(max_iter)] == expected
    assert s(1.0) == pytest.approx(1.0)  # Detectron2 evaluates the schedule once more after the run


def test_resnext_stages_match_detectron2_yacs_builder():
    from detectron2.config import get_cfg
    from detectron2.layers import ShapeSpec
    from detectron2.modeling.backbone import ResNet, BasicStem
    from detectron2.modeling.backbone.resnet import build_resnet_backbone

    from detkit.modeling import make_resnext_stages

    ycfg = get_cfg()
    ycfg.MODEL.RESNETS.DEPTH = 50
    ycfg.MODEL.RESNETS.NUM_GROUPS = 32
    ycfg.MODEL.RESNETS.WIDTH_PER_GROUP = 4
    ycfg.MODEL.RESNETS.STRIDE_IN_1X1 = False
    ycfg.MODEL.RESNETS.OUT_FEATURES = ["res2", "res3", "res4", "res5"]
    reference = build_resnet_backbone(ycfg, ShapeSpec(channels=3))
    ours = ResNet(
        BasicStem(in_channels=3, out_channels=64, norm="FrozenBN"),
        make_resnext_stages(depth=50, num_groups=32, width_per_group=4),
        out_features=["res2", "res3", "res4", "res5"],
    )
    shapes = {k: tuple(v.shape) for k, v in ours.state_dict().items()}
    assert shapes == {k: tuple(v.shape) for k, v in reference.state_dict().items()}


def test_voc_configs_follow_detectron2_voc_settings():
    cfg = LazyConfig.load(os.path.join(REPO_ROOT, "configs/PascalVOC-Detection/swn_faster_rcnn_R_50_FPN.py"))
    assert tuple(cfg.dataloader.train.dataset.names) == ("voc_2007_trainval", "voc_2012_trainval")
    assert cfg.dataloader.evaluator.dataset_name == "voc_2007_test"
    assert cfg.model.roi_heads.num_classes == 20 and cfg.train.max_iter == 18000
    sched = instantiate(cfg.lr_multiplier)
    assert sched(50 / 18000) < 1.0 and sched(0.5) == 1.0
    assert sched(13000 / 18000) == pytest.approx(0.1) and sched(17000 / 18000) == pytest.approx(0.01)
    assert cfg.dataloader.train.mapper.augmentations[0].short_edge_length[0] == 480


def test_setup_cfg_lists_every_package():
    """A non-editable `pip install .` installs only the packages setup.cfg names: every folder with an
    __init__.py under detkit/ and the two projects must be there (detkit.study and
    detkit.benchmark were missing)."""
    import configparser

    setup = configparser.ConfigParser()
    setup.read(os.path.join(REPO_ROOT, "setup.cfg"))
    listed = set(setup["options"]["packages"].split())
    roots = {"detkit": "detkit", "clean_anchors": "projects/CleanAnchors/clean_anchors", "swn": "projects/SWN/swn"}
    on_disk = set()
    for name, folder in roots.items():
        top = os.path.join(REPO_ROOT, folder)
        for here, _, files in os.walk(top):
            if "__init__.py" in files:
                rel = os.path.relpath(here, top)
                on_disk.add(name if rel == "." else name + "." + rel.replace(os.sep, "."))
    assert on_disk - listed == set()
