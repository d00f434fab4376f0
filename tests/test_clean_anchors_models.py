"""CleanAnchorsRetinaNet / CleanAnchorsRPN wired into Detectron2: stock equivalence, gradients,
logging, training on synthetic data, and inference through the stock models."""
import copy

import pytest
import torch
from detectron2.config import instantiate
from detectron2.modeling.meta_arch import RetinaNet
from detectron2.modeling.proposal_generator import RPN
from detectron2.utils.events import EventStorage

from clean_anchors import CleanAnchorsRetinaNet, CleanAnchorsRPN, CleanlinessConfig
from clean_anchors.scores import candidate_scores
from detectron2.modeling.meta_arch.dense_detector import DenseDetector
from detkit.modeling import GlobalNormalizerRetinaNet
from detkit.modeling.dense_labels import dense_targets, loss_normalizer
from model_utils import assert_same_detections, load_synthetic_cfg, synthetic_batch, train_steps


load_cfg = load_synthetic_cfg


def build_pair(config, *overrides, stock_target):
    cfg = load_cfg(config, *overrides)
    torch.manual_seed(0)
    method = instantiate(cfg.model)
    stock_cfg = copy.deepcopy(cfg.model)
    stock_cfg._target_ = stock_target
    for key in METHOD_KEYS + (("global_loss_normalizer",) if stock_target is RetinaNet else ()):
        stock_cfg.pop(key, None)
    stock = instantiate(stock_cfg)
    stock.load_state_dict(method.state_dict())
    return method, stock


METHOD_KEYS = ("topn", "assigner", "cleanliness", "normalizer")


@pytest.mark.parametrize("stock_target", [RetinaNet, GlobalNormalizerRetinaNet])
@pytest.mark.parametrize("normalizer", ["ema", "ema_raw"])
def test_switched_off_method_is_exactly_stock_retinanet(stock_target, normalizer):
    """Bit for bit, over three iterations; the authors' raw count differs from Detectron2's only on
    a batch without positives (below)."""
    global_normalizer = stock_target is GlobalNormalizerRetinaNet
    method, stock = build_pair(
        "clean_anchors_retinanet_mnv2_fpn.py",
        "model.assigner=iou",
        "model.cleanliness.soft_labels=False",
        "model.cleanliness.reweighting=False",
        "model.focal_loss_alpha=0.25",
        f"model.normalizer={normalizer}",
        f"model.global_loss_normalizer={global_normalizer}",
        stock_target=stock_target,
    )
    batch = synthetic_batch(2)
    with EventStorage(0):
        for _ in range(3):
            a = method(batch)
            b = stock(batch)
            assert set(a) == set(b) == {"loss_cls", "loss_box_reg"}
            for k in a:
                assert torch.equal(a[k], b[k]), k


class _EMAModel:
    """Just the loss-normaliser state of a DenseDetector."""

    _ema_update = DenseDetector._ema_update


def test_loss_normalizer_after_batches_without_positives():
    """NoisyAnchor: the EMA (start 100, momentum 0.9) of the raw positive count, losses divided by
    max(1, EMA); Detectron2: the EMA of max(count, 1)."""
    no_positives = [torch.full((6,), 1)]  # one class: label 1 is background
    some = [torch.tensor([0, 0, 0, 1, 1, -1])]  # 3 positives
    raw, d2 = _EMAModel(), _EMAModel()

    def normalizer_of(model, labels, normalizer="ema"):
        return loss_normalizer(model, dense_targets(labels, 1).pos_mask, normalizer)

    with EventStorage(0):
        assert normalizer_of(raw, no_positives, "ema_raw") == pytest.approx(90.0)
        assert normalizer_of(d2, no_positives) == pytest.approx(90.1)
        assert normalizer_of(raw, some, "ema_raw") == pytest.approx(81.3)
        assert normalizer_of(d2, some) == pytest.approx(81.39)
        for _ in range(60):
            last = normalizer_of(raw, no_positives, "ema_raw")
        assert raw.loss_normalizer == pytest.approx(81.3 * 0.9**60) and raw.loss_normalizer < 1
        assert last == 1.0  # max(1, EMA)
        # mmdetection v0.6 (the SWN code): this batch's count, max(P_i, 1) per image, no EMA
        two = [torch.tensor([0, 0, 0, 1, 1, -1]), torch.full((6,), 1)]
        assert normalizer_of(_EMAModel(), two, "batch") == 4.0
        with pytest.raises(ValueError, match="normalizer must be one of"):
            normalizer_of(_EMAModel(), two, "mean")


