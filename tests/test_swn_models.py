"""SWNRetinaNet / SWNFastRCNNOutputLayers wired into Detectron2: initial-loss equivalence with the
stock models, gradient paths, the "SWN off" control, logging and stock-model inference."""
import copy
import os

import pytest
import torch
from detectron2.config import LazyConfig, instantiate
from detectron2.modeling.meta_arch import RetinaNet
from detectron2.modeling.roi_heads import FastRCNNOutputLayers
from detectron2.utils.events import EventStorage

from conftest import REPO_ROOT
from model_utils import assert_same_detections, load_synthetic_cfg, synthetic_batch, train_steps
from swn import SWNFastRCNNOutputLayers, SWNRetinaNet
from swn.checkpoint import drop_swn_parameters

SWN_KEYS = ("swn", "weighting", "normalizer", "global_loss_normalizer")


load_cfg = load_synthetic_cfg


def stock_twin(cfg_model, method, part=None):
    """The stock model of the same config, with the method's weights (SWN parameters dropped)."""
    stock_cfg = copy.deepcopy(cfg_model)
    node = stock_cfg if part is None else stock_cfg.roi_heads.box_predictor
    node._target_ = RetinaNet if part is None else FastRCNNOutputLayers
    for key in SWN_KEYS:
        node.pop(key, None)
    stock = instantiate(stock_cfg)
    state, dropped = drop_swn_parameters(method.state_dict())
    assert dropped and all("swn" in k for k in dropped)
    stock.load_state_dict(state, strict=True)
    return stock


def test_retinanet_initial_losses_equal_stock_up_to_the_regulariser():
    cfg = load_cfg("swn_retinanet_mnv2_fpn.py")
    torch.manual_seed(0)
    method = instantiate(cfg.model)
    assert isinstance(method, SWNRetinaNet)
    stock = stock_twin(cfg.model, method)
    batch = synthetic_batch(2)
    with EventStorage(0) as storage:
        a, b = method(batch), stock(batch)
        latest = storage.latest()
    for k in ("loss_cls", "loss_box_reg"):
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=0)
    assert abs(a["loss_swn_reg"].item()) < 1e-5
    for name in ("cls_weight_pos", "cls_weight_neg", "reg_weight"):
        assert latest[f"swn/{name}"][0] == pytest.approx(1.0, abs=1e-4)
    for task in ("cls", "reg"):
        for stat in ("mean", "min", "max"):
            assert f"swn/m_{task}_{stat}" in latest


def test_swn_off_control_is_exactly_stock():
    cfg = load_cfg("swn_retinanet_mnv2_fpn.py", "model.weighting.enabled=False")
    torch.manual_seed(0)
    method = instantiate(cfg.model)
    stock = stock_twin(cfg.model, method)
    batch = synthetic_batch(2)
    with EventStorage(0):
        a, b = method(batch), stock(batch)
    assert a["loss_swn_reg"].item() == 0.0
    torch.testing.assert_close(a["loss_cls"], b["loss_cls"], rtol=1e-6, atol=0)
    torch.testing.assert_close(a["loss_box_reg"], b["loss_box_reg"], rtol=1e-6, atol=0)


def test_gradients_reach_the_detector_only_through_the_weighted_loss():
    """With a far-from-zero SWN, the detector's gradients are those of the weighted losses with the
    weights held constant: nothing flows back through the SWN's inputs."""
    cfg = load_cfg("swn_retinanet_mnv2_fpn.py", "model.swn.init_std=0.3")
    torch.manual_seed(0)
    model = instantiate(cfg.model)
    batch = synthetic_batch(2)

    def detector_grads(frozen_m=None):
        model.zero_grad()
        model.__dict__.pop("loss_normalizer", None)  # RetinaNet's EMA would differ between passes
        if frozen_m is not None:
            model.swn.forward = lambda *args, **kw: frozen_m
        with EventStorage(0):
            losses = model(batch)
        sum(losses.values()).backward()
        if frozen_m is not None:
            del model.swn.forward
        return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None and "swn" not in n}

    captured = {}
    original = model.swn.forward

    def capture(*args, **kw):
        captured["m"] = original(*args, **kw)
        return captured["m"]

    model.swn.forward = capture
    live = detector_grads()
    del model.swn.forward
    frozen = detector_grads(captured["m"].detach())
    assert captured["m"].abs().max() > 0.1  # the weights really differ from 1
    assert live.keys() == frozen.keys() and len(live) > 10
    for n in live:
        torch.testing.assert_close(live[n], frozen[n], rtol=1e-5, atol=1e-7)
    swn_grads = [p.grad for n, p in model.named_parameters() if n.startswith("swn.")]
    assert all(g is None for g in swn_grads)  # the frozen pass did not touch the SWN


