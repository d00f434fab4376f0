"""tools/export_stock.py: a CleanAnchors and an SWN checkpoint exported as stock Detectron2
checkpoints load into the stock RetinaNet with Detectron2's own checkpointer and go through
Detectron2's TorchScript tracing (detectron2.export.TracingAdapter + torch.jit.trace, as its
tools/deploy/export_model.py does) like the stock model's, with the method model's detections."""
import importlib.util
import os

import pytest
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import LazyConfig, instantiate
from detectron2.export import TracingAdapter
from detectron2.modeling import RetinaNet

from conftest import REPO_ROOT
from detkit.engine import load_checked_config

OPTS = ["model.backbone.pretrained=False", "model.test_score_thresh=0.0"]  # random init: detections at 0


def _tool():
    spec = importlib.util.spec_from_file_location("export_stock", os.path.join(REPO_ROOT, "tools", "export_stock.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _traced_detections(model, image):
    adapter = TracingAdapter(model, [{"image": image}])
    with torch.no_grad():
        traced = torch.jit.trace(adapter, (image,), check_trace=False)
        out = adapter.outputs_schema(traced(image))
    return out[0]["instances"]


@pytest.mark.parametrize("config, dropped_swn", [
    ("configs/TreeCrowns/clean_anchors_retinanet_mnv2_fpn.py", False),
    ("configs/TreeCrowns/swn_retinanet_mnv2_fpn.py", True),
])
def test_exported_checkpoint_traces_like_a_stock_one(tmp_path, capsys, config, dropped_swn):
    config = os.path.join(REPO_ROOT, config)
    cfg = load_checked_config(config, OPTS, train=False, check_data=False)
    torch.manual_seed(0)
    method = instantiate(cfg.model).eval()
    with torch.no_grad():  # spread the fresh head's scores (all ~0.01): no near-ties in the top 100
        method.head.cls_score.weight.normal_(0, 1.0)
    src, out = str(tmp_path / "model_final.pth"), str(tmp_path / "export" / "stock.pth")
    torch.save({"model": method.state_dict(), "iteration": 5}, src)

    assert _tool().main(["--config-file", config, "--checkpoint", src, "--output", out, *OPTS]) == 0
    printed = capsys.readouterr().out
    exported = torch.load(out, weights_only=True)["model"]
    if dropped_swn:
        from swn.checkpoint import drop_swn_parameters

        expected, dropped = drop_swn_parameters(method.state_dict())
        assert dropped and f"dropped {len(dropped)} method-only weights" in printed
    else:  # CleanAnchors: already the stock network, every weight kept
        expected = method.state_dict()
        assert "dropped 0 method-only weights" in printed
    assert exported.keys() == expected.keys() and all(torch.equal(exported[k], expected[k]) for k in expected)

    # the exported config builds Detectron2's own RetinaNet, and Detectron2's checkpointer loads the file
    stock_cfg = LazyConfig.load(str(tmp_path / "export" / "stock.yaml"))
    stock = instantiate(stock_cfg.model)
    assert type(stock) is RetinaNet
    DetectionCheckpointer(stock).load(stock_cfg.train.init_checkpoint, checkpointables=[])
    stock.eval()

    torch.manual_seed(1)
    image = torch.randint(0, 256, (3, 128, 160), dtype=torch.uint8)
    traced = _traced_detections(stock, image)
    with torch.no_grad():
        eager = method([{"image": image}])[0]["instances"]
    assert len(traced) == len(eager) > 0
    torch.testing.assert_close(traced.scores, eager.scores, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(traced.pred_boxes.tensor, eager.pred_boxes.tensor, rtol=1e-4, atol=1e-3)
    assert torch.equal(traced.pred_classes, eager.pred_classes)


def test_export_refuses_a_checkpoint_of_another_model(tmp_path, capsys):
    cfg = load_checked_config(os.path.join(REPO_ROOT, "configs/TreeCrowns/retinanet_mnv2_fpn.py"), OPTS,
                              train=False, check_data=False)
    src = str(tmp_path / "a.pth")
    state = instantiate(cfg.model).state_dict()
    state.pop(next(k for k in state if k.startswith("head.")))
    torch.save({"model": state}, src)
    code = _tool().main(["--config-file", os.path.join(REPO_ROOT, "configs/TreeCrowns/swn_retinanet_mnv2_fpn.py"),
                         "--checkpoint", src, "--output", str(tmp_path / "b.pth"), *OPTS])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "lacks 1 weights of the stock model (head." in err
    assert not os.path.exists(tmp_path / "b.pth")
