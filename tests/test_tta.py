"""Test-time augmentation (detkit.modeling.tta), the `test` config defaults, the inference timing
and train_net.py's TTA / Soft-NMS evaluation."""
import json
import os
import time

import pytest
import torch
from detectron2.config import LazyCall as L
from detectron2.config import LazyConfig, instantiate
from detectron2.evaluation import DatasetEvaluator
from detectron2.modeling.meta_arch import ProposalNetwork
from omegaconf import OmegaConf

from detkit.engine import TEST_DEFAULTS, add_test_defaults, apply_overrides_strict
from detkit.evaluation.timing import inference_times_on_dataset, timed_inference_on_dataset
from detkit.modeling.nms_inference import soft_nms_inference
from detkit.modeling.tta import RCNNWithTTA, RetinaNetWithTTA, build_tta_model

from conftest import REPO_ROOT
from model_utils import load_synthetic_cfg, synthetic_batch


def _spread_scores(model, layer):
    """Random-init detectors score every box alike; larger random classifier weights give distinct
    scores, as a trained model has."""
    torch.manual_seed(1)
    torch.nn.init.normal_(layer.weight, std=0.5)
    return model.eval()


@pytest.fixture(scope="module")
def models():
    torch.manual_seed(0)
    retina = instantiate(load_synthetic_cfg("retinanet_mnv2_fpn.py", "model.test_score_thresh=0.0").model)
    torch.manual_seed(0)
    rcnn = instantiate(load_synthetic_cfg("faster_rcnn_mnv2_fpn.py").model)
    return {
        "retinanet": _spread_scores(retina, retina.head.cls_score),
        "faster_rcnn": _spread_scores(rcnn, rcnn.roi_heads.box_predictor.cls_score),
    }


@pytest.fixture(scope="module")
def image():
    return [{k: v for k, v in synthetic_batch(1)[0].items() if k != "instances"}]


def _rows(instances):
    """(score, class, box) tuples, sorted: boxes with exactly equal scores may come in either order."""
    boxes = map(tuple, instances.pred_boxes.tensor.tolist())
    return sorted(zip(instances.scores.tolist(), instances.pred_classes.tolist(), boxes), reverse=True)


def _assert_same(a, b):
    assert len(a) > 0 and torch.equal(a.scores, b.scores) and _rows(a) == _rows(b)
    if a.has("pred_masks"):
        assert torch.equal(a.pred_masks, b.pred_masks)


TTA = {"retinanet": RetinaNetWithTTA, "faster_rcnn": RCNNWithTTA}


@pytest.mark.parametrize("name", ["retinanet", "faster_rcnn"])
def test_one_unflipped_copy_at_the_images_size_is_the_plain_model(models, image, name):
    model = models[name]
    with torch.no_grad():
        plain = model(image)[0]["instances"]
        tta = TTA[name](model, min_sizes=[128], max_size=400, flip=False)(image)[0]["instances"]
        _assert_same(tta, plain)
        # with Soft-NMS: one Soft-NMS over the copy's NMS candidates = the plain model's Soft-NMS option
        soft_options = dict(method="linear", iou_threshold=0.3, score_threshold=0.001)
        with soft_nms_inference(model, **soft_options):
            plain_soft = model(image)[0]["instances"]
        tta_soft = TTA[name](model, [128], 400, flip=False, soft_nms=soft_options)(image)[0]["instances"]
    _assert_same(tta_soft, plain_soft)
    assert not torch.equal(plain_soft.scores, plain.scores)


@pytest.mark.parametrize(
    "name, min_sizes, soft_nms", [("retinanet", [96, 128], None), ("faster_rcnn", [128], {"method": "gaussian"})]
)
def test_flip_and_sizes_give_boxes_inside_the_image(models, image, name, min_sizes, soft_nms):
    model = models[name]
    with torch.no_grad():
        plain = model(image)[0]["instances"]
        out = TTA[name](model, min_sizes=min_sizes, max_size=400, flip=True, soft_nms=soft_nms)(image)
    inst = out[0]["instances"]
    assert inst.image_size == (128, 128)
    assert 0 < len(inst) <= 100
    b = inst.pred_boxes.tensor
    assert (b >= 0).all() and (b[:, 2] <= 128).all() and (b[:, 3] <= 128).all()
    assert (b[:, 2] > b[:, 0]).all() and (b[:, 3] > b[:, 1]).all()
    assert torch.all(inst.scores[:-1] >= inst.scores[1:])
    assert set(inst.pred_classes.tolist()) <= {0, 1, 2}
    assert _rows(inst) != _rows(plain)  # the other copies did contribute