def test_swn_parameters_get_gradients():
    cfg = load_cfg("swn_retinanet_mnv2_fpn.py", "model.swn.init_std=0.1")
    model = instantiate(cfg.model)
    with EventStorage(0):
        losses = model(synthetic_batch(2, with_empty=True))
    sum(losses.values()).backward()
    grads = [p.grad for n, p in model.named_parameters() if n.startswith("swn.")]
    assert grads and all(g is not None and torch.isfinite(g).all() for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)


def test_fast_rcnn_initial_losses_equal_stock():
    cfg = load_cfg("swn_faster_rcnn_mnv2_fpn.py")
    torch.manual_seed(0)
    method = instantiate(cfg.model)
    assert isinstance(method.roi_heads.box_predictor, SWNFastRCNNOutputLayers)
    stock = stock_twin(cfg.model, method, part="box_predictor")
    batch = synthetic_batch(2)
    with EventStorage(0) as storage:
        torch.manual_seed(1)
        a = method(batch)
        torch.manual_seed(1)
        b = stock(batch)
        latest = storage.latest()
    for k in ("loss_cls", "loss_box_reg", "loss_rpn_cls", "loss_rpn_loc"):
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-8)
    assert abs(a["loss_swn_reg"].item()) < 1e-5
    assert latest["swn/cls_weight_pos"][0] == pytest.approx(1.0, abs=1e-4)


@pytest.mark.parametrize(
    "config, part, overrides",
    [
        ("swn_retinanet_mnv2_fpn.py", None, ["model.test_score_thresh=0.0"]),
        ("swn_faster_rcnn_mnv2_fpn.py", "box_predictor", ["model.roi_heads.box_predictor.test_score_thresh=0.0"]),
    ],
)
def test_trained_checkpoint_gives_identical_detections_in_stock_model(config, part, overrides):
    cfg = load_cfg(config, *overrides)
    torch.manual_seed(0)
    method = instantiate(cfg.model)
    train_steps(method)
    assert_same_detections(method, stock_twin(cfg.model, method, part=part))


def mask_rcnn_pair(num_classes=3):
    """An SWN Mask R-CNN (MobileNetV2-FPN) and the stock Mask R-CNN with the same weights."""
    from detectron2.config import LazyCall as L
    from detectron2.modeling.roi_heads import StandardROIHeads

    from swn import SampleWeightingNetwork, SWNROIHeads, SWNConfig

    cfg = LazyConfig.load(os.path.join(REPO_ROOT, "configs/common/models/mask_rcnn_mnv2_fpn.py"))
    cfg.model.backbone.pretrained = False
    cfg.model.roi_heads.num_classes = num_classes
    stock_cfg = copy.deepcopy(cfg.model)
    cfg.model.roi_heads._target_ = SWNROIHeads
    cfg.model.roi_heads.box_predictor._target_ = SWNFastRCNNOutputLayers
    cfg.model.roi_heads.box_predictor.swn = L(SampleWeightingNetwork)(num_tasks=3, init_std=1e-4)
    cfg.model.roi_heads.box_predictor.weighting = L(SWNConfig)(cls_average="pos_neg")
    torch.manual_seed(0)
    method = instantiate(cfg.model)
    assert type(method.roi_heads) is SWNROIHeads
    stock = instantiate(stock_cfg)
    assert type(stock.roi_heads) is StandardROIHeads
    stock.load_state_dict(drop_swn_parameters(method.state_dict())[0], strict=True)
    return method, stock