def _rpn_method_and_stock(*overrides):
    cfg = load_cfg("clean_anchors_faster_rcnn_mnv2_fpn.py", "model.proposal_generator.assigner=iou", *overrides)
    torch.manual_seed(0)
    method = instantiate(cfg.model)
    stock_cfg = copy.deepcopy(cfg.model)
    stock_cfg.proposal_generator._target_ = RPN
    for key in ("topn", "assigner", "cleanliness"):
        stock_cfg.proposal_generator.pop(key, None)
    stock = instantiate(stock_cfg)
    stock.load_state_dict(method.state_dict())
    return method, stock


def _rpn_losses_and_grads(model, batch):
    with EventStorage(0):
        torch.manual_seed(1)  # the RPN and RoI heads sample at random
        losses = model(batch)
        rpn = {k: losses[k] for k in ("loss_rpn_cls", "loss_rpn_loc")}
        sum(rpn.values()).backward()
    head = model.proposal_generator.rpn_head
    return rpn, {n: p.grad.clone() for n, p in head.named_parameters()}


def test_switched_off_rpn_is_exactly_stock_rpn():
    """Both switches off: Detectron2's own RPN losses, bit for bit (the method's losses() defers)."""
    method, stock = _rpn_method_and_stock(
        "model.proposal_generator.cleanliness.soft_labels=False",
        "model.proposal_generator.cleanliness.reweighting=False",
    )
    batch = synthetic_batch(2)
    a, _ = _rpn_losses_and_grads(method, batch)
    b, _ = _rpn_losses_and_grads(stock, batch)
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_rpn_method_loss_with_neutral_scores_is_stock_rpn(monkeypatch):
    """The method's own loss path (soft targets, re-weighting, normaliser, box loss) with every soft
    label and weight forced to 1 gives the stock RPN's losses and gradients."""
    import clean_anchors.rpn as rpn_module

    original = rpn_module.candidate_scores

    def neutral(*args, **kwargs):
        scores = original(*args, **kwargs)
        ones = torch.ones_like(scores.soft_labels)
        return scores._replace(soft_labels=ones, weights=ones)

    monkeypatch.setattr(rpn_module, "candidate_scores", neutral)
    method, stock = _rpn_method_and_stock()  # soft labels and re-weighting on (the config's)
    assert method.proposal_generator.cleanliness.soft_labels and method.proposal_generator.cleanliness.reweighting
    batch = synthetic_batch(2)
    a, grads_a = _rpn_losses_and_grads(method, batch)
    b, grads_b = _rpn_losses_and_grads(stock, batch)
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-6, atol=1e-7)
    for n in grads_a:
        torch.testing.assert_close(grads_a[n], grads_b[n], rtol=1e-5, atol=1e-7)
    # and the real scores do change the losses
    monkeypatch.setattr(rpn_module, "candidate_scores", original)
    method.zero_grad()
    _, grads_c = _rpn_losses_and_grads(method, batch)
    # (at initialisation every objectness logit is ~0, where BCE is ln 2 for any target: the
    # soft targets show in the gradient, not the loss value)
    assert not torch.allclose(grads_c["objectness_logits.weight"], grads_b["objectness_logits.weight"], rtol=1e-3)


@pytest.mark.parametrize("statistics", ["image", "batch"])
def test_retinanet_losses_are_finite_and_logged_with_an_empty_image(statistics):
    # each positive once, so that the logged (per-anchor) mean of the weights is 1
    cfg = load_cfg(
        "clean_anchors_retinanet_mnv2_fpn.py",
        f"model.cleanliness.statistics={statistics}",
        "model.cleanliness.multiplicity=anchors",
    )
    model = instantiate(cfg.model)
    batch = synthetic_batch(3, with_empty=True)
    with EventStorage(0) as storage:
        losses = model(batch)
        sum(losses.values()).backward()
        latest = storage.latest()
    assert all(torch.isfinite(v) for v in losses.values())
    # 30 per ground truth, fewer where two ground truths share an anchor
    assert 20.0 < latest["clean_anchors/candidates_per_gt"][0] <= 30.0
    for name in ("loc_a", "cls_c", "soft_labels", "weights"):
        for stat in ("mean", "min", "max"):
            assert f"clean_anchors/{name}_{stat}" in latest
    assert latest["clean_anchors/soft_labels_max"][0] == pytest.approx(1.0)
    if statistics == "image":
        assert latest["clean_anchors/weights_mean"][0] == pytest.approx(1.0, abs=1e-5)


