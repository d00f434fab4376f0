"""The analysis pictures: binning helpers, the collection of CleanAnchors' candidate scores and of
the SWN's inputs/weights (checked against what the models compute in training), and the two CLIs
(tools/visualize_anchors.py, tools/plot_swn_weights.py) on synthetic checkpoints."""
import os
import runpy

import numpy as np
import pytest
import torch
from detectron2.config import instantiate
from detectron2.data import DatasetCatalog
from detectron2.utils.events import EventStorage

from clean_anchors.analysis import candidate_anchors, cleanliness_settings
from clean_anchors.plots import anchors_figure, candidates_in_region, candidates_of_image, iou_scatter_figure
from detkit.analysis import annotated_inputs, load_model
from detkit.visualization import assign_bins, bin_labels, save_figure, share_by_bin
from model_utils import load_synthetic_cfg, synthetic_batch, train_steps
from swn.analysis import SWNSamples, collect_positive_samples, positive_samples, swn_samples, sweep_swn_input
from swn.loss import sample_weights
from swn.plots import DEFAULT_IOU_EDGES, input_sweeps, loss_share_by_iou

from conftest import REPO_ROOT

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _tool_main(name):
    # by path: a site-packages "tools" package (from the Detectron2 wheel) shadows this repo's tools/
    return runpy.run_path(os.path.join(REPO_ROOT, "tools", name))["main"]


@pytest.fixture(scope="module")
def swn_model():
    """An SWN RetinaNet after two SGD steps from its random initialisation."""
    torch.manual_seed(0)
    model = instantiate(load_synthetic_cfg("swn_retinanet_mnv2_fpn.py").model)
    train_steps(model, 2)
    return model


@pytest.fixture(scope="module")
def clean_anchors_model(swn_model):
    """A CleanAnchors RetinaNet with the SWN model's detector weights (same architecture; training
    a second model would only cost test time)."""
    model = instantiate(load_synthetic_cfg("clean_anchors_retinanet_mnv2_fpn.py").model)
    model.load_state_dict({k: v for k, v in swn_model.state_dict().items() if not k.startswith("swn.")})
    return model


@pytest.fixture(scope="module")
def stock_model():
    """A stock RetinaNet of the same shape; tests load the weights they need into it."""
    return instantiate(load_synthetic_cfg("retinanet_mnv2_fpn.py").model).eval()


def _assert_png(path):
    assert os.path.getsize(path) > 1000
    with open(path, "rb") as f:
        assert f.read(8) == PNG_MAGIC


# ---------------------------------------------------------------- binning


def test_assign_bins_hand_computed():
    edges = [0.0, 0.5, 0.6, 1.0]
    values = [0.0, 0.49, 0.5, 0.59, 0.6, 0.99, 1.0, -0.1, 1.1, float("nan")]
    assert assign_bins(values, edges).tolist() == [0, 0, 1, 1, 2, 2, 2, -1, -1, -1]
    assert bin_labels(edges) == ["[0.0, 0.5)", "[0.5, 0.6)", "[0.6, 1.0]"]
    with pytest.raises(ValueError, match="strictly increasing"):
        assign_bins(values, [0.0, 0.5, 0.5])


def test_share_by_bin_hand_computed():
    shares = share_by_bin([0, 1, 1, -1, 2], [1.0, 2.0, 3.0, 4.0, 0.0], num_bins=3)
    np.testing.assert_allclose(shares, [10.0, 50.0, 0.0])  # the out-of-range 4.0 counts in the total
    np.testing.assert_allclose(share_by_bin([0, 1], [0.0, 0.0], 2), [0.0, 0.0])


# ---------------------------------------------------------------- CleanAnchors


def test_candidate_anchors_match_training(clean_anchors_model):
    model = clean_anchors_model
    batch = synthetic_batch(2)
    cand = candidate_anchors(model, batch)
    num = len(cand.anchors)
    topn, _, cfg = cleanliness_settings(model)
    num_gt = sum(len(x["instances"]) for x in batch)
    assert 0 < num <= topn * num_gt
    for t in cand:
        assert t.shape[0] == num
    assert set(cand.image_index.tolist()) == {0, 1}
    for name in ("anchor_iou", "loc_a", "cls_c", "soft_labels"):
        values = getattr(cand, name)
        assert values.min() >= 0 and values.max() <= 1, name
    assert (cand.weights > 0).all()
    assert (cand.num_lists >= 1).all() and (cand.num_lists > 1).any()  # some anchors sit in two lists
    for i in range(2):  # per-image statistics: mean weight 1 over the (GT, anchor) pairs, best soft label 1
        mine = cand.image_index == i
        pairs = cand.num_lists[mine].float()
        assert (cand.weights[mine] * pairs).sum() / pairs.sum() == pytest.approx(1.0, abs=1e-5)
        assert cand.soft_labels[cand.image_index == i].max() == pytest.approx(1.0, abs=1e-6)
    for i, x in enumerate(batch):
        gt = x["instances"].gt_boxes.tensor
        mine = cand.image_index == i
        assert torch.equal(cand.gt_boxes[mine], gt[cand.gt_index[mine]])
    # the same numbers the model logs while it trains on this batch
    model.train()
    with EventStorage(0) as storage:
        model(batch)
    logged = {k: v.latest() for k, v in storage.histories().items()}
    for name in ("loc_a", "cls_c", "soft_labels", "weights"):
        assert logged[f"clean_anchors/{name}_mean"] == pytest.approx(getattr(cand, name).mean().item(), rel=1e-5)
    assert logged["clean_anchors/candidates_per_gt"] == pytest.approx(num / num_gt)