def with_box_masks(batch):
    """Give every ground truth a mask: its box filled (the synthetic set has boxes only)."""
    from detectron2.structures import BitMasks

    for d in batch:
        inst = d["instances"]
        h, w = inst.image_size
        ys, xs = torch.arange(h)[:, None], torch.arange(w)[None, :]
        b = inst.gt_boxes.tensor
        in_x = (xs[None] >= b[:, 0, None, None]) & (xs[None] < b[:, 2, None, None])  # (G, 1, W)
        in_y = (ys[None] >= b[:, 1, None, None]) & (ys[None] < b[:, 3, None, None])  # (G, H, 1)
        inst.gt_masks = BitMasks(in_x & in_y)
    return batch


def test_mask_rcnn_initial_losses_equal_stock_and_mask_weights_are_logged():
    method, stock = mask_rcnn_pair()
    batch = with_box_masks(synthetic_batch(2))
    with EventStorage(0) as storage:
        torch.manual_seed(1)
        a = method(batch)
        torch.manual_seed(1)
        b = stock(batch)
        latest = storage.latest()
    for k in ("loss_mask", "loss_cls", "loss_box_reg", "loss_rpn_cls"):
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-8)
    assert abs(a["loss_swn_reg"].item()) < 1e-5
    assert latest["swn/mask_weight"][0] == pytest.approx(1.0, abs=1e-4)
    assert "swn/m_mask_max" in latest and "mask_rcnn/accuracy" in latest
    sum(a.values()).backward()
    mask_embedding = method.roi_heads.box_predictor.swn.embeddings["mask"]
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in mask_embedding.parameters())


def test_mask_rcnn_checkpoint_gives_identical_detections_in_stock_model():
    method, _ = mask_rcnn_pair()
    train_steps(method, make_batch=lambda: with_box_masks(synthetic_batch(2)))
    _, stock = mask_rcnn_pair()
    stock.load_state_dict(drop_swn_parameters(method.state_dict())[0], strict=True)
    method.roi_heads.box_predictor.test_score_thresh = stock.roi_heads.box_predictor.test_score_thresh = 0.0
    assert_same_detections(method, stock)


def test_yacs_users_get_the_swn_box_predictor():
    from detectron2 import model_zoo
    from detectron2.config import get_cfg
    from detectron2.modeling import build_model

    from swn import SWNROIHeads

    cfg = get_cfg()
    cfg.merge_from_file(model_zoo.get_config_file("COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_1x.yaml"))
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.ROI_HEADS.NAME = "SWNROIHeads"
    model = build_model(cfg)
    assert isinstance(model.roi_heads, SWNROIHeads)
    assert isinstance(model.roi_heads.box_predictor, SWNFastRCNNOutputLayers)
    assert model.roi_heads.box_predictor.swn.num_tasks == 3


class _MarkAllZeroRows(torch.nn.Module):
    """A stand-in SWN: m_cls = 1 for a sample whose four inputs are all 0, else 0; m_reg = 0."""

    def forward(self, cls, reg, iou, prob, loss_mask=None, detach_iou_prob=True):
        zero = (cls == 0) & (reg == 0).all(dim=1) & (iou == 0) & (prob == 0)
        self.num_samples = cls.shape[0]
        return torch.stack([zero.float(), torch.zeros_like(cls)], dim=1)