def test_mask_rcnn_tta_predicts_masks_for_the_merged_boxes(image):
    cfg = LazyConfig.load(os.path.join(REPO_ROOT, "configs/common/models/mask_rcnn_mnv2_fpn.py"))
    cfg.model.backbone.pretrained = False
    cfg.model.roi_heads.num_classes = 3
    cfg.model.roi_heads.box_predictor.test_topk_per_image = 10
    torch.manual_seed(0)
    model = instantiate(cfg.model)
    model = _spread_scores(model, model.roi_heads.box_predictor.cls_score)
    tta = build_tta_model(model, OmegaConf.create(dict(aug=dict(min_sizes=[128], max_size=400, flip=False))))
    assert isinstance(tta, RCNNWithTTA) and tta.cfg.MODEL.MASK_ON
    with torch.no_grad():
        plain, merged = model(image)[0]["instances"], tta(image)[0]["instances"]
    assert merged.pred_masks.shape == (10, 128, 128)
    _assert_same(merged, plain)


def test_build_tta_model_picks_the_wrapper_and_refuses_other_models(models):
    test_cfg = OmegaConf.create(TEST_DEFAULTS)
    test_cfg.soft_nms.enabled = True
    test_cfg.soft_nms.method = "gaussian"
    retina = build_tta_model(torch.nn.DataParallel(models["retinanet"]), test_cfg)  # unwrapped
    assert type(retina) is RetinaNetWithTTA and retina.model is models["retinanet"]
    assert retina.tta_mapper.min_sizes == [400, 500, 600, 700, 900, 1000, 1100, 1200]
    assert retina.tta_mapper.max_size == 4000 and retina.tta_mapper.flip
    assert retina.soft_nms == dict(method="gaussian", sigma=0.5, iou_threshold=0.3, score_threshold=0.001)
    test_cfg.soft_nms.enabled = False
    rcnn = build_tta_model(models["faster_rcnn"], test_cfg)
    assert type(rcnn) is RCNNWithTTA and rcnn.soft_nms is None and not rcnn.cfg.MODEL.MASK_ON

    m = models["faster_rcnn"]
    rpn = ProposalNetwork(
        backbone=m.backbone, proposal_generator=m.proposal_generator, pixel_mean=[0, 0, 0], pixel_std=[1, 1, 1]
    )
    with pytest.raises(TypeError, match="ProposalNetwork is neither"):
        build_tta_model(rpn, test_cfg)
    m = models["retinanet"]
    with pytest.raises(ValueError, match=r"test.aug.max_size=100 is smaller"):
        RetinaNetWithTTA(m, min_sizes=[128], max_size=100)
    with pytest.raises(ValueError, match="test.aug.min_sizes"):
        RetinaNetWithTTA(m, min_sizes=[], max_size=100)
    with pytest.raises(TypeError, match="needs a GeneralizedRCNN"):
        RCNNWithTTA(m, min_sizes=[128], max_size=400)


def test_test_defaults_complete_a_config_and_accept_overrides():
    cfg = OmegaConf.create({"train": {"max_iter": 1}})  # e.g. the COCO configs: no `test` node
    add_test_defaults(cfg)
    assert OmegaConf.to_container(cfg.test) == TEST_DEFAULTS
    assert cfg.test.aug.min_sizes == [400, 500, 600, 700, 900, 1000, 1100, 1200] and not cfg.test.soft_nms.enabled

    # a config's own values win; the rest comes from the defaults
    cfg = add_test_defaults(LazyConfig.load(os.path.join(REPO_ROOT, "configs/Synthetic/retinanet_mnv2_fpn.py")))
    assert list(cfg.test.aug.min_sizes) == [96, 128, 160] and cfg.test.aug.max_size == 400
    assert cfg.test.aug.flip is True and cfg.test.aug.enabled is False and cfg.test.soft_nms.method == "linear"
    cfg = apply_overrides_strict(
        cfg, ["test.aug.enabled=True", "test.aug.min_sizes=[96,128]", "test.soft_nms.enabled=True"]
    )
    assert cfg.test.aug.enabled and list(cfg.test.aug.min_sizes) == [96, 128] and cfg.test.soft_nms.enabled
    tree = add_test_defaults(LazyConfig.load(os.path.join(REPO_ROOT, "configs/TreeCrowns/faster_rcnn_mnv2_fpn.py")))
    assert list(tree.test.aug.min_sizes) == [300, 400, 500, 600] and tree.test.aug.max_size == 1000

    with pytest.raises(KeyError, match=r"test.aug.flipp.*Did you mean test.aug.flip"):
        bad = LazyConfig.load(os.path.join(REPO_ROOT, "configs/Synthetic/retinanet_mnv2_fpn.py"))
        bad.test.aug.flipp = False
        add_test_defaults(bad)
    with pytest.raises(KeyError, match="Did you mean test.soft_nms.sigma"):
        apply_overrides_strict(cfg, ["test.soft_nms.sigam=0.1"])


class _Count(DatasetEvaluator):
    def reset(self):
        self.n = 0

    def process(self, inputs, outputs):
        self.n += len(outputs)

    def evaluate(self):
        return {"count": {"n": self.n}}


class _SlowModel(torch.nn.Module):
    def forward(self, inputs):
        time.sleep(0.02 * len(inputs))
        return [{} for _ in inputs]


class _SlowEvaluation(_Count):
    def evaluate(self):  # as COCOeval: slow, after the loop
        time.sleep(2.0)
        return super().evaluate()


