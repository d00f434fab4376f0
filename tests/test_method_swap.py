"""The method-swap helpers (clean_anchors.make_clean_anchors, swn.make_swn) on Detectron2 model-zoo
configs and on ours, the SWN optimizer check of train_net.py, and the analysis CLIs' default
dataset."""
import importlib.util
import os

import pytest
import torch
from detectron2.config import LazyCall as L
from detectron2.config import LazyConfig, instantiate
from detectron2.engine import default_argument_parser
from detectron2.model_zoo import get_config
from detectron2.modeling.meta_arch import GeneralizedRCNN, ProposalNetwork
from detectron2.modeling.roi_heads import StandardROIHeads
from detectron2.solver import get_default_optimizer_params
from omegaconf import OmegaConf

import train_net
from clean_anchors import CleanAnchorsRetinaNet, CleanAnchorsRPN, CleanlinessConfig, make_clean_anchors
from conftest import REPO_ROOT
from detkit.config_tools import config_test_dataset, target_of
from detkit.engine import apply_overrides_strict
from swn import (
    SampleWeightingNetwork,
    SWNFastRCNNOutputLayers,
    SWNRetinaNet,
    SWNROIHeads,
    SWNConfig,
    build_swn_sgd,
    check_swn_optimizer,
    make_swn,
    swn_optimizer_params,
)


pytestmark = pytest.mark.usefixtures("one_thread")


def _zoo_cfg(name):
    if name == "faster_rcnn":
        cfg = get_config("COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_1x.py")
        cfg.model.roi_heads.update(mask_in_features=None, mask_pooler=None, mask_head=None)
        return cfg
    return get_config(name)


RETINANET = "COCO-Detection/retinanet_R_50_FPN_1x.py"
MASK_RCNN = "COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_1x.py"

# the authors' defaults, as every method config in configs/ has them
CA_RETINANET = {
    "_target_": CleanAnchorsRetinaNet, "topn": 30, "focal_loss_alpha": 0.5,
    "cleanliness": {"_target_": CleanlinessConfig, "alpha": 0.75, "gamma": 1.0},
}
CA_RPN = {"_target_": CleanAnchorsRPN, "topn": 10,
          "cleanliness": {"_target_": CleanlinessConfig, "alpha": 0.75, "gamma": 1.0, "multiplicity": "anchors"}}
SWN_RETINANET = {
    "_target_": SWNRetinaNet,
    "swn": {"_target_": SampleWeightingNetwork, "num_tasks": 2, "embed_dim": 64, "shared_head": True,
            "clamp": 2.0, "init_std": 1e-4},
    "weighting": {"_target_": SWNConfig, "lam": 0.5, "form": "exp(-m)", "cls_average": "all"},
}


def _swn_predictor(num_tasks):
    return {"_target_": SWNFastRCNNOutputLayers,
            "swn": {"_target_": SampleWeightingNetwork, "num_tasks": num_tasks, "init_std": 1e-4},
            "weighting": {"_target_": SWNConfig, "lam": 0.5, "form": "exp(-m)", "cls_average": "pos_neg"}}


SWN_OPTIMIZER = {"_target_": build_swn_sgd, "swn_lr": 1e-3, "swn_weight_decay": 1e-4}


def _has(node, expected):
    """Every key of ``expected`` (recursively) is in ``node`` with that value."""
    for key, value in expected.items():
        if isinstance(value, dict):
            _has(node[key], value)
        elif key == "_target_":  # a class or its dotted name (LazyCall stores either)
            assert target_of(node, "node") is value, (node[key], value)
        else:
            assert node[key] == value, (key, node[key], value)


# ---------------------------------------------------------------- the swap on model-zoo configs


