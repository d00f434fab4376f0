"""See what a model detects (detkit.predict, tools/predict.py, tools/visualize_data.py and the demo's
comparison picture): tiling geometry by hand, the cross-tile merge exactly against a whole-image
run with a stand-in "oracle" model on the tree-crown source image's boxes, boxes mapped back through
the test resize, and the CLIs end to end with tiny random-weight models and bad inputs."""
import csv
import json
import os
import runpy

import numpy as np
import pytest
import torch
from detectron2.config import instantiate
from detectron2.data import DatasetCatalog
from detectron2.data import transforms as T
from PIL import Image

from conftest import REPO_ROOT
from detkit.analysis import load_config, load_model
from detkit.data.treecrowns import TREECROWN_SOURCES, deepforest_data_dir, parse_voc_boxes
from detkit.predict import (
    Detections,
    Predictor,
    compare_models_on_image,
    drop_cut_boxes,
    list_images,
    merge_tile_detections,
    predict_tiled,
    read_rgb_image,
    ImageReadError,
    tile_windows,
)
from detkit.visualization import dataset_samples

TREE_CFG = os.path.join(REPO_ROOT, "configs/TreeCrowns/retinanet_mnv2_fpn.py")
NO_IMAGENET = "model.backbone.pretrained=False"


def _tool_main(name):
    # by path: a site-packages "tools" package (from the Detectron2 wheel) shadows this repo's tools/
    return runpy.run_path(os.path.join(REPO_ROOT, "tools", name))["main"]


# ---------------------------------------------------------------- tiling geometry


def test_tile_windows_by_hand():
    # 1000 px, tiles of 400 sharing 100: origins 0, 300 and the last aligned with the border (600)
    w = tile_windows(1000, 350, 400, 100)
    assert w.tolist() == [[0, 0, 400, 350], [300, 0, 700, 350], [600, 0, 1000, 350]]
    assert tile_windows(300, 200, 400, 50).tolist() == [[0, 0, 300, 200]]  # smaller than a tile
    assert len(tile_windows(2299, 2472, 400, 120)) == 8 * 9
    for bad in [dict(tile=0, overlap=0), dict(tile=100, overlap=100), dict(tile=100, overlap=-1)]:
        with pytest.raises(ValueError, match="--tile|--overlap"):
            tile_windows(500, 500, **bad)


def test_drop_cut_boxes_by_hand():
    windows = tile_windows(700, 400, 400, 100)  # x: [0, 400] and [300, 700]
    assert windows.tolist() == [[0, 0, 400, 400], [300, 0, 700, 400]]
    crown_a = [330, 10, 390, 60]  # inside the overlap: seen whole by both tiles, both kept (NMS merges)
    crown_b_cut = [360, 100, 400, 150]  # tile 0 cuts it at x = 400 (IoU 0.57 with the whole box) ...
    crown_b = [360, 100, 430, 150]  # ... tile 1 sees it whole
    crown_c = [250, 200, 400, 260]  # wider than the overlap: cut in both tiles, both kept (NMS decides)
    crown_c1 = [300, 200, 450, 260]  # (the same crown as tile 1 sees it)
    crown_d = [300, 300, 330, 330]  # tile 1 cuts it at its left edge (within 2 px) ...
    tile0 = Detections(np.array([crown_a, crown_b_cut, crown_c, [10, 10, 50, 50], [301, 300, 331, 330]], np.float32),
                       np.array([0.9, 0.8, 0.7, 0.6, 0.5], np.float32), np.zeros(5, np.int64))
    tile1 = Detections(np.array([crown_a, crown_b, crown_c1, crown_d], np.float32) + [[1, 0, 1, 0]] * 4,
                       np.array([0.5, 0.4, 0.3, 0.2], np.float32), np.zeros(4, np.int64))
    kept = drop_cut_boxes([tile0, tile1], windows, 700, 400)
    assert kept[0].boxes.tolist() == [crown_a, crown_c, [10, 10, 50, 50], [301, 300, 331, 330]]
    assert kept[1].boxes.tolist() == (np.array([crown_a, crown_b, crown_c1]) + [1, 0, 1, 0]).tolist()
    merged = merge_tile_detections([tile0, tile1], windows, 700, 400, nms_thresh=0.5)
    # crown_a once (IoU 0.97); crown_c's two halves have IoU 0.49 < 0.5: an object wider than the
    # overlap can come out twice (the README says to choose the overlap above the objects' size)
    assert merged.scores.tolist() == pytest.approx([0.9, 0.7, 0.6, 0.5, 0.4, 0.3])