def test_timed_inference_counts_images_and_leaves_out_the_evaluation():
    loader = [[{"i": 0}, {"i": 1}, {"i": 2}, {"i": 3}], [{"i": 4}]]
    results, seconds = timed_inference_on_dataset(_SlowModel(), loader, _SlowEvaluation())
    assert results == {"count": {"n": 5}}
    # 0.02 s of model time per image; counting the 2 s evaluation would give >= 0.42 s per image,
    # dividing by the 2 batches instead of the 5 images >= 0.05
    assert 0.02 <= seconds < 0.035


class _SlowLoader:
    """7 batches of one image; each takes 0.05 s to load, the first 0.5 s (worker start-up)."""

    def __len__(self):
        return 7

    def __iter__(self):
        for i in range(7):
            time.sleep(0.5 if i == 0 else 0.05)
            yield [{"i": i}]


def test_pure_compute_time_leaves_out_data_loading_and_warmup():
    results, times = inference_times_on_dataset(_SlowModel(), _SlowLoader(), _Count())
    assert results == {"count": {"n": 7}}
    assert times["wall"] >= (0.5 + 6 * 0.05 + 7 * 0.02) / 7  # the loop: loading included
    assert 0.02 <= times["compute"] < 0.035  # Detectron2's pure compute: model calls of batches 6-7 only


def _one_image_loader():
    return [[{k: v for k, v in synthetic_batch(1)[0].items() if k != "instances"}]]


def test_do_test_adds_tta_results_after_the_last_iteration_only(models, tmp_path):
    import train_net

    cfg = OmegaConf.create({"train": {"output_dir": str(tmp_path), "max_iter": 10}}, flags={"allow_objects": True})
    cfg.dataloader = {"test": L(_one_image_loader)(), "evaluator": L(_Count)()}
    add_test_defaults(cfg)
    cfg.test.aug.update(enabled=True, min_sizes=[128], flip=False)
    model = models["retinanet"]
    assert train_net.do_test(cfg, model, iterations_trained=5) == {"count": {"n": 1}}  # periodic: plain only
    saved = json.load(open(tmp_path / "eval_results.json"))
    assert saved["iterations_trained"] == 5 and set(saved) == {
        "iterations_trained", "results", "inference_s_per_image", "inference_compute_s_per_image"}
    assert 0 < saved["inference_compute_s_per_image"] <= saved["inference_s_per_image"]
    results = train_net.do_test(cfg, model, iterations_trained=10)  # the last evaluation
    assert results == {"count": {"n": 1}, "count_TTA": {"n": 1}}
    saved = json.load(open(tmp_path / "eval_results.json"))
    assert saved["results"] == results and saved["inference_s_per_image_tta"] > 0
    assert saved["inference_compute_s_per_image_tta"] > 0
    cfg.test.soft_nms.enabled = True
    assert set(train_net.do_test(cfg, model)) == {"count", "count_TTA"}  # --eval-only


FAST = [
    "dataloader.train.total_batch_size=2",
    "dataloader.train.num_workers=0",
    "dataloader.test.num_workers=0",
    "train.log_period=1",
]


@pytest.mark.slow
def test_train_net_reports_plain_and_tta_results(tmp_path):
    """`train_net.py --eval-only ... test.aug.enabled=True` (here with Soft-NMS too) adds "bbox_TTA"
    to eval_results.json, with the inference times per image (the TTA after training is the same
    do_test, see the test above)."""
    from detectron2.engine import default_argument_parser

    import train_net

    def run(out, *opts, flags=()):
        args = default_argument_parser().parse_args(
            ["--config-file", os.path.join(REPO_ROOT, "configs/Synthetic/faster_rcnn_mnv2_fpn.py"), *flags,
             f"train.output_dir={out}", *FAST, "model.backbone.pretrained=False", *opts]
        )
        train_net.main(args)
        with open(os.path.join(out, "eval_results.json")) as f:
            return json.load(f)

    # a checkpoint of a random-init Faster R-CNN (training it first would only cost time here)
    checkpoint = str(tmp_path / "model.pth")
    torch.manual_seed(0)
    torch.save({"model": instantiate(load_synthetic_cfg("faster_rcnn_mnv2_fpn.py").model).state_dict()}, checkpoint)
    eval_out = str(tmp_path / "eval")
    saved = run(
        eval_out, f"train.init_checkpoint={checkpoint}", "test.aug.enabled=True",
        "test.aug.min_sizes=[96,128]", "test.aug.flip=False", "test.soft_nms.enabled=True", flags=["--eval-only"]
    )
    assert saved["iterations_trained"] is None
    assert set(saved["results"]) == {"bbox", "bbox_TTA"} and "AP50" in saved["results"]["bbox_TTA"]
    assert saved["inference_s_per_image"] > 0 and saved["inference_s_per_image_tta"] > 0
    assert os.path.isfile(os.path.join(eval_out, "inference", "coco_instances_results.json"))
    assert os.path.isfile(os.path.join(eval_out, "inference_TTA", "coco_instances_results.json"))