def test_reweighted_losses_keep_the_unweighted_sum():
    """With rescaling, re-weighting redistributes the loss (other gradients) but leaves its total
    unchanged; without rescaling the weighted total differs (the weights are not all 1)."""
    cfg = load_cfg("clean_anchors_retinanet_mnv2_fpn.py", "model.cleanliness.soft_labels=False")
    torch.manual_seed(0)
    weighted = instantiate(cfg.model)
    cfg.model.cleanliness.reweighting = False
    cfg.model.assigner = "topn"
    plain = instantiate(cfg.model)
    plain.load_state_dict(weighted.state_dict())
    batch = synthetic_batch(2)
    with EventStorage(0):
        a, b = weighted(batch), plain(batch)
        for k in a:
            torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6)
        # the same totals, distributed differently over the anchors: the head's gradients differ
        sum(a.values()).backward()
        sum(b.values()).backward()
        for name in ("head.cls_score.weight", "head.bbox_pred.weight"):
            ga = dict(weighted.named_parameters())[name].grad
            gb = dict(plain.named_parameters())[name].grad
            assert not torch.allclose(ga, gb, rtol=1e-3, atol=1e-6), name
        weighted.cleanliness.rescale_losses = False
        c = weighted(batch)
    for k in ("loss_cls", "loss_box_reg"):
        assert not torch.allclose(c[k], b[k], rtol=1e-3), k


def test_cleanliness_targets_carry_no_gradient():
    from detectron2.modeling.box_regression import Box2BoxTransform

    deltas = torch.randn(5, 4, requires_grad=True)
    logits = torch.randn(5, requires_grad=True)
    anchors = torch.tensor([[0, 0, 10, 10], [5, 5, 20, 20], [0, 0, 8, 30], [2, 2, 4, 4], [0, 0, 50, 50.0]])
    scores = candidate_scores(
        Box2BoxTransform((1.0, 1.0, 1.0, 1.0)), anchors, deltas, anchors + 1, logits,
        torch.tensor([0, 0, 0, 1, 1]), CleanlinessConfig(),
    )
    for t in scores:
        assert not t.requires_grad
    assert scores.soft_labels[:3].max() == 1.0 and scores.soft_labels[3:].max() == 1.0  # per image


def test_rpn_losses_finite_and_logged():
    cfg = load_cfg("clean_anchors_faster_rcnn_mnv2_fpn.py")
    model = instantiate(cfg.model)
    assert isinstance(model.proposal_generator, CleanAnchorsRPN)
    with EventStorage(0) as storage:
        losses = model(synthetic_batch(2, with_empty=True))
        sum(losses.values()).backward()
        latest = storage.latest()
    assert all(torch.isfinite(v) for v in losses.values())
    assert "clean_anchors/rpn/soft_labels_mean" in latest
    assert 6.0 < latest["clean_anchors/rpn_candidates_per_gt"][0] <= 10.0


def test_trained_checkpoint_gives_identical_detections_in_stock_models():
    for config, overrides, stock_target, part in (
        # score threshold 0 so that a barely trained model has detections to compare
        ("clean_anchors_retinanet_mnv2_fpn.py", ["model.test_score_thresh=0.0"], RetinaNet, None),
        (
            "clean_anchors_faster_rcnn_mnv2_fpn.py",
            ["model.roi_heads.box_predictor.test_score_thresh=0.0"],
            None,
            "proposal_generator",
        ),
    ):
        cfg = load_cfg(config, *overrides)
        torch.manual_seed(0)
        method = instantiate(cfg.model)
        train_steps(method)
        stock_cfg = copy.deepcopy(cfg.model)
        node = stock_cfg if part is None else stock_cfg[part]
        node._target_ = stock_target if part is None else RPN
        for key in METHOD_KEYS + ("global_loss_normalizer",):
            node.pop(key, None)
        stock = instantiate(stock_cfg)
        stock.load_state_dict(method.state_dict(), strict=True)
        assert_same_detections(method, stock)


