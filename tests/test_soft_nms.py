"""Soft-NMS: the pure function (hand-computed cases, hard-NMS limits, classes) and the inference
option for RetinaNet, Faster R-CNN and Mask R-CNN (detkit.modeling.nms_inference)."""
import os

import pytest
import torch
from detectron2.config import LazyConfig, instantiate
from detectron2.structures import Boxes, Instances
from torchvision.ops import batched_nms, nms

from detkit.modeling.nms_inference import detections_before_nms, nms_owner, soft_nms_inference
from detkit.modeling.soft_nms import batched_soft_nms, soft_nms_decay, soft_nms_options

from conftest import REPO_ROOT
from model_utils import load_synthetic_cfg, synthetic_batch

A = [0.0, 0.0, 10.0, 10.0]
B = [5.0, 0.0, 15.0, 10.0]  # IoU(A, B) = 50 / 150 = 1/3
C = [20.0, 20.0, 30.0, 30.0]  # overlaps nothing
D = [10.0, 0.0, 20.0, 10.0]  # touches A (IoU 0), IoU(D, B) = 1/3


def run(boxes, scores, classes=None, **kw):
    boxes, scores = torch.tensor(boxes), torch.tensor(scores)
    classes = torch.zeros(len(scores), dtype=torch.int64) if classes is None else torch.tensor(classes)
    keep, new = batched_soft_nms(boxes, scores, classes, **kw)
    return keep.tolist(), new


def test_linear_decays_only_above_the_threshold():
    keep, new = run([A, B, C], [0.9, 0.8, 0.6], method="linear", iou_threshold=0.3)
    assert keep == [0, 2, 1]  # B: 0.8 * (1 - 1/3) = 0.5333 < C's 0.6
    torch.testing.assert_close(new, torch.tensor([0.9, 0.6, 0.8 * 2 / 3]))
    keep, new = run([A, B, C], [0.9, 0.8, 0.6], method="linear", iou_threshold=0.4)  # 1/3 <= 0.4: no decay
    assert keep == [0, 1, 2]
    torch.testing.assert_close(new, torch.tensor([0.9, 0.8, 0.6]))


def test_gaussian_decays_every_overlap():
    keep, new = run([A, B, C], [0.9, 0.8, 0.6], method="gaussian", sigma=0.5)
    b = 0.8 * torch.exp(torch.tensor(-(1 / 9) / 0.5)).item()  # 0.6406 > 0.6
    assert keep == [0, 1, 2]
    torch.testing.assert_close(new, torch.tensor([0.9, b, 0.6]))


def test_decay_is_sequential_and_thresholded():
    # A decays B to 0.5333; D (untouched by A) is picked next and decays B again
    keep, new = run([A, B, D], [0.9, 0.8, 0.85], method="linear", iou_threshold=0.3)
    assert keep == [0, 2, 1]
    torch.testing.assert_close(new, torch.tensor([0.9, 0.85, 0.8 * (2 / 3) ** 2]))
    assert run([A, B, D], [0.9, 0.8, 0.85], iou_threshold=0.3, score_threshold=0.4)[0] == [0, 2]
    assert run([A, B, D], [0.9, 0.8, 0.85], iou_threshold=0.3, max_keep=2)[0] == [0, 2]
    assert run([A, B, D], [0.9, 0.0005, 0.85], iou_threshold=0.3)[0] == [0, 2]  # below 0.001 from the start


def test_classes_do_not_decay_each_other():
    keep, new = run([A, B, D], [0.9, 0.8, 0.85], classes=[0, 1, 0], iou_threshold=0.3)
    assert keep == [0, 2, 1]
    torch.testing.assert_close(new, torch.tensor([0.9, 0.85, 0.8]))  # B alone in class 1


def test_batched_equals_each_class_on_its_own():
    g = torch.Generator().manual_seed(0)
    xy = torch.rand(60, 2, generator=g) * 50
    boxes = torch.cat([xy, xy + 5 + torch.rand(60, 2, generator=g) * 20], dim=1)
    scores, classes = torch.rand(60, generator=g), torch.randint(0, 3, (60,), generator=g)
    keep, new = batched_soft_nms(boxes, scores, classes, method="gaussian")
    assert torch.all(new[:-1] >= new[1:])  # sorted by new score
    got = dict(zip(keep.tolist(), new.tolist()))
    for c in range(3):
        idx = torch.nonzero(classes == c).squeeze(1)
        k, s = batched_soft_nms(boxes[idx], scores[idx], classes[idx], method="gaussian")
        assert {idx[i].item(): v for i, v in zip(k.tolist(), s.tolist())} == {
            i: got[i] for i in got if classes[i] == c
        }