def test_clean_anchors_swap_of_model_zoo_retinanet_builds_the_method_with_overrides():
    cfg = make_clean_anchors(get_config(RETINANET))
    _has(cfg.model, CA_RETINANET)
    cfg = apply_overrides_strict(cfg, [
        "model.cleanliness.gamma=2.0",
        "model.cleanliness.soft_labels=False",  # a CleanlinessConfig field the node does not list
        "model.assigner=iou",                   # an argument of CleanAnchorsRetinaNet
    ])
    model = instantiate(cfg.model)
    assert type(model) is CleanAnchorsRetinaNet and model.topn == 30 and model.assigner == "iou"
    assert model.cleanliness == CleanlinessConfig(alpha=0.75, gamma=2.0, soft_labels=False)
    assert model.focal_loss_alpha == 0.5
    # the rest of the config is the model zoo's
    stock = get_config(RETINANET)
    assert OmegaConf.to_yaml(cfg.model.backbone) == OmegaConf.to_yaml(stock.model.backbone)
    assert OmegaConf.to_yaml(cfg.optimizer) == OmegaConf.to_yaml(stock.optimizer)


@pytest.mark.parametrize("name", ["faster_rcnn", MASK_RCNN])
def test_clean_anchors_swap_of_model_zoo_rcnn_replaces_the_rpn(name):
    cfg = make_clean_anchors(_zoo_cfg(name))
    _has(cfg.model.proposal_generator, CA_RPN)
    cfg = apply_overrides_strict(cfg, ["model.proposal_generator.cleanliness.gamma=2.0"])
    model = instantiate(cfg.model)
    assert type(model) is GeneralizedRCNN and type(model.proposal_generator) is CleanAnchorsRPN
    assert model.proposal_generator.cleanliness.gamma == 2.0 and model.proposal_generator.topn == 10
    assert model.roi_heads.mask_on == (name == MASK_RCNN)


def test_swn_swap_of_model_zoo_retinanet_builds_the_method_and_its_optimizer():
    cfg = make_swn(get_config(RETINANET))
    _has(cfg.model, SWN_RETINANET)
    _has(cfg.optimizer, {**SWN_OPTIMIZER, "params": {"_target_": swn_optimizer_params, "swn_module": "swn"}})
    cfg = apply_overrides_strict(cfg, ["model.weighting.lam=0.25", "model.swn.clamp=3.0", "optimizer.swn_lr=1e-4"])
    model = instantiate(cfg.model)
    assert type(model) is SWNRetinaNet and model.weighting.lam == 0.25 and model.swn.clamp == 3.0
    cfg.optimizer.params.model = model  # as train_net.py does
    optimizer = instantiate(cfg.optimizer)
    assert isinstance(optimizer["swn"], torch.optim.Adam) and optimizer["swn"].param_groups[0]["lr"] == 1e-4
    assert optimizer["detector"].param_groups[0]["lr"] == get_config(RETINANET).optimizer.lr
    check_swn_optimizer(model, optimizer)  # passes


@pytest.mark.parametrize("name", ["faster_rcnn", MASK_RCNN])
def test_swn_swap_of_model_zoo_rcnn_weights_the_box_head(name):
    has_mask = name == MASK_RCNN
    cfg = make_swn(_zoo_cfg(name))
    _has(cfg.model.roi_heads.box_predictor, _swn_predictor(3 if has_mask else 2))
    _has(cfg.optimizer.params, {"swn_module": "roi_heads.box_predictor.swn"})
    cfg = apply_overrides_strict(cfg, ["model.roi_heads.box_predictor.weighting.lam=0.25"])
    model = instantiate(cfg.model)
    assert type(model.roi_heads) is (SWNROIHeads if has_mask else StandardROIHeads)
    assert type(model.roi_heads.box_predictor) is SWNFastRCNNOutputLayers
    assert model.roi_heads.box_predictor.weighting.lam == 0.25
    cfg.optimizer.params.model = model
    check_swn_optimizer(model, instantiate(cfg.optimizer))


# ---------------------------------------------------------------- refusals