def test_clean_anchors_retinanet_losses_on_a_hand_derived_case():
    """One image, three anchors, one class, zero box deltas; every number below is derived by hand.

    Ground truth [0, 0, 10, 16]. Anchor A0 [0, 0, 10, 10] (IoU 0.625, logit -ln 3: p 0.25) in one
    top-N list; A1 [0, 0, 10, 20] (IoU 0.8, logit ln 3: p 0.75) in two; A2 background (logit -ln 3).
    Pair multiplicity: means weight A1 twice. Soft labels (alpha 0.75; two positives): the floor
    mean(loc) = (0.625 + 2 * 0.8) / 3 = 89/120 for the less clean A0 and 1 for A1. Weights:
    f(loc) = (8/3, 5), mean 38/9; f(cls) = (4/3, 4), mean 28/9; r = 0.75 f_loc / 38/9 + 0.25 f_cls / 28/9
    = (309/532, 1287/1064), count-weighted mean 1. Losses: soft focal (alpha 0.5, gamma 2) and L1 box
    deltas (0, 0.3, 0, ln 1.6) and (0, -0.1, 0, ln 0.8), re-weighted, rescaled to their unweighted
    sums, divided by the authors' normaliser max(1, 0.9 * 100 + 0.1 * 2) = 90.2.
    """
    import math

    cfg = load_cfg("clean_anchors_retinanet_mnv2_fpn.py")
    model = instantiate(cfg.model)
    model.num_classes, model.smooth_l1_beta = 1, 0.0
    assert (model.focal_loss_alpha, model.focal_loss_gamma, model.normalizer) == (0.5, 2.0, "ema_raw")
    assert tuple(model.box2box_transform.weights) == (1.0, 1.0, 1.0, 1.0)
    from detectron2.structures import Boxes

    ln3 = math.log(3.0)
    anchors = [Boxes(torch.tensor([[0.0, 0, 10, 10], [0, 0, 10, 20], [50, 50, 60, 60]]))]
    gt = torch.tensor([[0.0, 0, 10, 16]] * 3)
    logits = torch.tensor([[[-ln3], [ln3], [-ln3]]], requires_grad=True)  # (N=1, R=3, K=1)
    deltas = torch.zeros(1, 3, 4, requires_grad=True)

    def run(**switches):
        for k, v in switches.items():
            setattr(model.cleanliness, k, v)
        model.loss_normalizer = 100.0  # Detectron2's initial value; one update: 0.9 * 100 + 0.1 * 2
        logits.grad = deltas.grad = None
        with EventStorage(0):
            losses = model.losses(anchors, [logits], [torch.tensor([0, 0, 1])], [deltas], [gt], [torch.tensor([1, 2, 0])])
        sum(losses.values()).backward()
        return losses, logits.grad[0, :, 0].clone(), deltas.grad[0].clone()

    s0 = 89 / 120
    sp = lambda x: math.log1p(math.exp(x))  # noqa: E731  softplus
    focal = [
        0.5 * s0 * 0.75 ** 2 * sp(ln3) + 0.5 * (1 - s0) * 0.25 ** 2 * sp(-ln3),  # A0: p 0.25, target s0
        0.5 * 0.25 ** 2 * sp(-ln3),  # A1: p 0.75, target 1
        0.5 * 0.25 ** 2 * sp(-ln3),  # A2: p 0.25, target 0
    ]
    box = [0.3 + math.log(1.6), 0.1 - math.log(0.8)]
    r = [309 / 532, 1287 / 1064]
    losses, grad_logits, grad_deltas = run()
    assert losses["loss_cls"].item() == pytest.approx(sum(focal) / 90.2, rel=1e-6)
    assert losses["loss_box_reg"].item() == pytest.approx(sum(box) / 90.2, rel=1e-6)

    # the weights show in the gradients: each anchor's gradient is (rescale factor) x r x its
    # gradient without re-weighting (same soft labels)
    _, plain_logits, plain_deltas = run(reweighting=False)
    cls_factor = sum(focal) / (r[0] * focal[0] + r[1] * focal[1] + focal[2])
    box_factor = sum(box) / (r[0] * box[0] + r[1] * box[1])
    expected = torch.tensor([cls_factor * r[0], cls_factor * r[1], cls_factor])
    torch.testing.assert_close(grad_logits / plain_logits, expected, rtol=1e-5, atol=0)
    # L1 on a zero prediction: d/d(delta) = -sign(target) / 90.2, times the factor and r
    assert grad_deltas[0, 1].item() == pytest.approx(-box_factor * r[0] / 90.2, rel=1e-5)
    assert grad_deltas[1, 3].item() == pytest.approx(box_factor * r[1] / 90.2, rel=1e-5)
    assert plain_deltas[0, 1].item() == pytest.approx(-1 / 90.2, rel=1e-5)
    assert grad_deltas[2].abs().sum() == 0 and grad_deltas[:, 0].abs().sum() == 0  # background; dx = 0