def _random_integer_boxes(n, seed):
    g = torch.Generator().manual_seed(seed)
    xy = torch.randint(0, 80, (n, 2), generator=g).float()
    return torch.cat([xy, xy + torch.randint(4, 30, (n, 2), generator=g).float()], dim=1)


def test_gaussian_with_tiny_sigma_is_hard_nms_at_iou_zero():
    # integer boxes: an IoU is 0 or >= 1 / 3600, whose Gaussian factor exp(-iou^2 / 1e-12) is 0
    boxes = _random_integer_boxes(300, seed=1)
    scores = torch.rand(300, generator=torch.Generator().manual_seed(2))
    keep, new = batched_soft_nms(boxes, scores, torch.zeros(300, dtype=torch.int64), method="gaussian", sigma=1e-12)
    expected = nms(boxes, scores, 0.0)
    assert 10 < len(expected) < 300
    assert torch.equal(keep, expected)
    assert torch.equal(new, scores[expected])  # survivors were never decayed


@pytest.mark.parametrize("t", [0.3, 0.5, 0.7])
def test_linear_is_hard_nms_when_every_decay_falls_below_the_score_threshold(t):
    # scores in [1 - t, 1] and score_threshold 1 - t: a decayed score s * (1 - iou) < 1 * (1 - t)
    # for every iou > t, so every box that hard NMS removes drops out and no survivor was decayed
    boxes = _random_integer_boxes(300, seed=3)
    g = torch.Generator().manual_seed(4)
    scores, classes = (1 - t) + t * torch.rand(300, generator=g), torch.randint(0, 2, (300,), generator=g)
    keep, new = batched_soft_nms(boxes, scores, classes, iou_threshold=t, score_threshold=1 - t)
    expected = batched_nms(boxes, scores, classes, t)
    assert 10 < len(expected) < 300
    assert torch.equal(keep, expected) and torch.equal(new, scores[expected])


def test_empty_input_and_errors():
    keep, new = batched_soft_nms(torch.zeros(0, 4), torch.zeros(0), torch.zeros(0, dtype=torch.int64))
    assert keep.dtype == torch.int64 and keep.shape == (0,) and new.shape == (0,)
    keep, new = run([A], [0.9], max_keep=0)
    assert keep == [] and new.shape == (0,)
    with pytest.raises(ValueError, match="method='hard'"):
        run([A], [0.9], method="hard")
    with pytest.raises(ValueError, match="boxes must be"):
        batched_soft_nms(torch.zeros(3), torch.zeros(3), torch.zeros(3))
    with pytest.raises(ValueError, match=r"test.soft_nms: unknown option\(s\) \['sgima'\]"):
        soft_nms_options({"enabled": True, "sgima": 0.5})
    assert soft_nms_options({"enabled": False, "method": "nonsense"}) is None
    assert soft_nms_options({"method": "gaussian"})["sigma"] == 0.5
    torch.testing.assert_close(soft_nms_decay(torch.tensor([0.0, 0.3, 0.5]), "linear", iou_threshold=0.3),
                               torch.tensor([1.0, 1.0, 0.5]))


# ---- the inference option on models -------------------------------------------------------------


def _spread_scores(model):
    """Random-init detectors score every box alike (RetinaNet's prior, R-CNN's uniform softmax);
    larger random classifier weights give distinct scores, as a trained model has."""
    torch.manual_seed(1)
    owner, kind = nms_owner(model)
    layer = model.head.cls_score if kind == "dense" else owner.cls_score
    torch.nn.init.normal_(layer.weight, std=0.5)
    return model.eval()


@pytest.fixture(scope="module")
def models():
    torch.manual_seed(0)
    retina = instantiate(load_synthetic_cfg("retinanet_mnv2_fpn.py", "model.test_score_thresh=0.0").model)
    torch.manual_seed(0)
    rcnn = instantiate(load_synthetic_cfg("faster_rcnn_mnv2_fpn.py").model)
    return {"retinanet": _spread_scores(retina), "faster_rcnn": _spread_scores(rcnn)}


def _image(i=0):
    return [{k: v for k, v in synthetic_batch(i + 1)[i].items() if k != "instances"}]


