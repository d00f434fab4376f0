"""detkit.benchmark (what tools/benchmark.py runs) on tiny synthetic inputs: every section's
functions run and return well-formed results (the numbers themselves are the benchmark's business,
not the test's); the command line's cuda section without a GPU."""
import importlib.util
import math
import os

import numpy as np
import pytest
import torch

from conftest import REPO_ROOT
from detkit.benchmark import assignment, inference, memory, models, stats, tables, training

SYNTHETIC_RETINANETS = [
    "configs/Synthetic/retinanet_mnv2_fpn.py",
    "configs/Synthetic/clean_anchors_retinanet_mnv2_fpn.py",
    "configs/Synthetic/swn_retinanet_mnv2_fpn.py",
]
SYNTHETIC_RCNNS = [
    "configs/Synthetic/faster_rcnn_mnv2_fpn.py",
    "configs/Synthetic/clean_anchors_faster_rcnn_mnv2_fpn.py",
    "configs/Synthetic/swn_faster_rcnn_mnv2_fpn.py",
]
NO_IMAGENET = ["model.backbone.pretrained=False"]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # One thread: on a loaded 2-core machine two OpenMP threads make these tiny steps 5-10x slower.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def cli():
    spec = importlib.util.spec_from_file_location("benchmark", os.path.join(REPO_ROOT, "tools", "benchmark.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_ratio_with_interval():
    ratio, low, high = stats.ratio_with_interval([2.0, 2.2, 2.4, 9.0], [1.0, 1.1, 1.2, 1.0])
    assert ratio == pytest.approx(2.3 / 1.05)  # medians 2.3 and 1.05
    assert low <= ratio <= high
    assert all(math.isnan(v) for v in stats.ratio_with_interval([], []))
    with pytest.raises(ValueError, match="same length"):
        stats.ratio_with_interval([1.0], [1.0, 2.0])


def test_profiled_peak_bytes_counts_live_tensors():
    def fn():
        a = torch.ones(1 << 20)  # 4 MiB
        b = torch.ones(1 << 19)  # 2 MiB while a is alive: the peak
        del a, b
        torch.ones(1 << 20)  # 4 MiB after both were freed

    peak = memory.profiled_peak_bytes(fn)
    assert 6 * 2**20 <= peak < 6.5 * 2**20


def test_models_start_from_the_stock_weights(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # config paths are relative to the repository, not to the working directory
    stock, again, clean, swn = models.build_models(SYNTHETIC_RETINANETS[:1] + SYNTHETIC_RETINANETS, NO_IMAGENET)
    assert again.name == "retinanet_mnv2_fpn (again)"  # the A/A control of --control
    reference = stock.model.state_dict()
    for method in (again, clean, swn):
        state = method.model.state_dict()
        assert all(torch.equal(state[k], v) for k, v in reference.items())
        assert sorted(set(state) - set(reference)) == sorted(k for k in state if k.startswith("swn."))
    assert any(k.startswith("swn.") for k in swn.model.state_dict())
    with pytest.raises(ValueError, match="not the stock model"):
        models.build_models([SYNTHETIC_RETINANETS[0], SYNTHETIC_RCNNS[0]], NO_IMAGENET)
    with pytest.raises(FileNotFoundError, match=f"Synthetic/missing.py: no such file .*relative to {REPO_ROOT}"):
        models.build_models(["configs/Synthetic/missing.py"])


def test_load_batches_resizes_images_and_boxes():
    (as_stored,), (resized,) = (
        models.load_batches("synthetic_train", batch_size=1, num_batches=1, image_size=size)
        for size in (None, (64, 256))
    )
    assert as_stored[0]["image"].shape == (3, 128, 128) and resized[0]["image"].shape == (3, 64, 256)
    assert (resized[0]["height"], resized[0]["width"]) == (64, 256)
    scale = torch.tensor([2.0, 0.5, 2.0, 0.5])
    expected = as_stored[0]["instances"].gt_boxes.tensor * scale
    torch.testing.assert_close(resized[0]["instances"].gt_boxes.tensor, expected)
    with pytest.raises(ValueError, match="not enough"):
        models.load_batches("synthetic_train", batch_size=4, num_batches=100)


@pytest.mark.parametrize(
    "configs, batch_size, iters, warmup",
    [(SYNTHETIC_RETINANETS, 2, 2, 1), (SYNTHETIC_RCNNS, 1, 1, 0)],  # an R-CNN step is slower on a CPU
    ids=["retinanet", "faster_rcnn"],
)
def test_training_and_inference_sections(configs, batch_size, iters, warmup):
    batches = models.load_batches("synthetic_train", batch_size=batch_size, num_batches=2)
    results, runners = training.benchmark_training(
        "g", configs, batches, iters=iters, warmup=warmup, overrides=NO_IMAGENET
    )
    assert [r.model for r in results] == [models.config_name(c) for c in configs]
    assert results[0].ratio == 1.0
    stock = results[0]
    for r, runner in zip(results, runners):
        assert r.iters == iters and r.images_per_iter == batch_size
        # the medians of what each runner measured, one timing per iteration, and their ratios
        assert len(runner.wall) == iters and len(runner.cpu) == iters
        assert r.s_per_iter == pytest.approx(float(np.median(runner.wall))) and r.s_per_iter > 0
        assert r.cpu_s_per_iter == pytest.approx(float(np.median(runner.cpu))) and r.cpu_s_per_iter > 0
        assert r.ratio == pytest.approx(r.s_per_iter / stock.s_per_iter) and r.ratio_low <= r.ratio <= r.ratio_high
        assert r.cpu_ratio == pytest.approx(r.cpu_s_per_iter / stock.cpu_s_per_iter)
        assert r.cpu_ratio_low <= r.cpu_ratio <= r.cpu_ratio_high
        # a training step holds at least the model's weights and gradients
        weights_mb = sum(p.numel() * p.element_size() for p in runner.bench.model.parameters()) / 2**20
        assert r.peak_mb >= 2 * weights_mb and r.peak_ratio == pytest.approx(r.peak_mb / stock.peak_mb)
    infer = inference.benchmark_inference("g", [r.bench for r in runners], batches, iters=1, warmup=0)
    assert [r.checkpoint for r in infer] == [r.model for r in results]
    for r in infer[1:]:
        # a method checkpoint in its stock model: the stock model's detections, as many of them
        assert r.identical_detections and r.detections_compared == infer[1].detections_compared > 0
        assert r.detections_per_image == infer[0].detections_per_image and r.ratio > 0
    assert infer[2].dropped_keys > 0 and infer[1].dropped_keys == 0  # SWN / CleanAnchors
    assert "| g | swn_" in tables.format_training(results) and "yes (" in tables.format_inference(infer)


def test_assignment_section():
    results = assignment.benchmark_assignment(
        SYNTHETIC_RETINANETS, num_boxes=[1, 20], image_size=(96, 128), reps=1, overrides=NO_IMAGENET
    )
    assert [(r.num_boxes, r.model) for r in results] == [
        (n, models.config_name(c)) for n in (1, 20) for c in SYNTHETIC_RETINANETS
    ]
    # every model labels the same anchors: 96x128 with the synthetic RetinaNet's anchors
    assert len({r.num_anchors for r in results}) == 1 and results[0].num_anchors > 1000
    for r in results:
        stock = next(s for s in results if s.num_boxes == r.num_boxes and s.model == results[0].model)
        assert r.label_s > 0 and r.loss_s > 0 and r.label_peak_mb > 0 and r.loss_peak_mb > 0
        assert r.label_time_ratio == pytest.approx(r.label_s / stock.label_s)
        assert r.loss_time_ratio == pytest.approx(r.loss_s / stock.loss_s)
        assert r.label_peak_ratio == pytest.approx(r.label_peak_mb / stock.label_peak_mb)
        assert r.loss_peak_ratio == pytest.approx(r.loss_peak_mb / stock.loss_peak_mb)
    assert "| 20 | clean_anchors_retinanet_mnv2_fpn |" in tables.format_assignment(results)


def test_cuda_section_says_skipped_without_a_gpu(cli, capsys):
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is visible")
    out = cli.run(cli.parse_args(["--sections", "cuda"]))
    assert "skipped" in out["cuda"]["skipped"]
    assert "no CUDA device: skipped" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        cli.parse_args(["--sections", "train,gpu"])