def _coordinate_image(width, height):
    """Each pixel encodes its position, so a stand-in model can tell where its crop came from."""
    y, x = np.mgrid[0:height, 0:width]
    return np.stack([x % 256, y % 256, (x // 256) * 16 + y // 256], axis=2).astype(np.uint8)


def _crop_origin(crop):
    r, g, b = (int(v) for v in crop[0, 0])
    return (b // 16) * 256 + r, (b % 16) * 256 + g


class OracleModel:
    """A stand-in detector that "detects" the ground-truth boxes visible in a crop (clipped to it,
    as a model's boxes are), each with its own fixed score; ``jitter`` shifts every box by a
    tile-dependent amount (two tiles never give exactly the same box)."""

    def __init__(self, boxes, jitter=0.0):
        self.boxes = boxes.astype(np.float32)
        self.scores = np.linspace(0.2, 0.99, len(boxes)).astype(np.float32)[::-1].copy()
        self.jitter = jitter
        self.calls = []

    def __call__(self, crops):
        self.calls.append(len(crops))
        out = []
        for crop in crops:
            x0, y0 = _crop_origin(crop)
            h, w = crop.shape[:2]
            b = self.boxes - np.array([x0, y0, x0, y0], np.float32)
            b += self.jitter * (((x0 + y0) // 100) % 3 - 1)
            b = b.clip(0, [w, h, w, h])
            visible = np.nonzero((b[:, 2] > b[:, 0]) & (b[:, 3] > b[:, 1]))[0]
            out.append(Detections(b[visible], self.scores[visible], np.zeros(len(visible), np.int64)))
        return out


@pytest.fixture(scope="module")
def source_crowns():
    """The 574 crowns of the tree-crown training source image (2299 x 2472) and an image of that size."""
    stem = TREECROWN_SOURCES["treecrowns_train"]
    boxes, (width, height) = parse_voc_boxes(os.path.join(deepforest_data_dir(), stem + ".xml"))
    return boxes, _coordinate_image(width, height)


@pytest.mark.parametrize("soft_nms", [None, dict(method="linear", sigma=0.5, iou_threshold=0.3, score_threshold=0.001)])
def test_tiled_merge_equals_the_whole_image_on_the_source_crowns(source_crowns, soft_nms):
    boxes, image = source_crowns
    height, width = image.shape[:2]
    oracle = OracleModel(boxes)
    # overlap 120 > the largest crown (108 px): every crown is seen whole by some tile
    tiled = predict_tiled(image, oracle, 400, 120, batch_size=5, soft_nms=soft_nms, progress=False)
    assert oracle.calls == [5] * 14 + [2]  # 72 tiles, 5 at a time
    whole = predict_tiled(image, oracle, 2500, 0, soft_nms=soft_nms, progress=False)  # one window
    assert len(whole) > 500
    np.testing.assert_array_equal(tiled.boxes, whole.boxes)
    np.testing.assert_allclose(tiled.scores, whole.scores, rtol=1e-6)


def test_every_source_crown_is_found_once_even_when_tiles_disagree(source_crowns):
    """Crowns on tile borders (cut in one tile and whole in another, or whole in two) come out once
    even when each tile's boxes are 1 px off the others'."""
    boxes, image = source_crowns
    height, width = image.shape[:2]
    windows = tile_windows(width, height, 400, 120)
    oracle = OracleModel(boxes, jitter=1.0)
    per_tile = [d.shifted(float(w[0]), float(w[1])) for d, w in
                zip(oracle([image[y0:y1, x0:x1] for x0, y0, x1, y1 in windows]), windows)]
    assert sum(len(d) for d in per_tile) > 900  # many crowns are seen (whole or cut) by several tiles
    merged = merge_tile_detections(per_tile, windows, width, height, nms_thresh=0.5)
    whole = predict_tiled(image, OracleModel(boxes), 2500, 0, progress=False)
    assert len(merged) == len(whole) > 500
    np.testing.assert_array_equal(merged.scores, whole.scores)  # the same crowns ...
    assert np.abs(merged.boxes - whole.boxes).max() == 1.0  # ... from tiles that saw them whole


# ---------------------------------------------------------------- a real (tiny, random) model


@pytest.fixture(scope="module")
def tree_model():
    """The tree-crown RetinaNet with random weights (no ImageNet file) and the classification
    prior bias set to 0, so that it detects plenty (scores around 0.5)."""
    torch.manual_seed(0)
    cfg = load_config(TREE_CFG, [NO_IMAGENET])
    model = instantiate(cfg.model).eval()
    with torch.no_grad():
        model.head.cls_score.bias.zero_()
    return cfg, model


@pytest.fixture(scope="module")
def crown_crop(tmp_path_factory):
    """A 300 x 260 crop of the tree-crown source image, as a PNG."""
    stem = TREECROWN_SOURCES["treecrowns_train"]
    path = str(tmp_path_factory.mktemp("img") / "crop.png")
    with Image.open(os.path.join(deepforest_data_dir(), stem + ".png")) as im:
        im.convert("RGB").crop((1000, 1200, 1300, 1460)).save(path)
    return path


def test_tiled_boxes_away_from_other_tiles_are_the_tiles_own(tree_model, crown_crop):
    cfg, model = tree_model
    predictor = Predictor(cfg, model)
    image = read_rgb_image(crown_crop)
    windows = tile_windows(300, 260, 160, 48)
    per_tile = [d.shifted(float(w[0]), float(w[1])) for d, w in
                zip(predictor([image[y0:y1, x0:x1] for x0, y0, x1, y1 in windows]), windows)]
    merged = predictor.predict_tiled(image, 160, 48, batch_size=3, progress=False)
    assert len(merged) > 20
    merged_set = {tuple(b) for b in merged.boxes.tolist()}
    union_set = {tuple(b) for d in per_tile for b in d.boxes.tolist()}
    assert merged_set <= union_set
    checked = 0
    for t, dets in enumerate(per_tile):
        others = np.delete(windows, t, axis=0)
        for box in dets.boxes:
            apart = ((box[2] <= others[:, 0]) | (box[0] >= others[:, 2]) | (box[3] <= others[:, 1])
                     | (box[1] >= others[:, 3])).all()
            if apart:  # touches no other tile: nothing to merge it with
                assert tuple(box.tolist()) in merged_set
                checked += 1
    assert checked > 0
    # with Soft-NMS each tile keeps more, decayed boxes; NMS merges the tiles
    # (40 candidates per level: this random model's scores all pass the 0.05 threshold)
    cfg_soft = load_config(TREE_CFG, [NO_IMAGENET, "test.soft_nms.enabled=True"])
    model.test_topk_candidates, topk = 40, model.test_topk_candidates
    soft = Predictor(cfg_soft, model).predict_tiled(image, 160, 48, batch_size=3, progress=False)
    model.test_topk_candidates = topk
    assert len(soft) > 20 and soft.scores.min() < merged.scores.min()


def test_boxes_are_mapped_back_through_the_test_resize(tree_model, crown_crop):
    cfg, model = tree_model
    image = read_rgb_image(crown_crop)[:160, :160]
    resized = T.ResizeShortestEdge(320, 1000).get_transform(image).apply_image(image)
    plain = Predictor(cfg, model)([resized])[0]
    cfg2 = load_config(TREE_CFG, [NO_IMAGENET])
    cfg2.dataloader.test.mapper.augmentations = [T.ResizeShortestEdge(320, 1000)]
    mapped = Predictor(cfg2, model)([image])[0]
    assert len(mapped) > 5
    np.testing.assert_allclose(mapped.boxes, plain.boxes / 2, atol=1e-4)
    np.testing.assert_array_equal(mapped.scores, plain.scores)


def test_list_images_and_unreadable_files(tmp_path, crown_crop):
    (tmp_path / "d").mkdir()
    Image.open(crown_crop).save(tmp_path / "d" / "a.jpg")
    (tmp_path / "d" / "notes.txt").write_text("x")
    (tmp_path / "empty").mkdir()
    files, problems = list_images([str(tmp_path / "d"), str(tmp_path / "d" / "*.jpg"), str(tmp_path / "*.none"),
                                   str(tmp_path / "empty"), str(tmp_path / "missing.png")])
    assert files == [str(tmp_path / "d" / "a.jpg"), str(tmp_path / "missing.png")]
    assert [p[1] for p in problems] == ["pattern matches no file", problems[1][1]] and "no image" in problems[1][1]
    (tmp_path / "bad.png").write_bytes(b"not a png")
    with pytest.raises(ImageReadError, match="bad.png: cannot read the image"):
        read_rgb_image(str(tmp_path / "bad.png"))
    Image.fromarray(np.full((8, 8), 4000, np.uint16)).save(tmp_path / "deep.png")
    with pytest.raises(ImageReadError, match="deep.png: a 16-bit image"):
        read_rgb_image(str(tmp_path / "deep.png"))


# ---------------------------------------------------------------- CLIs


@pytest.fixture(scope="module")
def tree_checkpoint(tree_model, tmp_path_factory):
    path = str(tmp_path_factory.mktemp("ckpt") / "model.pth")
    torch.save({"model": tree_model[1].state_dict()}, path)
    return path


def test_predict_cli_tiled_with_bad_inputs(tree_checkpoint, crown_crop, tmp_path, capsys):
    (tmp_path / "broken.png").write_bytes(b"\x89PNG broken")
    out = tmp_path / "out"
    main = _tool_main("predict.py")
    with pytest.raises(SystemExit) as exit_info:
        main(["--config-file", TREE_CFG, "--checkpoint", tree_checkpoint, "--output", str(out),
              "--input", crown_crop, str(tmp_path / "broken.png"), str(tmp_path / "nothere.png"),
              "--tile", "160", "--overlap", "48", "--batch-size", "3", "--score-thresh", "0.3",
              "--soft-nms", "--no-progress", NO_IMAGENET, "model.test_topk_candidates=40"])
    assert exit_info.value.code == 1  # the readable image was predicted, the others named
    err = capsys.readouterr()
    assert "predict: 1 images" in err.out
    summary = err.err.strip().splitlines()[-1]
    assert "2 input(s) skipped" in summary and "broken.png: cannot read" in summary and "nothere.png: no such file" in summary
    with open(out / "predictions.csv") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["file", "xmin", "ymin", "xmax", "ymax", "label", "score"]
    assert len(rows) > 10 and {r[5] for r in rows[1:]} == {"tree"} and {r[0] for r in rows[1:]} == {crown_crop}
    boxes = np.array([[float(v) for v in r[1:5]] for r in rows[1:]])
    assert boxes.min() >= 0 and boxes[:, 2].max() <= 300 and boxes[:, 3].max() <= 260
    assert min(float(r[6]) for r in rows[1:]) >= 0.3
    coco = json.load(open(out / "coco_instances_results.json"))
    assert len(coco) == len(rows) - 1 and coco[0]["category_id"] == 0 and len(coco[0]["bbox"]) == 4
    assert json.load(open(out / "images.json")) == [{"id": 0, "file_name": crown_crop, "width": 300, "height": 260}]
    assert Image.open(out / "crop.png").size == (300, 260)


def test_predict_cli_whole_images_and_refused_checkpoint(tree_checkpoint, crown_crop, tmp_path, capsys):
    main = _tool_main("predict.py")
    main(["--config-file", TREE_CFG, "--checkpoint", tree_checkpoint, "--output", str(tmp_path / "o"),
          "--input", os.path.dirname(crown_crop), "--no-progress", "--no-pictures", "--tta",
          "test.aug.min_sizes=[260]", "test.aug.flip=False", NO_IMAGENET])  # exit code 0
    assert "predict: 1 images" in capsys.readouterr().out
    assert not (tmp_path / "o" / "crop.png").exists() and (tmp_path / "o" / "predictions.csv").exists()
    with pytest.raises(SystemExit) as exit_info:  # a RetinaNet checkpoint for a Faster R-CNN config
        main(["--config-file", os.path.join(REPO_ROOT, "configs/TreeCrowns/faster_rcnn_mnv2_fpn.py"),
              "--checkpoint", tree_checkpoint, "--input", crown_crop, "--output", str(tmp_path / "x"), NO_IMAGENET])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    # the error train_net.py --eval-only gives (SafeCheckpointer: what was loaded, what is missing), no traceback
    assert err.startswith("predict: ") and "does not hold the whole" in err and "Traceback" not in err


def test_visualize_data_follows_the_training_mapper(tmp_path):
    cfg = load_config(TREE_CFG, [NO_IMAGENET])
    raw, _ = dataset_samples(cfg, 3, "annotation")
    seen, metadata = dataset_samples(cfg, 3, "dataloader", seed=1)
    assert metadata.thing_classes == ["tree"]
    flips = 0
    for (f1, im1, b1, _), (f2, im2, b2, c2) in zip(raw, seen):
        assert f1 == f2 and len(b1) == len(b2) > 0 and set(c2.tolist()) == {0}
        h, w = im1.shape[:2]
        for hflip in (False, True):  # the config's two random flips
            for vflip in (False, True):
                im, b = im1, b1.copy()
                if hflip:
                    im, b = im[:, ::-1], np.stack([w - b[:, 2], b[:, 1], w - b[:, 0], b[:, 3]], 1)
                if vflip:
                    im, b = im[::-1], np.stack([b[:, 0], h - b[:, 3], b[:, 2], h - b[:, 1]], 1)
                if np.array_equal(im, im2):
                    np.testing.assert_allclose(b2, b, atol=1e-3)
                    flips += hflip or vflip
                    break
            else:
                continue
            break
        else:
            raise AssertionError(f"{f2}: the training image is no flip of the annotated one")
    assert flips > 0
    main = _tool_main("visualize_data.py")
    main(["--config-file", TREE_CFG, "--output", str(tmp_path), "--num-images", "2", NO_IMAGENET])
    main(["--config-file", TREE_CFG, "--output", str(tmp_path / "a"), "--num-images", "1", "--source",
          "annotation", NO_IMAGENET])
    assert len(os.listdir(tmp_path / "a")) == 1 and len([f for f in os.listdir(tmp_path) if f.endswith(".png")]) == 2
    with pytest.raises(SystemExit, match="--num-images 0"):
        main(["--config-file", TREE_CFG, "--output", str(tmp_path), "--num-images", "0"])


def test_compare_models_on_image_with_a_method_checkpoint_in_its_stock_model(tmp_path):
    """The demo's picture with tiny synthetic models; an SWN checkpoint runs in the stock RetinaNet."""
    syn = os.path.join(REPO_ROOT, "configs/Synthetic")
    torch.manual_seed(0)
    paths = {}
    for name in ("retinanet_mnv2_fpn", "swn_retinanet_mnv2_fpn"):
        model = instantiate(load_config(os.path.join(syn, name + ".py"), [NO_IMAGENET]).model)
        with torch.no_grad():
            model.head.cls_score.bias.zero_()
        paths[name] = str(tmp_path / f"{name}.pth")
        torch.save({"model": model.state_dict()}, paths[name])
    stock = os.path.join(syn, "retinanet_mnv2_fpn.py")
    out = compare_models_on_image(
        [("baseline", stock, paths["retinanet_mnv2_fpn"]), ("SWN", stock, paths["swn_retinanet_mnv2_fpn"])],
        str(tmp_path / "p.png"), opts=[NO_IMAGENET], score_thresh=0.4, dpi=40,
    )
    with open(out, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    # and the demo's default image is the test set's most crowded one
    counts = [len(d["annotations"]) for d in DatasetCatalog.get("synthetic_val")]
    assert max(counts) > min(counts)
    with pytest.raises(IndexError, match="outside dataset"):
        compare_models_on_image([("b", stock, paths["retinanet_mnv2_fpn"])], str(tmp_path / "q.png"),
                                opts=[NO_IMAGENET], index=999)


def test_merge_tile_detections_empty():
    windows = tile_windows(500, 500, 300, 50)
    empty = merge_tile_detections([Detections.empty()] * len(windows), windows, 500, 500, 0.5)
    assert len(empty) == 0
    with pytest.raises(ValueError, match="--batch-size"):
        predict_tiled(np.zeros((50, 50, 3), np.uint8), lambda c: [], 40, 8, batch_size=0)
