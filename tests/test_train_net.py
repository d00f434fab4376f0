"""End-to-end runs of train_net.py on the synthetic set: training, evaluation, resume, CLI, DDP."""
import json
import math
import os
import runpy
import sys

import pytest
import torch
from detectron2.engine import default_argument_parser

import train_net
from conftest import REPO_ROOT

FAST = [
    "dataloader.train.total_batch_size=2",
    "dataloader.train.num_workers=0",
    "dataloader.test.num_workers=0",
    "train.log_period=1",
]


def run_main(config, output_dir, *opts, flags=()):
    args = default_argument_parser().parse_args(
        ["--config-file", os.path.join(REPO_ROOT, config), *flags, f"train.output_dir={output_dir}", *FAST, *opts]
    )
    return train_net.main(args)


def read_metrics(output_dir):
    with open(os.path.join(output_dir, "metrics.json")) as f:
        return [json.loads(line) for line in f]


def test_retinanet_train_evaluate_resume(tmp_path):
    out = str(tmp_path / "retina")
    run_main("configs/Synthetic/retinanet_mnv2_fpn.py", out, "train.max_iter=4", "train.checkpointer.period=2")
    assert sorted(f for f in os.listdir(out) if f.endswith(".pth")) == ["model_0000001.pth", "model_0000003.pth", "model_final.pth"]
    iters = [m["iteration"] for m in read_metrics(out) if "total_loss" in m]
    assert iters == [0, 1, 2, 3]
    assert all("grad_norm" in m for m in read_metrics(out) if "total_loss" in m)  # CPU configs clip
    results = json.load(open(os.path.join(out, "eval_results.json")))
    assert results["iterations_trained"] == 4
    assert set(results["results"]["bbox"]) >= {"AP", "AP50", "AP75", "APs", "APm", "APl"}

    # --resume continues after the last checkpoint instead of starting again
    run_main("configs/Synthetic/retinanet_mnv2_fpn.py", out, "train.max_iter=6", flags=["--resume"])
    iters = [m["iteration"] for m in read_metrics(out) if "total_loss" in m]
    assert iters == [0, 1, 2, 3, 4, 5]
    assert all(m["peak_mem_mb"] > 0 for m in read_metrics(out) if "total_loss" in m)  # detkit PeakMemory
    provenance = json.load(open(os.path.join(out, "provenance.json")))  # the first start, then the resume
    assert provenance["mode"] == "train" and [r["resume"] for r in provenance["resumes"]] == [True]

    # --eval-only evaluates the given checkpoint
    eval_out = str(tmp_path / "eval")
    results = run_main(
        "configs/Synthetic/retinanet_mnv2_fpn.py",
        eval_out,
        f"train.init_checkpoint={out}/model_final.pth",
        flags=["--eval-only"],
    )
    assert "AP" in results["bbox"]
    assert os.path.isfile(os.path.join(eval_out, "inference", "coco_instances_results.json"))
    assert not any(f.endswith(".pth") for f in os.listdir(eval_out))
    assert os.path.isfile(os.path.join(eval_out, "provenance_eval.json"))  # never provenance.json
    assert not os.path.exists(os.path.join(eval_out, "provenance.json"))


@pytest.mark.parametrize(
    "config",
    ["configs/Synthetic/faster_rcnn_mnv2_fpn.py", "configs/Synthetic/clean_anchors_faster_rcnn_mnv2_fpn.py"],
)
def test_faster_rcnn_train_and_evaluate(tmp_path, config):
    out = str(tmp_path / "frcnn")
    run_main(config, out, "train.max_iter=3")
    losses = [m for m in read_metrics(out) if "total_loss" in m]
    assert {"loss_rpn_cls", "loss_rpn_loc", "loss_cls", "loss_box_reg"} <= set(losses[-1])
    assert [m["iteration"] for m in losses] == [0, 1, 2]
    assert all(math.isfinite(m[k]) for m in losses for k in m if k.startswith("loss_") or k == "total_loss")
    results = json.load(open(os.path.join(out, "eval_results.json")))["results"]
    assert "AP50" in results["bbox"]


def test_clean_anchors_retinanet_trains_and_logs(tmp_path):
    out = str(tmp_path / "ca")
    run_main("configs/Synthetic/clean_anchors_retinanet_mnv2_fpn.py", out, "train.max_iter=3")
    steps = [m for m in read_metrics(out) if "total_loss" in m]
    assert len(steps) == 3
    for m in steps:
        assert math.isfinite(m["total_loss"])
        assert m["clean_anchors/soft_labels_max"] == pytest.approx(1.0)
        assert 0.0 <= m["clean_anchors/loc_a_min"] <= m["clean_anchors/loc_a_max"] <= 1.0
    assert "AP50" in json.load(open(os.path.join(out, "eval_results.json")))["results"]["bbox"]


@pytest.mark.parametrize(
    "config", ["configs/Synthetic/swn_retinanet_mnv2_fpn.py", "configs/Synthetic/swn_faster_rcnn_mnv2_fpn.py"]
)
def test_swn_models_train_with_two_optimizers_and_resume(tmp_path, config):
    out = str(tmp_path / "swn")
    run_main(config, out, "train.max_iter=3")
    steps = [m for m in read_metrics(out) if "total_loss" in m]
    assert [m["iteration"] for m in steps] == [0, 1, 2]
    for m in steps:
        assert math.isfinite(m["total_loss"]) and math.isfinite(m["loss_swn_reg"])
        assert "swn/cls_weight_pos" in m and "swn/m_reg_max" in m
    ckpt = torch.load(os.path.join(out, "model_final.pth"), map_location="cpu", weights_only=True)
    groups = ckpt["trainer"]["optimizer"]["param_groups"]  # the detector's SGD groups, then the SWN's Adam
    assert any("momentum" in g for g in groups) and "betas" in groups[-1] and "momentum" not in groups[-1]
    run_main(config, out, "train.max_iter=4", flags=["--resume"])
    assert [m["iteration"] for m in read_metrics(out) if "total_loss" in m] == [0, 1, 2, 3]


def test_cli_help(capsys):
    with pytest.raises(SystemExit) as exit_info:
        train_net.invoke_main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for flag in ("--config-file", "--num-gpus", "--num-machines", "--machine-rank", "--dist-url", "--resume", "--eval-only", "--allow-unsafe-checkpoint", "--verbose"):
        assert flag in out


@pytest.mark.slow
def test_demo_script_prints_ap_table(tmp_path, capsys, monkeypatch):
    # tools/demo.py's main in this process (its training runs are train_net.py processes anyway)
    demo = os.path.join(REPO_ROOT, "tools", "demo.py")
    monkeypatch.chdir(REPO_ROOT)
    monkeypatch.setattr(sys, "argv", [demo, "--output-dir", str(tmp_path), "--config-file",
                                      "configs/Synthetic/retinanet_mnv2_fpn.py", "train.max_iter=2", *FAST])
    runpy.run_path(demo)["main"]()
    out = capsys.readouterr().out
    assert "| retinanet_mnv2_fpn |" in out and "box AP50" in out
    assert os.path.isfile(tmp_path / "retinanet_mnv2_fpn" / "model_final.pth")
    assert os.path.isfile(tmp_path / "results.md")
    assert os.path.getsize(tmp_path / "report" / "pr_curves.png") > 0
    assert "## Provenance" in (tmp_path / "report" / "report.md").read_text()
    assert os.path.getsize(tmp_path / "report" / "predictions.png") > 0  # the models on one val image
    assert "## What the models detect" in (tmp_path / "report" / "report.md").read_text()