def test_swaps_refuse_other_architectures_and_models_already_swapped():
    fcos = get_config("COCO-Detection/fcos_R_50_FPN_1x.py")
    with pytest.raises(ValueError, match=r"model._target_ is .*FCOS: make_clean_anchors turns a RetinaNet"):
        make_clean_anchors(fcos)
    with pytest.raises(ValueError, match=r"model._target_ is .*FCOS: make_swn turns a RetinaNet"):
        make_swn(fcos)
    with pytest.raises(ValueError, match="already is CleanAnchors"):
        make_clean_anchors(make_clean_anchors(get_config(RETINANET)))
    with pytest.raises(ValueError, match="already is SWN"):
        make_swn(make_swn(get_config(RETINANET)))
    with pytest.raises(ValueError, match="already is SWN"):
        make_swn(make_swn(_zoo_cfg(MASK_RCNN)))
    swn_model_only = make_swn(get_config(RETINANET))
    swn_model_only.optimizer = get_config(RETINANET).optimizer
    with pytest.raises(ValueError, match="already is SWN"):
        make_swn(swn_model_only)
    with pytest.raises(ValueError, match="already is CleanAnchors"):
        make_clean_anchors(make_clean_anchors(_zoo_cfg(MASK_RCNN)))
    with pytest.raises(ValueError, match="cannot be combined with CleanAnchors"):
        make_swn(make_clean_anchors(get_config(RETINANET)))
    with pytest.raises(ValueError, match="cannot be combined with SWN"):
        make_clean_anchors(make_swn(get_config(RETINANET)))
    cascade = _zoo_cfg(MASK_RCNN)
    cascade.model = get_config("common/models/cascade_rcnn.py").model
    with pytest.raises(ValueError, match=r"roi_heads._target_ is .*CascadeROIHeads: .*Cascade R-CNN"):
        make_swn(cascade)
    c4 = get_config("COCO-InstanceSegmentation/mask_rcnn_R_50_C4_1x.py")
    with pytest.raises(ValueError, match=r"Res5ROIHeads"):
        make_swn(c4)
    rpn_only = _zoo_cfg(MASK_RCNN)
    rpn_only.model = L(ProposalNetwork)(
        backbone=rpn_only.model.backbone, proposal_generator=rpn_only.model.proposal_generator,
        pixel_mean=rpn_only.model.pixel_mean, pixel_std=rpn_only.model.pixel_std,
    )
    with pytest.raises(ValueError, match="RPN-only model has no box head"):
        make_swn(rpn_only)
    _has(make_clean_anchors(rpn_only).model.proposal_generator, CA_RPN)  # CleanAnchors RPN-only is fine


def test_swn_swap_refuses_what_it_cannot_weight_and_leaves_the_config_unchanged():
    cfg = get_config(RETINANET)
    cfg.optimizer = L(torch.optim.AdamW)(params=L(get_default_optimizer_params)(), lr=1e-4)
    before = OmegaConf.to_yaml(cfg)
    with pytest.raises(ValueError, match=r"optimizer._target_ is torch.optim.adamw.AdamW: SWN trains"):
        make_swn(cfg)
    assert OmegaConf.to_yaml(cfg) == before  # checked before anything changed
    cfg = get_config(RETINANET)
    cfg.model.box_reg_loss_type = "giou"
    with pytest.raises(ValueError, match="model.box_reg_loss_type='giou'"):
        make_swn(cfg)
    with pytest.raises(ValueError, match="has no 'model' node"):
        make_swn(get_config(RETINANET).model)
    with pytest.raises(ValueError, match="has no 'model' node"):
        make_clean_anchors(get_config(RETINANET).model)
    with pytest.raises(ValueError, match="not a LazyCall node"):
        make_clean_anchors({"model": {"num_classes": 3}})


# ---------------------------------------------------------------- our configs: the same as before


def _load(path):
    return LazyConfig.load(os.path.join(REPO_ROOT, "configs", path))


