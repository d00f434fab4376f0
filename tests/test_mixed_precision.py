"""Half precision (AMP): the methods' math stays in float32 whatever the input dtype, the CPU AMP
trainer refuses float16, and (marked `cuda`, skipped without a GPU; run them with
`tools/check_gpu.py`) AMP training, TTA and Soft-NMS on CUDA."""
import math

import pytest
import torch
from detectron2.config import instantiate
from detectron2.structures import Boxes
from detectron2.utils.events import EventStorage

from clean_anchors.cleanliness import rescale_to_sum, reweight, soft_labels
from detkit.engine import CheckedAMPTrainer
from model_utils import load_synthetic_cfg, synthetic_batch

HALF = [torch.float16, torch.bfloat16]
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.mark.parametrize("dtype", HALF)
def test_weights_and_soft_labels_in_half_precision_match_float32(dtype):
    loc = torch.tensor([0.3, 0.8, 1.0, 0.55])  # an IoU of 1: 1 - eps rounds to 1 in half precision
    cls = torch.tensor([1.0, 0.2, 0.9, 0.4])  # a probability of 1
    ref_w, ref_s = reweight(loc, cls, 0.75), soft_labels(loc, cls, 0.75)
    w, s = reweight(loc.to(dtype), cls.to(dtype), 0.75), soft_labels(loc.to(dtype), cls.to(dtype), 0.75)
    assert w.dtype == s.dtype == torch.float32 and torch.isfinite(w).all()
    tol = 1e-2 if dtype == torch.bfloat16 else 2e-3  # the inputs' own rounding
    torch.testing.assert_close(w, ref_w, rtol=tol, atol=tol)
    torch.testing.assert_close(s, ref_s, rtol=tol, atol=tol)


@pytest.mark.parametrize("dtype", HALF)
def test_rescale_to_sum_does_not_overflow_in_half_precision(dtype):
    loss = torch.full((40000,), 8.0, dtype=dtype)  # sums to 320000: beyond float16's 65504
    weights = torch.rand(40000, generator=torch.Generator().manual_seed(0)).to(dtype) + 0.5
    out = rescale_to_sum(loss * weights, loss)
    assert out.dtype == torch.float32 and torch.isfinite(out).all()
    assert out.sum().item() == pytest.approx(320000.0, rel=1e-3)


def test_clean_anchors_loss_is_finite_with_float16_logits():
    """The CleanAnchors RetinaNet loss on float16 head outputs (as under AMP) with large logits:
    finite, and equal to the float32 loss to half-precision accuracy."""
    cfg = load_synthetic_cfg("clean_anchors_retinanet_mnv2_fpn.py")
    model = instantiate(cfg.model)
    g = torch.Generator().manual_seed(0)
    num = 20000
    anchors = [Boxes(torch.rand(num, 2, generator=g).repeat(1, 2) * 100 + torch.tensor([0.0, 0, 20, 20]))]
    logits = torch.randn(1, num, model.num_classes, generator=g) * 4 + 8  # logits >= 8: p ~ 1
    gt_labels = torch.full((num,), model.num_classes)
    gt_labels[:300] = 0
    gt = anchors[0].tensor + torch.randn(num, 4, generator=g)
    deltas = torch.randn(1, num, 4, generator=g) * 0.1
    out = {}
    for dtype in (torch.float32, torch.float16):
        model.loss_normalizer = 100.0
        with EventStorage(0):
            out[dtype] = model.losses(anchors, [logits.to(dtype)], [gt_labels], [deltas.to(dtype)], [gt],
                                      [torch.ones(num, dtype=torch.long)])
    for k in out[torch.float32]:
        assert torch.isfinite(out[torch.float16][k]), k
        torch.testing.assert_close(out[torch.float16][k].float(), out[torch.float32][k], rtol=2e-2, atol=1e-3)


def test_amp_trainer_refuses_a_cpu_model():
    """Detectron2's AMPTrainer asserts CUDA only at its first step; ours says so when it is built."""
    model = torch.nn.Linear(2, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(ValueError, match=r"the model is on the cpu; .*needs CUDA"):
        CheckedAMPTrainer(model, [None], opt, precision=torch.bfloat16)


# --- on a CUDA GPU (tools/check_gpu.py runs these and writes docs/gpu_check.md)


@cuda
@pytest.mark.cuda
@pytest.mark.parametrize(
    "config",
    ["retinanet_mnv2_fpn.py", "clean_anchors_retinanet_mnv2_fpn.py", "swn_retinanet_mnv2_fpn.py",
     "clean_anchors_faster_rcnn_mnv2_fpn.py", "swn_faster_rcnn_mnv2_fpn.py"],
)
def test_amp_training_iterations_on_cuda(config):
    """Three AMP steps as train_net.py's AMPTrainer makes them (float16 autocast, GradScaler)."""
    cfg = load_synthetic_cfg(config)
    model = instantiate(cfg.model).cuda().train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    scaler = torch.amp.GradScaler("cuda")
    with EventStorage(0):
        for _ in range(3):
            with torch.autocast("cuda", dtype=torch.float16):
                losses = model(synthetic_batch(2))  # the model moves images and boxes to its device
            assert all(torch.isfinite(v) for v in losses.values()), losses
            opt.zero_grad()
            scaler.scale(sum(losses.values())).backward()
            scaler.step(opt)
            scaler.update()
    assert all(torch.isfinite(p).all() for p in model.parameters())


@cuda
@pytest.mark.cuda
@pytest.mark.parametrize("dtype", HALF)
def test_pure_functions_in_half_precision_on_cuda(dtype):
    g = torch.Generator().manual_seed(0)
    loc, cls = torch.rand(5000, generator=g), torch.rand(5000, generator=g)
    loc[0] = cls[1] = 1.0
    ref = reweight(loc, cls, 0.75), soft_labels(loc, cls, 0.75)
    got = reweight(loc.cuda().to(dtype), cls.cuda().to(dtype), 0.75), soft_labels(loc.cuda().to(dtype), cls.cuda().to(dtype), 0.75)
    for a, b in zip(got, ref):
        assert torch.isfinite(a).all()
        torch.testing.assert_close(a.cpu(), b, rtol=2e-2, atol=2e-2)


@cuda
@pytest.mark.cuda
def test_tta_and_soft_nms_on_cuda():
    from detkit.modeling.nms_inference import soft_nms_inference
    from detkit.modeling.soft_nms import soft_nms_options
    from detkit.modeling.tta import build_tta_model
    from detkit.engine import TEST_DEFAULTS
    from omegaconf import OmegaConf

    cfg = load_synthetic_cfg("retinanet_mnv2_fpn.py")
    model = instantiate(cfg.model).cuda().eval()
    inputs = [{k: v for k, v in d.items() if k != "instances"} for d in synthetic_batch(2)]
    test = OmegaConf.merge(OmegaConf.create(TEST_DEFAULTS), {"aug": {"min_sizes": [96, 128], "max_size": 400}})
    with torch.no_grad():
        plain = model(inputs)
        tta = build_tta_model(model, test)(inputs)
        with soft_nms_inference(model, **soft_nms_options(OmegaConf.create({"enabled": True}))):
            soft = model(inputs)
    for outputs in (plain, tta, soft):
        for o in outputs:
            assert o["instances"].pred_boxes.tensor.device.type == "cuda"
            assert torch.isfinite(o["instances"].scores).all()