def test_candidate_anchors_of_a_stock_retinanet(clean_anchors_model, stock_model):
    stock = stock_model
    stock.load_state_dict(clean_anchors_model.state_dict())
    assert cleanliness_settings(stock)[:2] == (30, "topn")
    a = candidate_anchors(stock.eval(), synthetic_batch(1))
    b = candidate_anchors(clean_anchors_model.eval(), synthetic_batch(1))
    assert torch.equal(a.soft_labels, b.soft_labels) and torch.equal(a.weights, b.weights)
    # assigner "iou": the foreground of RetinaNet's own matcher (0.5, plus each GT's best anchor)
    batch = synthetic_batch(1)
    iou = candidate_anchors(stock, batch, assigner="iou")
    features = stock.backbone(stock.preprocess_image(batch).tensor)
    anchors = stock.anchor_generator([features[f] for f in stock.head_in_features])
    labels, boxes = stock.label_anchors(anchors, [batch[0]["instances"]])
    fg = (labels[0] >= 0) & (labels[0] < stock.num_classes)
    assert torch.equal(iou.gt_boxes, boxes[0][fg])


def test_anchor_figures(clean_anchors_model, tmp_path):
    batch = synthetic_batch(1)
    cand = candidates_of_image(candidate_anchors(clean_anchors_model, batch), 0)
    gt = batch[0]["instances"].gt_boxes.tensor.numpy()
    image = batch[0]["image"].permute(1, 2, 0).numpy()
    region = (0, 0, 64, 64)
    part, part_gt = candidates_in_region(cand, gt, region)
    centres = (part_gt[:, :2] + part_gt[:, 2:]) / 2
    assert len(part_gt) < len(gt) and (centres < 64).all()
    assert len(part.anchors) == np.isin(cand.gt_index, part.gt_index).sum()
    for fig, name in (
        (anchors_figure(image, cand, gt, "soft_labels"), "a.png"),
        (anchors_figure(image, part, part_gt, "weights", boxes="predictions", region=region), "b.png"),
        (iou_scatter_figure(cand), "c.png"),
    ):
        _assert_png(save_figure(fig, str(tmp_path / name)))
    with pytest.raises(ValueError, match="value must be"):
        anchors_figure(image, cand, gt, "loc")


# ---------------------------------------------------------------- SWN