# (method config, its baseline, swap): model and optimizer of the method config are exactly the
# baseline's with the swap (other differences: output_dir, clipping, the COCO CleanAnchors schedule)
PAIRS = [
    (f"{d}/clean_anchors_{m}_mnv2_fpn.py", f"{d}/{m}_mnv2_fpn.py", make_clean_anchors)
    for d in ("TreeCrowns", "Synthetic") for m in ("retinanet", "faster_rcnn", "rpn")
] + [
    (f"{d}/swn_{m}_mnv2_fpn.py", f"{d}/{m}_mnv2_fpn.py", make_swn)
    for d in ("TreeCrowns", "Synthetic") for m in ("retinanet", "faster_rcnn")
] + [
    ("COCO-Detection/clean_anchors_retinanet_R_50_FPN_1x.py", "COCO-Detection/retinanet_R_50_FPN_1x_bs8.py",
     make_clean_anchors),
    ("COCO-Detection/clean_anchors_faster_rcnn_R_50_FPN_1x.py", "COCO-Detection/faster_rcnn_R_50_FPN_1x.py",
     make_clean_anchors),
    ("COCO-Detection/clean_anchors_rpn_R_50_FPN_1x.py", "COCO-Detection/rpn_R_50_FPN_1x.py", make_clean_anchors),
    ("COCO-Detection/swn_retinanet_R_50_FPN_1x.py", "COCO-Detection/retinanet_R_50_FPN_1x.py", make_swn),
    ("COCO-Detection/swn_faster_rcnn_R_50_FPN_1x.py", "COCO-Detection/faster_rcnn_R_50_FPN_1x.py", make_swn),
    ("COCO-InstanceSegmentation/swn_mask_rcnn_R_50_FPN_1x.py", "COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_1x.py",
     make_swn),
    ("PascalVOC-Detection/swn_retinanet_R_50_FPN.py", "PascalVOC-Detection/retinanet_R_50_FPN.py", make_swn),
    ("PascalVOC-Detection/swn_faster_rcnn_R_50_FPN.py", "PascalVOC-Detection/faster_rcnn_R_50_FPN.py", make_swn),
    ("Examples/clean_anchors_retinanet_mnv2_fpn.py", "Examples/retinanet_mnv2_fpn.py", make_clean_anchors),
    ("Examples/swn_retinanet_mnv2_fpn.py", "Examples/retinanet_mnv2_fpn.py", make_swn),
]


@pytest.mark.parametrize("method,baseline,swap", PAIRS, ids=[p[0] for p in PAIRS])
def test_method_configs_are_their_baseline_with_the_swap(method, baseline, swap):
    ours, swapped = _load(method), swap(_load(baseline))
    if method.startswith("COCO-Detection/clean_anchors_retinanet"):
        swapped.model.normalizer = "ema_raw"  # the reference code's normaliser, set by that config
    assert OmegaConf.to_yaml(ours.model) == OmegaConf.to_yaml(swapped.model)
    if method != "COCO-Detection/clean_anchors_faster_rcnn_R_50_FPN_1x.py":  # that one has the paper's lr
        assert OmegaConf.to_yaml(ours.optimizer) == OmegaConf.to_yaml(swapped.optimizer)
    # the authors' values, pinned
    if swap is make_clean_anchors and ("rpn" in method or "faster_rcnn" in method):
        _has(ours.model.proposal_generator, CA_RPN)
    elif swap is make_clean_anchors:
        _has(ours.model, CA_RETINANET)
    elif "retinanet" in method:
        _has(ours.model, SWN_RETINANET)
        _has(ours.optimizer, SWN_OPTIMIZER)
    else:
        _has(ours.model.roi_heads.box_predictor, _swn_predictor(3 if "mask" in method else 2))
        _has(ours.optimizer, SWN_OPTIMIZER)


# ---------------------------------------------------------------- the SWN optimizer check