@pytest.mark.parametrize("samples", ["all", "valid"])
def test_retinanet_swn_runs_on_ignored_anchors_too(samples):
    """Reference RetinaNet: the SWN sees every anchor; the ignored ones (four 0 inputs) count in
    mean(m_cls) and in the regulariser 0.5 * mean(m_cls); "valid" leaves them out."""
    cfg = load_cfg("swn_retinanet_mnv2_fpn.py", f"model.weighting.samples={samples}")
    torch.manual_seed(0)
    method = instantiate(cfg.model)
    stock = stock_twin(cfg.model, method)
    method.swn = _MarkAllZeroRows()
    batch = synthetic_batch(2)
    with EventStorage(0):
        a, b = method(batch), stock(batch)
        images = method.preprocess_image(batch)
        features = [method.backbone(images.tensor)[f] for f in method.head_in_features]
        labels, _ = method.label_anchors(method.anchor_generator(features), [x["instances"] for x in batch])
    labels = torch.stack(labels)
    num_ignored, num_anchors = int((labels < 0).sum()), labels.numel()
    assert num_ignored > 0
    if samples == "all":
        assert method.swn.num_samples == num_anchors
        mean_m_cls = num_ignored / num_anchors  # the valid anchors have a positive focal loss
    else:
        assert method.swn.num_samples == num_anchors - num_ignored
        mean_m_cls = 0.0
    torch.testing.assert_close(a["loss_swn_reg"], torch.tensor(0.5 * mean_m_cls))
    torch.testing.assert_close(a["loss_cls"], b["loss_cls"] * torch.exp(torch.tensor(-mean_m_cls)), rtol=1e-5, atol=0)
    torch.testing.assert_close(a["loss_box_reg"], b["loss_box_reg"], rtol=1e-6, atol=0)


@pytest.mark.parametrize("config", ["swn_retinanet_mnv2_fpn.py", "swn_faster_rcnn_mnv2_fpn.py"])
def test_detach_inputs_losses_lets_the_swn_loss_reach_the_head_through_iou_and_prob(config):
    """Reference RetinaNet: IoU and prob are not detached, so loss_swn_reg has gradients in the
    detector's head; with every input detached (default) it has none."""
    grads = {}
    for detach in ("all", "losses"):
        prefix = "model" if "retinanet" in config else "model.roi_heads.box_predictor"
        cfg = load_cfg(config, f"{prefix}.swn.init_std=0.3", f"{prefix}.weighting.detach_inputs={detach}")
        torch.manual_seed(0)
        model = instantiate(cfg.model)
        with EventStorage(0):
            torch.manual_seed(1)
            reg = model(synthetic_batch(2))["loss_swn_reg"]
        head = [p for n, p in model.named_parameters() if "swn" not in n and ("head" in n or "box_predictor" in n)]
        g = torch.autograd.grad(reg, head, allow_unused=True)
        grads[detach] = sum(float(x.abs().sum()) for x in g if x is not None)
    assert grads["all"] == 0.0
    assert grads["losses"] > 0.0


def test_fast_rcnn_background_rois_have_probability_input_zero():
    """Reference code: a background RoI's prob input is 0, not the softmax of the background class."""
    cfg = load_cfg("swn_faster_rcnn_mnv2_fpn.py")
    torch.manual_seed(0)
    model = instantiate(cfg.model)
    predictor = model.roi_heads.box_predictor
    captured = {}
    original = predictor.training_samples

    def capture(predictions, proposals, mask_loss=None):
        captured["scores"] = predictions[0].detach()
        captured["gt"] = torch.cat([p.gt_classes for p in proposals])
        captured["samples"] = original(predictions, proposals, mask_loss)
        return captured["samples"]

    predictor.training_samples = capture
    with EventStorage(0):
        model(synthetic_batch(2))
    per_roi, gt = captured["samples"].inputs._asdict(), captured["gt"]
    fg = gt < predictor.num_classes
    assert fg.any() and (~fg).any()
    assert torch.equal(per_roi["prob"][~fg], torch.zeros(int((~fg).sum())))
    expected = captured["scores"].softmax(dim=1)[fg].gather(1, gt[fg, None]).squeeze(1)
    torch.testing.assert_close(per_roi["prob"][fg], expected)
    assert (per_roi["iou"][~fg] == 0).all() and (per_roi["reg_loss"][~fg] == 0).all()