def test_swn_inputs_and_weights_reproduce_the_training_losses(swn_model):
    model = swn_model.train()
    batch = synthetic_batch(2)
    with torch.no_grad():
        samples = swn_samples(model, batch)
    inputs, m, weights = samples.inputs, samples.m, samples.weights
    num_valid, num_pos = len(inputs.cls_loss), int(inputs.pos.sum())
    assert inputs.reg_loss.shape == (num_valid, 4) and m.shape == (num_valid, 2)
    assert weights.reg.shape == (num_pos,) and num_pos > 0
    assert (inputs.iou[~inputs.pos] == 0).all() and (inputs.reg_loss[~inputs.pos] == 0).all()
    # m_cls averaged over all anchors: one classification weight for the batch
    assert torch.allclose(weights.cls, weights.cls[0].expand(num_valid))

    # the SWN sees exactly these inputs in training ...
    seen = {}
    hook = model.swn.register_forward_hook(lambda mod, args, out: seen.update(args=args, out=out))
    normalizer = 0.9 * getattr(model, "loss_normalizer", 100) + 0.1 * max(num_pos, 1)
    try:
        with EventStorage(0):
            losses = model(batch)
    finally:
        hook.remove()
    for mine, theirs in zip((inputs.cls_loss, inputs.reg_loss, inputs.iou, inputs.prob), seen["args"]):
        torch.testing.assert_close(mine, theirs.detach(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(m, seen["out"].detach(), rtol=1e-4, atol=1e-6)
    # ... and the losses are these weights times these losses
    pos = inputs.pos
    torch.testing.assert_close((weights.cls * inputs.cls_loss).sum() / normalizer,
                               losses["loss_cls"].detach(), rtol=1e-5, atol=1e-7)
    torch.testing.assert_close((weights.reg[:, None] * inputs.reg_loss[pos]).sum() / normalizer,
                               losses["loss_box_reg"].detach(), rtol=1e-5, atol=1e-7)


def test_collect_positive_samples(swn_model):
    batch = synthetic_batch(3)
    samples = collect_positive_samples(swn_model.eval(), [batch[:2], batch[2:]])
    num = len(samples.iou)
    assert num > 0
    for t in samples:
        assert t.shape[0] == num
    assert set(samples.image_index.tolist()) == {0, 1, 2}
    assert samples.iou.min() >= 0 and samples.iou.max() <= 1
    assert samples.prob.min() >= 0 and samples.prob.max() <= 1
    assert (samples.cls_loss >= 0).all() and (samples.reg_loss >= 0).all()
    for w in (samples.cls_weight, samples.cls_weight_own, samples.reg_weight):
        assert (w > 0).all()
    torch.testing.assert_close(samples.cls_weight_own, sample_weights(samples.m_cls))
    # the IoU bins partition the positives, and their loss shares add up to 100 %
    bins = assign_bins(samples.iou.numpy(), DEFAULT_IOU_EDGES)
    assert (bins >= 0).all() and np.bincount(bins, minlength=6).sum() == num
    assert loss_share_by_iou(samples).sum() == pytest.approx(100.0)
    # one batch's rows are exactly positive_samples of that batch
    first = positive_samples(swn_model, swn_samples(swn_model, batch[:2]))
    assert torch.equal(first.cls_loss, samples.cls_loss[: len(first.cls_loss)])


def test_stock_retinanet_samples_have_weight_one(swn_model, stock_model):
    stock = stock_model
    stock.load_state_dict({k: v for k, v in swn_model.state_dict().items() if not k.startswith("swn.")})
    base = collect_positive_samples(stock, [synthetic_batch(2)])
    mine = collect_positive_samples(swn_model.eval(), [synthetic_batch(2)])
    torch.testing.assert_close(base.cls_loss, mine.cls_loss)  # same detector weights: same statistics
    for w in (base.cls_weight, base.cls_weight_own, base.reg_weight):
        assert torch.equal(w, torch.ones_like(w))


class _RecordingSWN(torch.nn.Module):
    """Stands in for the SWN: records what it is called with, returns (S, 2) zeros."""

    def __init__(self):
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(1))  # the device is read from the parameters
        self.calls = []

    def forward(self, cls_loss, reg_loss, iou, prob):
        self.calls.append((cls_loss, reg_loss, iou, prob))
        return torch.zeros(len(iou), 2)


def test_sweep_holds_the_other_inputs_at_their_medians():
    # three positives with hand-picked inputs: medians cls 2, iou 0.6, prob 0.5, box loss (1, 1, 2, 4)
    t = torch.tensor
    samples = SWNSamples(
        image_index=t([0, 0, 1]), iou=t([0.2, 0.6, 0.7]), prob=t([0.9, 0.1, 0.5]), cls_loss=t([3.0, 1.0, 2.0]),
        reg_loss=t([[1.0, 0.5, 2.0, 4.0], [0.5, 1.0, 3.0, 5.0], [2.0, 3.0, 1.0, 4.0]]),
        **{k: torch.zeros(3) for k in ("m_cls", "m_reg", "cls_weight", "cls_weight_own", "reg_weight")},
    )
    swn = _RecordingSWN()
    values = t([0.0, 0.5, 1.0])
    assert sweep_swn_input(swn, samples, "iou", values).shape == (3, 2)
    cls_loss, reg_loss, iou, prob = swn.calls[-1]
    assert cls_loss.tolist() == [2.0] * 3 and prob.tolist() == [0.5] * 3 and iou.tolist() == [0.0, 0.5, 1.0]
    assert reg_loss.tolist() == [[1.0, 1.0, 2.0, 4.0]] * 3
    # the 4-d box loss sweeps its total, split in the proportions of the per-coordinate medians 1:1:2:4
    sweep_swn_input(swn, samples, "reg_loss", t([0.0, 8.0, 16.0]))
    cls_loss, reg_loss, iou, prob = swn.calls[-1]
    assert reg_loss.tolist() == [[0.0] * 4, [1.0, 1.0, 2.0, 4.0], [2.0, 2.0, 4.0, 8.0]]
    assert iou.tolist() == pytest.approx([0.6] * 3) and cls_loss.tolist() == [2.0] * 3
    sweep_swn_input(swn, samples._replace(reg_loss=torch.zeros(3, 4)), "reg_loss", t([4.0]))
    assert swn.calls[-1][1].tolist() == [[1.0, 1.0, 1.0, 1.0]]  # all-zero medians: split equally
    with pytest.raises(ValueError, match="name must be one of"):
        sweep_swn_input(swn, samples, "loss", values)


def test_input_sweeps(swn_model):
    # (the figures themselves are drawn by test_plot_swn_weights_cli)
    samples = collect_positive_samples(swn_model.eval(), [synthetic_batch(2)])
    sweeps = input_sweeps(swn_model.swn, samples, steps=5)
    assert {k: (v.shape, m.shape) for k, (v, m) in sweeps.items()} == {
        k: ((5,), (5, 2)) for k in ("cls_loss", "reg_loss", "iou", "prob")
    }
    np.testing.assert_allclose(sweeps["iou"][0], np.linspace(0, 1, 5), atol=1e-6)
    assert sweeps["cls_loss"][0][-1] == pytest.approx(samples.cls_loss.max().item())


# ---------------------------------------------------------------- CLIs


def test_visualize_anchors_cli(clean_anchors_model, tmp_path):
    ckpt = str(tmp_path / "model.pth")
    torch.save({"model": clean_anchors_model.state_dict()}, ckpt)
    out = tmp_path / "out"
    main = _tool_main("visualize_anchors.py")
    main([
        "--config-file", os.path.join(REPO_ROOT, "configs/Synthetic/clean_anchors_retinanet_mnv2_fpn.py"),
        "--checkpoint", ckpt, "--dataset", "synthetic_val", "--image-index", "3", "--out", str(out),
        "--crop", "0", "0", "100", "128", "--dpi", "40", "model.backbone.pretrained=False",
    ])
    for name in ("anchors_soft_labels.png", "anchors_reweighting.png", "anchors_vs_iou.png"):
        _assert_png(out / name)
    with pytest.raises(SystemExit, match="no such file"):
        main(["--config-file", os.path.join(REPO_ROOT, "configs/Synthetic/retinanet_mnv2_fpn.py"),
              "--checkpoint", str(tmp_path / "missing.pth"), "model.backbone.pretrained=False"])


def test_plot_swn_weights_cli(swn_model, clean_anchors_model, tmp_path):
    ckpt, base_ckpt = str(tmp_path / "swn.pth"), str(tmp_path / "base.pth")
    torch.save({"model": swn_model.state_dict()}, ckpt)
    torch.save({"model": clean_anchors_model.state_dict()}, base_ckpt)
    out = tmp_path / "out"
    main = _tool_main("plot_swn_weights.py")
    swn_cfg = os.path.join(REPO_ROOT, "configs/Synthetic/swn_retinanet_mnv2_fpn.py")
    no_imagenet = "model.backbone.pretrained=False"
    main([
        "--config-file", swn_cfg, "--checkpoint", ckpt, "--dataset", "synthetic_val", "--num-images", "3",
        "--batch-size", "2", "--dpi", "40",
        "--baseline-config", os.path.join(REPO_ROOT, "configs/Synthetic/retinanet_mnv2_fpn.py"),
        "--baseline-checkpoint", base_ckpt, "--baseline-opts", no_imagenet, "--out", str(out), no_imagenet,
    ])
    for name in ("swn_fig5_loss_by_iou.png", "swn_weight_vs_inputs.png"):
        _assert_png(out / name)
    saved = np.load(out / "swn_samples.npz")
    assert saved["reg_loss"].shape == (len(saved["iou"]), 4) and set(saved["image_index"]) == {0, 1, 2}
    # a checkpoint without SWN weights is refused: the pictures would show an untrained SWN
    with pytest.raises(SystemExit, match="does not hold the whole"):
        main(["--config-file", swn_cfg, "--checkpoint", base_ckpt, "--dataset", "synthetic_val",
              "--out", str(out), "model.backbone.pretrained=False"])


def test_annotated_inputs(clean_anchors_model):
    cfg = load_synthetic_cfg("clean_anchors_retinanet_mnv2_fpn.py")
    inputs = annotated_inputs(cfg, clean_anchors_model, "synthetic_val", [0, 15])
    dicts = DatasetCatalog.get("synthetic_val")
    for x, d in zip(inputs, (dicts[0], dicts[15])):
        assert x["image"].shape == (3, 128, 128) and x["image"].dtype == torch.uint8
        boxes = [a["bbox"] for a in d["annotations"] if not a.get("iscrowd", 0)]
        assert len(x["instances"]) == len(boxes) > 0
    with pytest.raises(IndexError, match="outside dataset 'synthetic_val' \\(16 images\\)"):
        annotated_inputs(cfg, clean_anchors_model, "synthetic_val", [16])
    with pytest.raises(KeyError, match="not registered"):
        annotated_inputs(cfg, clean_anchors_model, "synthetic_vall", [0])
    with pytest.raises(FileNotFoundError, match="no such file"):
        load_model(cfg, "missing.pth")
