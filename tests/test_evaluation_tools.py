"""Evaluation beyond AP: proposal recall at 100/300/1000, the confidence-vs-IoU analysis of
NoisyAnchors Table 7 and PR curves from COCOeval's precision array."""
import importlib.util
import json
import math
import os
import pickle

import numpy as np
import pytest
import torch
from detectron2.config import LazyConfig, instantiate
from detectron2.data import DatasetCatalog, MetadataCatalog, build_detection_test_loader
from detectron2.evaluation import COCOEvaluator, inference_on_dataset
from detectron2.structures import Boxes, Instances
from pycocotools.coco import COCO

from detkit.data.coco_files import coco_dict, write_json_atomic
from detkit.evaluation import (
    ProposalRecallEvaluator,
    build_proposal_recall_evaluator,
    coco_precision,
    iou_metrics,
    confidence_iou_analysis,
    iou_with_matched_gt,
    pearson,
    plot_pr_curves,
    pr_curve,
    proposal_recall,
    top_fraction_stats,
    write_pr_curves,
)
from detkit.evaluation.proposal_recall import check_post_nms_topk

from conftest import REPO_ROOT
from model_utils import load_synthetic_cfg


def load_tool(name):
    spec = importlib.util.spec_from_file_location(name, os.path.join(REPO_ROOT, "tools", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ---------------------------------------------------------------- pure functions (Table 7)


def test_pearson_matches_numpy():
    rng = np.random.default_rng(0)
    x = rng.normal(size=50)
    y = 0.3 * x + rng.normal(size=50)
    assert pearson(torch.tensor(x), torch.tensor(y)) == pytest.approx(np.corrcoef(x, y)[0, 1], abs=1e-12)
    assert pearson([1, 2, 3, 4], [2, 4, 6, 8]) == pytest.approx(1.0)
    assert pearson([1, 2, 3, 4], [8, 6, 4, 2]) == pytest.approx(-1.0)
    assert math.isnan(pearson([1, 1, 1], [1, 2, 3]))  # zero variance
    assert math.isnan(pearson([1.0], [2.0]))
    with pytest.raises(ValueError, match="3 values, y has 2"):
        pearson([1, 2, 3], [1, 2])


def test_top_fraction_stats_by_hand():
    scores = torch.tensor([0.1, 0.9, 0.5, 0.7, 0.3])
    ious = torch.tensor([0.2, 0.6, 0.9, 0.8, 0.0])
    s = top_fraction_stats(scores, ious, fraction=0.4)  # top ceil(2) = scores 0.9, 0.7
    assert s["predictions"] == 5 and s["top"] == 2
    assert s["mean_confidence"] == pytest.approx(0.8)
    assert s["mean_iou"] == pytest.approx(0.7)
    assert s["pearson"] == pytest.approx(-1.0)  # 0.9 -> 0.6, 0.7 -> 0.8
    assert s["pearson_all"] == pytest.approx(np.corrcoef(scores.numpy(), ious.numpy())[0, 1], abs=1e-6)

    rng = np.random.default_rng(1)
    scores, ious = rng.random(100), rng.random(100)
    top = np.argsort(-scores)[:7]  # 0.07 * 100 = 7.000000000000001 must still keep 7
    s = top_fraction_stats(torch.tensor(scores), torch.tensor(ious), fraction=0.07)
    assert s["top"] == 7
    assert s["mean_confidence"] == pytest.approx(scores[top].mean())
    assert s["mean_iou"] == pytest.approx(ious[top].mean())
    assert s["pearson"] == pytest.approx(np.corrcoef(scores[top], ious[top])[0, 1])
    assert top_fraction_stats(torch.tensor(scores), torch.tensor(ious))["top"] == 2  # default 2 %
    assert top_fraction_stats(torch.tensor([0.5]), torch.tensor([1.0]), 0.02)["top"] == 1  # at least one
    empty = top_fraction_stats(torch.zeros(0), torch.zeros(0))
    assert empty["top"] == 0 and math.isnan(empty["mean_iou"])
    with pytest.raises(ValueError, match="fraction"):
        top_fraction_stats(scores, ious, fraction=0.0)


def test_iou_with_matched_gt_by_hand():
    gt_boxes = torch.tensor([[0.0, 0, 10, 10], [20, 20, 30, 30]])
    gt_classes = torch.tensor([0, 1])
    pred_boxes = torch.tensor([[0.0, 0, 10, 10], [0, 0, 10, 5], [20, 20, 30, 30], [5, 0, 15, 10], [50, 50, 60, 60]])
    pred_classes = torch.tensor([0, 0, 0, 0, 1])
    aware = iou_with_matched_gt(pred_boxes, pred_classes, gt_boxes, gt_classes)
    assert torch.allclose(aware, torch.tensor([1.0, 0.5, 0.0, 1 / 3, 0.0]))
    agnostic = iou_with_matched_gt(pred_boxes, pred_classes, gt_boxes, gt_classes, class_aware=False)
    assert torch.allclose(agnostic, torch.tensor([1.0, 0.5, 1.0, 1 / 3, 0.0]))
    none = iou_with_matched_gt(pred_boxes, pred_classes, torch.zeros(0, 4), torch.zeros(0, dtype=torch.long))
    assert torch.equal(none, torch.zeros(5))


# ---------------------------------------------------------------- proposal recall (Table 5)


@pytest.fixture
def four_box_dataset(tmp_path):
    """One 100x100 image with two small (10x10) and two medium (40x40) boxes, as a registered
    COCO json (metadata only, what COCOEvaluator needs)."""
    boxes = [[0, 0, 10, 10], [50, 0, 10, 10], [0, 50, 40, 40], [50, 50, 40, 40]]  # XYWH
    anns = [{"image_id": 1, "bbox": b, "category_id": 0} for b in boxes]
    path = str(tmp_path / "gt.json")
    write_json_atomic(coco_dict([{"id": 1, "file_name": "a.png", "width": 100, "height": 100}], anns, ["a"]), path)
    name = f"detkit_test_four_boxes_{os.path.basename(tmp_path)}"
    MetadataCatalog.get(name).set(json_file=path, thing_classes=["a"])
    xyxy = torch.tensor([[x, y, x + w, y + h] for x, y, w, h in boxes], dtype=torch.float32)
    return name, path, xyxy


def proposals(boxes, image_size=(100, 100)):
    """Proposals ranked in the given order (objectness decreasing)."""
    inst = Instances(image_size)
    inst.proposal_boxes = Boxes(boxes)
    inst.objectness_logits = torch.arange(len(boxes), 0, -1, dtype=torch.float32)
    return inst


def test_proposal_recall_on_hand_made_proposals(four_box_dataset):
    _, gt_json, gt = four_box_dataset
    coco = COCO(gt_json)
    junk = torch.tensor([[60.0, 10, 70, 20], [15, 15, 25, 25]])  # overlap no ground truth
    perfect = [{"image_id": 1, "proposals": proposals(gt)}]
    r = proposal_recall(perfect, coco, limits=(1, 100, 300, 1000))
    assert list(r)[:4] == ["AR@1", "ARs@1", "ARm@1", "ARl@1"]
    for limit in (100, 300, 1000):
        assert r[f"AR@{limit}"] == r[f"ARs@{limit}"] == r[f"ARm@{limit}"] == pytest.approx(100.0)
        assert math.isnan(r[f"ARl@{limit}"])  # no large objects
    assert r["AR@1"] == pytest.approx(25.0)
    # one small and one medium box found first, then junk, then the other two
    ranked = torch.cat([gt[[0, 2]], junk, gt[[1, 3]]])
    r = proposal_recall([{"image_id": 1, "proposals": proposals(ranked)}], coco, limits=(2, 4, 6))
    assert r["AR@2"] == r["ARs@2"] == r["ARm@2"] == pytest.approx(50.0)
    assert r["AR@4"] == pytest.approx(50.0)
    assert r["AR@6"] == pytest.approx(100.0)
    half = [{"image_id": 1, "proposals": proposals(torch.cat([gt[[0, 2]], junk]))}]
    assert proposal_recall(half, coco)["AR@1000"] == pytest.approx(50.0)
    # a box at IoU 0.63 is recalled at thresholds 0.5, 0.55, 0.6 of 0.5:0.05:0.95
    shifted = gt[[2]].clone()
    shifted[:, [0, 2]] += 9.0  # 40x40 box moved by 9: IoU 31*40 / (2*1600 - 31*40) = 0.633
    r = proposal_recall([{"image_id": 1, "proposals": proposals(shifted)}], coco, limits=(100,))
    assert r["ARm@100"] == pytest.approx(100 * 0.5 * 3 / 10)
    with pytest.raises(ValueError, match="area"):
        proposal_recall(perfect, coco, areas=("tiny",))


def test_proposal_recall_evaluator_process_evaluate(four_box_dataset, tmp_path):
    name, _, gt = four_box_dataset
    evaluator = ProposalRecallEvaluator(name, distributed=False, output_dir=str(tmp_path / "inf"), limits=(1, 3))
    evaluator.reset()
    evaluator.process([{"image_id": 1}], [{"proposals": proposals(gt[[0, 2, 1]])}])
    res = evaluator.evaluate()["box_proposals"]
    assert set(res) == {f"AR{s}@{n}" for s in ("", "s", "m", "l") for n in (1, 3)}
    assert res["AR@1"] == pytest.approx(25.0) and res["AR@3"] == pytest.approx(75.0)
    assert res["ARs@3"] == pytest.approx(100.0) and res["ARm@3"] == pytest.approx(50.0)
    with open(tmp_path / "inf" / "box_proposals.pkl", "rb") as f:
        saved = pickle.load(f)
    assert saved["ids"] == [1] and saved["boxes"][0].shape == (3, 4)


def test_post_nms_topk_must_cover_the_largest_limit(four_box_dataset):
    name = four_box_dataset[0]
    check_post_nms_topk((2000, 1000), (100, 300, 1000))
    check_post_nms_topk(1000, (100, 1000))
    with pytest.raises(ValueError, match=r"post_nms_topk=300 at test time.*model\.proposal_generator\.post_nms_topk"):
        check_post_nms_topk((2000, 300), (100, 300, 1000))
    with pytest.raises(ValueError, match="AR@1000"):
        build_proposal_recall_evaluator(name, post_nms_topk=[1000, 500], distributed=False)
    assert isinstance(build_proposal_recall_evaluator(name, post_nms_topk=[1000, 1000]), ProposalRecallEvaluator)


def test_proposal_network_from_synthetic_config(tmp_path):
    """The RPN-only synthetic config: inference_on_dataset with its evaluator gives AR@100/300/1000
    per size, and AR@100/1000 equal to Detectron2's COCOEvaluator on the same proposals."""
    cfg = load_synthetic_cfg("rpn_mnv2_fpn.py", f"train.output_dir={tmp_path}")
    torch.manual_seed(0)
    model = instantiate(cfg.model).eval()
    evaluator = instantiate(cfg.dataloader.evaluator)
    assert isinstance(evaluator, ProposalRecallEvaluator)
    loader = build_detection_test_loader(
        dataset=DatasetCatalog.get("synthetic_val")[:3], mapper=instantiate(cfg.dataloader.test.mapper), num_workers=0
    )
    res = inference_on_dataset(model, loader, evaluator)["box_proposals"]
    assert set(res) == {f"AR{s}@{n}" for s in ("", "s", "m", "l") for n in (100, 300, 1000)}
    assert all(0 <= v <= 100 for k, v in res.items() if not k.startswith("ARl"))
    assert res["AR@1000"] > 0
    assert os.path.isfile(tmp_path / "inference" / "box_proposals.pkl")

    reference = COCOEvaluator("synthetic_val", distributed=False)
    reference.reset()
    reference._predictions = evaluator._predictions
    upstream = reference.evaluate()["box_proposals"]
    assert set(upstream) < set(res)
    for key, value in upstream.items():
        assert (math.isnan(value) and math.isnan(res[key])) or res[key] == value, key


# ---------------------------------------------------------------- confidence vs IoU (Table 7)


def test_confidence_iou_analysis_on_random_synthetic_retinanet():
    # a fresh head scores every anchor ~0.01 (prior_prob), below the 0.05 test threshold
    cfg = load_synthetic_cfg("retinanet_mnv2_fpn.py", "model.test_score_thresh=0.0")
    torch.manual_seed(0)
    model = instantiate(cfg.model)
    dicts = DatasetCatalog.get("synthetic_val")[:2]
    r = confidence_iou_analysis(
        model, dicts, instantiate(cfg.dataloader.test.mapper), top_fraction=0.02, return_detections=True
    )
    assert model.test_nms_thresh == 0.5 and model.max_detections_per_image == 100  # restored
    before, after = r["before_nms"], r["after_nms"]
    assert r["images"] == 2 and 0 < after["predictions"] <= 200 < before["predictions"]
    assert before["top"] == math.ceil(0.02 * before["predictions"])
    for key in ("mean_confidence", "mean_iou", "pearson", "pearson_all"):
        assert math.isfinite(before[key]), key
    for key in ("mean_confidence", "mean_iou", "pearson_all"):  # the 4 top ones after NMS all have IoU 0 here
        assert math.isfinite(after[key]), key
    for stats in (before, after):
        assert 0 <= stats["mean_iou"] <= 1 and 0 < stats["mean_confidence"] < 1
    # the after-NMS detections are a subset of the before-NMS candidates, image by image
    for b, a in zip(r["detections"]["before_nms"], r["detections"]["after_nms"]):
        assert len(b) > len(a) > 0
        cand = torch.cat([b.pred_boxes.tensor, b.scores[:, None], b.pred_classes[:, None].float()], 1)
        kept = torch.cat([a.pred_boxes.tensor, a.scores[:, None], a.pred_classes[:, None].float()], 1)
        assert (kept[:, None, :] == cand[None, :, :]).all(-1).any(1).all()
        assert ((b.gt_iou >= 0) & (b.gt_iou <= 1)).all()


def test_analyze_confidence_iou_cli(tmp_path, capsys):
    cfg = load_synthetic_cfg("retinanet_mnv2_fpn.py")
    torch.manual_seed(0)
    model = instantiate(cfg.model)
    ckpt = str(tmp_path / "model.pth")
    torch.save({"model": model.state_dict()}, ckpt)
    out = str(tmp_path / "t7.json")
    tool = load_tool("analyze_confidence_iou")
    tool.main([
        "--config-file", os.path.join(REPO_ROOT, "configs/Synthetic/retinanet_mnv2_fpn.py"),
        "--checkpoint", f"a={ckpt}", "--checkpoint", f"b={ckpt}", "--num-images", "1", "--json", out,
        "model.backbone.pretrained=False", "model.test_score_thresh=0.0",
    ])
    printed = capsys.readouterr().out
    assert "| a " in printed and "| b " in printed and "before NMS: mean conf" in printed
    with open(out) as f:
        results = json.load(f)
    assert results["a"]["before_nms"] == results["b"]["before_nms"]  # same weights, same numbers
    assert results["a"]["dataset"] == "synthetic_val" and results["a"]["images"] == 1
    with pytest.raises(SystemExit):
        tool.main(["--checkpoint", f"a={ckpt}", "--checkpoint", f"a={ckpt}"])  # names must differ


def test_analyze_confidence_iou_says_why_a_model_without_detections_gives_nan(tmp_path, capsys):
    # a fresh head scores every anchor ~0.01 (prior_prob): nothing above the config's 0.05
    cfg = load_synthetic_cfg("retinanet_mnv2_fpn.py")
    torch.manual_seed(0)
    ckpt = str(tmp_path / "model.pth")
    torch.save({"model": instantiate(cfg.model).state_dict()}, ckpt)
    tool = load_tool("analyze_confidence_iou")
    results = tool.main(["--config-file", os.path.join(REPO_ROOT, "configs/Synthetic/retinanet_mnv2_fpn.py"),
                         "--checkpoint", f"fresh={ckpt}", "--num-images", "1", "model.backbone.pretrained=False"])
    printed = capsys.readouterr().out
    assert results["fresh"]["before_nms"]["predictions"] == 0 and "nan" in printed
    assert ("Note: fresh: the model made no detections above model.test_score_thresh=0.05 on the 1 images" in printed
            and "e.g. model.test_score_thresh=0.0 on the command line" in printed)
    # a wrong override is one line, before any model is built
    with pytest.raises(SystemExit) as exit_info:
        tool.main(["--config-file", os.path.join(REPO_ROOT, "configs/Synthetic/retinanet_mnv2_fpn.py"),
                   "--checkpoint", ckpt, "model.test_score_thresh=high"])
    assert exit_info.value.code == 2
    assert "model.test_score_thresh must be a number" in capsys.readouterr().err


# ---------------------------------------------------------------- PR curves (Fig. 2)


def two_box_gt(tmp_path):
    """One 100x100 image, two 40x40 ("medium") boxes of class 1, none of class 2."""
    anns = [{"image_id": 1, "bbox": [0, 0, 40, 40], "category_id": 0},
            {"image_id": 1, "bbox": [50, 50, 40, 40], "category_id": 0}]
    path = str(tmp_path / "gt.json")
    write_json_atomic(coco_dict([{"id": 1, "file_name": "a.png", "width": 100, "height": 100}], anns, ["a", "b"]), path)
    return path


def det(bbox, score, category_id=1, image_id=1):
    return {"image_id": image_id, "category_id": category_id, "bbox": bbox, "score": score}


def test_pr_curve_on_hand_made_detections(tmp_path):
    gt = two_box_gt(tmp_path)
    perfect = coco_precision(gt, [det([0, 0, 40, 40], 0.9), det([50, 50, 40, 40], 0.8)])
    assert perfect.shape == (10, 101, 2, 4, 3)
    for iou in ("0.5", "0.75", "0.5:0.95"):
        recall, precision = pr_curve(perfect, iou=iou)
        assert np.allclose(recall, np.linspace(0, 1, 101)) and np.allclose(precision, 1.0)
    assert np.isnan(pr_curve(perfect, area="small")[1]).all()  # no small ground truth

    # ranked TP (0.9), FP (0.8), TP (0.7): precision 1 up to recall 0.5, then 2/3
    path = str(tmp_path / "res.json")
    with open(path, "w") as f:
        json.dump([det([0, 0, 40, 40], 0.9), det([0, 55, 40, 40], 0.8), det([50, 50, 40, 40], 0.7)], f)
    p = coco_precision(gt, path)
    _, prec = pr_curve(p, iou="0.5", area="medium", max_det=100)
    assert np.allclose(prec[:51], 1.0) and np.allclose(prec[51:], 2 / 3)
    _, prec = pr_curve(p, iou="0.5", max_det=1)  # only the top detection of the image counts
    assert np.allclose(prec[:51], 1.0) and np.allclose(prec[51:], 0.0)
    _, prec = pr_curve(coco_precision(gt, []), iou="0.5")
    assert np.allclose(prec, 0.0)  # no detections at all
    with pytest.raises(ValueError, match="iou"):
        pr_curve(p, iou="0.6")
    with pytest.raises(ValueError, match="shape"):
        pr_curve(p[:, :, :, :2], iou="0.5")


def test_curve_mean_is_coco_ap(tmp_path):
    from pycocotools.cocoeval import COCOeval

    gt = two_box_gt(tmp_path)
    rng = np.random.default_rng(0)
    results = [det([float(x) for x in rng.uniform(0, 60, 2)] + [40.0, 40.0], float(rng.random())) for _ in range(6)]
    results += [det([1, 1, 40, 40], 0.5), det([50, 52, 38, 40], 0.4)]
    coco_gt = COCO(gt)
    e = COCOeval(coco_gt, coco_gt.loadRes(results), "bbox")
    e.evaluate(), e.accumulate(), e.summarize()
    p = coco_precision(gt, results)
    assert 100 * np.nanmean(pr_curve(p, "0.5:0.95")[1]) == pytest.approx(100 * e.stats[0])
    assert np.nanmean(pr_curve(p, "0.5")[1]) == pytest.approx(e.stats[1])
    assert np.nanmean(pr_curve(p, "0.75")[1]) == pytest.approx(e.stats[2])
    assert np.nanmean(pr_curve(p, "0.5:0.95", area="medium")[1]) == pytest.approx(e.stats[4])


def test_plot_and_write_pr_curves_for_run_folders(tmp_path, capsys):
    """Two fake train_net.py run folders on synthetic_val (config.yaml + COCOEvaluator results):
    perfect detections and jittered ones."""
    cfg = load_synthetic_cfg("retinanet_mnv2_fpn.py")
    DatasetCatalog.get("synthetic_val")  # writes the dataset
    with open(MetadataCatalog.get("synthetic_val").json_file) as f:
        gt = json.load(f)
    rng = np.random.default_rng(0)
    runs = []
    for name, jitter in (("exact", 0.0), ("jittered", 3.0)):
        out = tmp_path / name
        os.makedirs(out / "inference")
        LazyConfig.save(cfg, str(out / "config.yaml"))
        res = [
            det([v + float(rng.normal(0, jitter)) for v in a["bbox"]], float(rng.random()), a["category_id"], a["image_id"])
            for a in gt["annotations"]
        ]
        with open(out / "inference" / "coco_instances_results.json", "w") as f:
            json.dump(res, f)
        runs.append(str(out))

    png = write_pr_curves(runs, str(tmp_path / "figs" / "pr.png"))
    with open(png, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    assert os.path.getsize(png) > 10_000

    tool = load_tool("plot_pr_curves")
    precisions = tool.main([*runs, "--out", str(tmp_path / "pr2.png"), "--names", "A,B"])
    assert np.allclose(pr_curve(precisions["A"], "0.5:0.95")[1], 1.0)  # perfect boxes, any ranking
    assert np.nanmean(pr_curve(precisions["B"], "0.75")[1]) < 1.0
    printed = capsys.readouterr().out
    assert "| A " in printed and "100.00" in printed and "wrote" in printed
    assert os.path.getsize(tmp_path / "pr2.png") > 10_000
    with pytest.raises(FileNotFoundError, match="config.yaml"):
        write_pr_curves([str(tmp_path)], str(tmp_path / "x.png"))

    direct = plot_pr_curves({"one": precisions["A"]}, str(tmp_path / "one.png"))
    assert os.path.getsize(direct) > 10_000


def test_iou_metrics_by_hand(tmp_path):
    """AP / precision / recall at IoU 0.4 (the NEON tree-crown protocol) on hand-made boxes."""
    coco_gt = COCO(two_box_gt(tmp_path))  # GT 1: [0, 0, 40, 40], GT 2: [50, 50, 40, 40] (xywh)
    dets = [
        det([0, 0, 40, 24.5], 0.9),   # IoU 0.6125 with GT 1
        det([50, 50, 40, 40], 0.8),   # IoU 1 with GT 2
        det([0, 0, 40, 18], 0.7),     # IoU 0.45 with GT 1, which is taken: one-to-one, a false positive
        det([200, 200, 10, 10], 0.05),  # below the score threshold: left out of P/R
    ]
    coco_dt = coco_gt.loadRes(dets)
    m = iou_metrics(coco_gt, coco_dt, iou=0.4, score_thresh=0.1)
    assert set(m) == {"AP40", "P40", "R40"}
    assert m["P40"] == pytest.approx(100 * 2 / 3) and m["R40"] == pytest.approx(100.0)
    assert m["AP40"] == pytest.approx(100.0)  # both crowns found by the two top-scoring boxes
    # the same boxes at IoU 0.65: the first box no longer matches; the 0.45 box still does not
    m = iou_metrics(coco_gt, coco_dt, iou=0.65, score_thresh=0.1)
    assert m["P65"] == pytest.approx(100 / 3) and m["R65"] == pytest.approx(50.0)
    # the first box alone, IoU 0.45 at 0.4: a match only without the better box before it
    m = iou_metrics(coco_gt, coco_gt.loadRes([det([0, 0, 40, 18], 0.7)]), iou=0.4, score_thresh=0.0)
    assert m["P40"] == 100.0 and m["R40"] == 50.0
    m = iou_metrics(coco_gt, coco_dt, iou=0.4, score_thresh=0.0)  # the low-score box counts now
    assert m["P40"] == pytest.approx(50.0) and m["R40"] == pytest.approx(100.0)
    m = iou_metrics(coco_gt, coco_dt, iou=0.4, score_thresh=0.95)  # nothing scores that high
    assert math.isnan(m["P40"]) and m["R40"] == 0.0
    with pytest.raises(ValueError, match="iou"):
        iou_metrics(coco_gt, coco_dt, iou=1.2)


def test_iou_metrics_evaluator_adds_its_metrics(four_box_dataset, tmp_path):
    """IoUMetricsCOCOEvaluator = COCOEvaluator + AP40/P40/R40 from the same detections; bad
    settings name their key."""
    from detkit.evaluation import IoUMetricsCOCOEvaluator

    with pytest.raises(ValueError, match=r"dataloader.evaluator.iou=0"):
        IoUMetricsCOCOEvaluator(four_box_dataset[0], iou=0)
    with pytest.raises(ValueError, match=r"dataloader.evaluator.score_thresh=1.5"):
        IoUMetricsCOCOEvaluator(four_box_dataset[0], score_thresh=1.5)
    name, _, xyxy = four_box_dataset
    MetadataCatalog.get(name).thing_dataset_id_to_contiguous_id = {1: 0}
    evaluator = IoUMetricsCOCOEvaluator(name, output_dir=str(tmp_path), tasks=("bbox",), iou=0.4, score_thresh=0.5)
    evaluator.reset()
    inst = Instances((100, 100))
    inst.pred_boxes = Boxes(torch.cat([xyxy, torch.tensor([[70.0, 0, 80, 10]])]))  # 4 crowns + 1 false box
    inst.scores = torch.tensor([0.9, 0.9, 0.9, 0.9, 0.3])
    inst.pred_classes = torch.zeros(5, dtype=torch.int64)
    evaluator.process([{"image_id": 1}], [{"instances": inst}])
    bbox = evaluator.evaluate()["bbox"]
    assert bbox["AP"] == pytest.approx(100.0) and bbox["AP40"] == pytest.approx(100.0)
    # the false box scores below score_thresh=0.5: precision counts the 4 true ones only
    assert bbox["P40"] == pytest.approx(100.0) and bbox["R40"] == pytest.approx(100.0)


def test_iou_metrics_evaluator_no_detections_is_zero_not_nan(four_box_dataset, tmp_path):
    """Detectron2 reports NaN AP for a model without detections; a study's mean would drop it."""
    from detkit.evaluation import IoUMetricsCOCOEvaluator

    name, _, _ = four_box_dataset
    MetadataCatalog.get(name).thing_dataset_id_to_contiguous_id = {1: 0}
    evaluator = IoUMetricsCOCOEvaluator(name, output_dir=str(tmp_path), tasks=("bbox",))
    evaluator.reset()
    inst = Instances((100, 100))
    inst.pred_boxes = Boxes(torch.zeros((0, 4)))
    inst.scores = torch.zeros(0)
    inst.pred_classes = torch.zeros(0, dtype=torch.int64)
    evaluator.process([{"image_id": 1}], [{"instances": inst}])
    bbox = evaluator.evaluate()["bbox"]
    assert bbox["AP"] == 0.0 and bbox["AP50"] == 0.0 and bbox["APs"] == 0.0 and bbox["APm"] == 0.0
    assert math.isnan(bbox["APl"])  # no large ground truth: undefined, as COCOeval says
    assert bbox["AP40"] == 0.0 and bbox["R40"] == 0.0 and math.isnan(bbox["P40"])