def _raw_detections(model, x):
    """The model's detections before its postprocessing (for RetinaNet: not clipped, as its NMS
    sees them)."""
    if nms_owner(model)[1] == "rcnn":
        return model.inference(x, do_postprocess=False)[0]
    images = model.preprocess_image(x)
    features = model.backbone(images.tensor)
    features = [features[f] for f in model.head_in_features]
    return model.forward_inference(images, features, model.head(features))[0]


def _rows(instances):
    """Detections as sorted (score, class, box) tuples: boxes with exactly equal scores may come
    out in either order (torch.sort does not promise one)."""
    boxes = map(tuple, instances.pred_boxes.tensor.tolist())
    return sorted(zip(instances.scores.tolist(), instances.pred_classes.tolist(), boxes), reverse=True)


def _assert_same(a, b):
    assert len(a) > 0
    assert torch.equal(a.scores, b.scores)  # same ranking
    assert _rows(a) == _rows(b)


@pytest.mark.parametrize("name", ["retinanet", "faster_rcnn"])
def test_soft_nms_option(models, name):
    """(1) The option is Soft-NMS of the model's own NMS candidates, with its per-image cap, and
    leaves the model as it was. (2) Linear Soft-NMS at the model's IoU threshold t, with
    score_threshold = max score * (1 - t) on candidates above that score, drops every box it
    decays: exactly the model's hard NMS."""
    model = models[name]
    owner, kind = nms_owner(model)
    cap = owner.max_detections_per_image if kind == "dense" else owner.test_topk_per_image
    t = owner.test_nms_thresh
    keys = list(model.state_dict())
    x = _image()
    with torch.no_grad():
        with detections_before_nms(model) as m:
            assert m is model and owner.test_nms_thresh == 1.0
            candidates = _raw_detections(model, x)
        with soft_nms_inference(model, method="gaussian", sigma=0.5):
            assert list(model.state_dict()) == keys  # no new parameters or buffers
            soft = _raw_detections(model, x)
        assert "inference" not in owner.__dict__ and "inference_single_image" not in owner.__dict__
        assert owner.test_nms_thresh == t == 0.5 and cap == 100
        assert len(candidates) > cap  # the option saw more than the model's usual cap
        keep, scores = batched_soft_nms(
            candidates.pred_boxes.tensor, candidates.scores, candidates.pred_classes, "gaussian", 0.5, max_keep=cap
        )
        expected = candidates[keep]
        expected.scores = scores
        _assert_same(soft, expected)

        tau = candidates.scores.max().item() * (1 - t)
        old = owner.test_score_thresh
        owner.test_score_thresh = tau
        try:
            hard = model(x)[0]["instances"]
            with soft_nms_inference(model, method="linear", iou_threshold=t, score_threshold=tau):
                soft = model(x)[0]["instances"]
        finally:
            owner.test_score_thresh = old
    above = candidates.scores[candidates.scores > tau]
    assert len(hard) < len(above) and not torch.equal(hard.scores, above[: len(hard)])  # NMS removed some
    _assert_same(soft, hard)


def test_mask_rcnn_soft_nms_predicts_masks_for_the_kept_boxes():
    cfg = LazyConfig.load(os.path.join(REPO_ROOT, "configs/common/models/mask_rcnn_mnv2_fpn.py"))
    cfg.model.backbone.pretrained = False
    cfg.model.roi_heads.num_classes = 3
    torch.manual_seed(0)
    model = _spread_scores(instantiate(cfg.model))
    model.roi_heads.box_predictor.test_topk_per_image = 20
    x = _image()
    with torch.no_grad():
        with soft_nms_inference(model):
            soft = model(x)[0]["instances"]
        given = Instances(soft.image_size, pred_boxes=Boxes(soft.pred_boxes.tensor), pred_classes=soft.pred_classes)
        masks_for_kept = model.inference(x, detected_instances=[given])[0]["instances"].pred_masks
    assert len(soft) == 20 and soft.pred_masks.shape == (20, 128, 128)
    assert soft.scores[-1] < soft.scores[0]
    assert torch.equal(soft.pred_masks, masks_for_kept)


def test_soft_nms_option_refuses_other_models():
    with pytest.raises(TypeError, match="Linear is neither"):
        with soft_nms_inference(torch.nn.Linear(1, 1)):
            pass
    with pytest.raises(ValueError, match="test.soft_nms: method='hard'"):
        with soft_nms_inference(torch.nn.Linear(1, 1), method="hard"):
            pass