def test_check_swn_optimizer_refuses_plain_sgd_for_an_swn_model():
    cfg = _load("Synthetic/swn_retinanet_mnv2_fpn.py")
    model = instantiate(apply_overrides_strict(cfg, ["model.backbone.pretrained=False"]).model)
    sgd = torch.optim.SGD(get_default_optimizer_params(model), lr=0.01)
    with pytest.raises(ValueError, match=r"parameter\(s\) of its sample weighting network model.swn .* "
                                         r"not in an Adam group of the optimizer \(SGD\).*swn.make_swn\(cfg\)"):
        check_swn_optimizer(model, sgd)
    with pytest.raises(ValueError, match="model.swn"):  # a DDP-like wrapper is looked through
        check_swn_optimizer(torch.nn.DataParallel(model), sgd)
    cfg.optimizer.params.model = model
    check_swn_optimizer(model, instantiate(cfg.optimizer))  # the config's SGD + Adam passes
    model.swn.requires_grad_(False)
    check_swn_optimizer(model, sgd)  # a frozen SWN is not trained by anything
    stock = instantiate(apply_overrides_strict(_load("Synthetic/retinanet_mnv2_fpn.py"),
                                               ["model.backbone.pretrained=False"]).model)
    check_swn_optimizer(stock, torch.optim.SGD(stock.parameters(), lr=0.01))  # no SWN: nothing to check


def test_train_net_refuses_an_swn_rcnn_with_plain_sgd_before_loading_data(tmp_path):
    cfg = _load("Synthetic/swn_faster_rcnn_mnv2_fpn.py")
    cfg.optimizer = get_config("common/optim.py").SGD  # the SWN's Adam forgotten
    cfg = apply_overrides_strict(cfg, ["model.backbone.pretrained=False", f"train.output_dir={tmp_path}"])
    cfg.dataloader.train.dataset.names = "no_such_dataset"  # never reached
    args = default_argument_parser().parse_args([])
    with pytest.raises(ValueError, match=r"model.roi_heads.box_predictor.swn .*make_swn"):
        train_net.do_train(args, cfg, "cpu")


# ---------------------------------------------------------------- analysis CLIs: the config's test set


def _tool(name):
    # by path: a site-packages "tools" package (from the Detectron2 wheel) shadows this repo's tools/
    spec = importlib.util.spec_from_file_location(f"_tool_{name}", os.path.join(REPO_ROOT, "tools", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class _Reached(Exception):
    pass


def test_analysis_clis_take_the_dataset_from_the_config(monkeypatch):
    def stop(*args, **kwargs):
        raise _Reached(args)

    cfg_file = os.path.join(REPO_ROOT, "configs/Synthetic/clean_anchors_retinanet_mnv2_fpn.py")
    viz = _tool("visualize_anchors")
    monkeypatch.setattr(viz, "load_model", lambda cfg, checkpoint: None)
    monkeypatch.setattr(viz, "annotated_inputs", stop)
    for extra, dataset in (([], "synthetic_val"), (["--dataset", "synthetic_train"], "synthetic_train")):
        with pytest.raises(_Reached) as reached:
            viz.visualize_anchors(viz.parse_args(["--config-file", cfg_file, "--checkpoint", "x.pth", *extra]))
        assert reached.value.args[0][2] == dataset  # annotated_inputs(cfg, model, dataset, indices)

    plot = _tool("plot_swn_weights")
    monkeypatch.setattr(plot, "load_model", lambda cfg, checkpoint: None)
    monkeypatch.setattr(plot, "SWNRetinaNet", object)
    monkeypatch.setattr(plot, "_samples", stop)
    swn_cfg = os.path.join(REPO_ROOT, "configs/Synthetic/swn_retinanet_mnv2_fpn.py")
    for extra, dataset in (([], "synthetic_val"), (["--dataset", "synthetic_train"], "synthetic_train")):
        with pytest.raises(_Reached) as reached:
            plot.plot_swn_weights(plot.parse_args(["--config-file", swn_cfg, "--checkpoint", "x.pth", *extra]))
        assert reached.value.args[0][2].dataset == dataset  # _samples(cfg, model, args, batch_size)


def test_config_test_dataset_reads_one_name():
    cfg = OmegaConf.create({"dataloader": {"test": {"dataset": {"names": ["a"]}}}})
    assert config_test_dataset(cfg) == "a"
    cfg.dataloader.test.dataset.names = ["a", "b"]
    with pytest.raises(ValueError, match=r"is \['a', 'b'\]: pick one with --dataset NAME"):
        config_test_dataset(cfg)
    with pytest.raises(ValueError, match="no dataloader.test.dataset.names"):
        config_test_dataset(OmegaConf.create({"dataloader": {}}))
