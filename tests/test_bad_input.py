"""Bad input: every case is a clear error (naming the file, the entry, the value and what to do)
or is handled and documented, never silently wrong (README: "Bad input")."""
import json
import logging
import math
import os
import re

import numpy as np
import pytest
import torch
from detectron2.config import instantiate
from detectron2.data import DatasetCatalog, MetadataCatalog, get_detection_dataset_dicts
from detectron2.data.datasets import load_coco_json
from detectron2.engine import default_argument_parser
from detectron2.modeling.box_regression import Box2BoxTransform
from detectron2.structures import BoxMode
from detectron2.utils.events import EventStorage
from PIL import Image

import train_net
from conftest import REPO_ROOT
from detkit.data import DatasetError, register_coco_dataset
from detkit.data.coco_json import check_coco_json
from detkit.data.treecrowns import parse_voc_boxes
from detkit.data.validation import (
    boxes_to_xyxy,
    check_model_classes,
    clip_boxes,
    validate_dataset_dicts,
    validated_dataset_dicts,
)
from model_utils import load_synthetic_cfg

# ----------------------------------------------------------------------------------------------
# helpers: a tiny COCO dataset in tmp_path


def _coco(num_images=2, size=32, boxes_per_image=((4, 4, 10, 12),), classes=("a", "b", "c")):
    """A valid COCO dict: ``num_images`` size x size images, each with the same XYWH boxes."""
    images = [
        {"id": i + 1, "file_name": f"{i}.png", "width": size, "height": size} for i in range(num_images)
    ]
    anns = [
        {"id": len(images) * j + i + 1, "image_id": i + 1, "category_id": 1 + j % len(classes),
         "bbox": list(b), "area": b[2] * b[3], "iscrowd": 0}
        for i in range(num_images)
        for j, b in enumerate(boxes_per_image)
    ]
    cats = [{"id": k + 1, "name": n} for k, n in enumerate(classes)]
    return {"images": images, "annotations": anns, "categories": cats}


def _write_dataset(folder, coco, size=32):
    """Write ``coco`` as folder/coco.json plus a noise PNG per image; returns (json, image_root)."""
    root = folder / "images"
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for im in coco["images"]:
        Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(root / im["file_name"])
    json_file = folder / "coco.json"
    json_file.write_text(json.dumps(coco))
    return str(json_file), str(root)


@pytest.fixture
def registry(request):
    """Register test datasets under unique names; removes them afterwards."""
    names = []

    def register(loader_or_json, image_root=None, classes=None):
        name = re.sub(r"\W", "_", f"bad_input_{request.node.name}_{len(names)}")
        if image_root is None:
            DatasetCatalog.register(name, loader_or_json)
            if classes is not None:
                MetadataCatalog.get(name).set(thing_classes=list(classes))
        else:
            register_coco_dataset(name, loader_or_json, image_root)
        names.append(name)
        return name

    yield register
    for name in names:
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)


def _train_loader(name, *overrides):
    cfg = load_synthetic_cfg(
        "retinanet_mnv2_fpn.py",
        f"dataloader.train.dataset.names={name}",
        "dataloader.train.total_batch_size=2",
        *overrides,
    )
    return instantiate(cfg.dataloader.train)


# ----------------------------------------------------------------------------------------------
# missing or corrupt image files


@pytest.mark.parametrize(
    "damage, message, workers",
    [
        (lambda p: os.remove(p), "image file not found", 1),
        (lambda p: open(p, "wb").write(b"\x89PNG\r\n\x1a\nnot a png at all"), "cannot load this image", 1),
        (lambda p: open(p, "r+b").truncate(60), "cannot load this image", 0),  # cut off mid-stream
    ],
    ids=["missing", "garbage", "truncated"],
)
def test_missing_or_corrupt_image_is_named_even_from_a_loader_worker(tmp_path, registry, damage, message, workers):
    json_file, root = _write_dataset(tmp_path, _coco(num_images=1))
    bad = os.path.join(root, "0.png")
    damage(bad)
    name = registry(json_file, root)
    # num_workers=1: the image is read in a DataLoader worker process; PyTorch re-raises the
    # worker's exception in the main process with the original message and type.
    loader = _train_loader(name, f"dataloader.train.num_workers={workers}")
    with pytest.raises(DatasetError, match=message) as e:
        next(iter(loader))
    assert bad in str(e.value)
    if workers:
        assert "Caught DatasetError in DataLoader worker process 0" in str(e.value)


# ----------------------------------------------------------------------------------------------
# malformed COCO json (users' own datasets: detkit.data.register_coco_dataset)


def _break(coco_edit):
    def edit(c):
        coco_edit(c)
        return c

    return edit


MALFORMED_COCO = {
    "syntax": (None, r"not valid JSON: Expecting ',' delimiter at line 4 column 3"),
    "top level list": (lambda c: [c], "top level is a JSON list"),
    "no images": (_break(lambda c: c.pop("images")), 'no "images" key'),
    "no annotations": (_break(lambda c: c.pop("annotations")), 'no "annotations" key'),
    "no categories": (_break(lambda c: c.pop("categories")), 'no "categories" key'),
    "empty categories": (_break(lambda c: c.update(categories=[])), '"categories" is empty'),
    "image without width": (_break(lambda c: c["images"][1].pop("width")), r'images\[1\] has no "width"'),
    "duplicate image id": (
        _break(lambda c: c["images"][1].update(id=1)), r"images\[1\] has id 1, which images\[0\] has too"
    ),
    "unknown image id": (
        _break(lambda c: c["annotations"][1].update(image_id=99)),
        r"annotations\[1\] \(id 2\) has image_id 99, which is not the id of any entry of \"images\" "
        r"\(ids 1..2\)",
    ),
    "unknown category id": (
        _break(lambda c: c["annotations"][0].update(category_id=7)),
        r"annotations\[0\] \(id 1\) has category_id 7, .* \"categories\" \(ids 1..3\)",
    ),
    "string category id": (
        _break(lambda c: c["annotations"][0].update(category_id="1")),
        r"annotations\[0\].category_id = '1' is not an integer",
    ),
    "bbox of 3 numbers": (
        _break(lambda c: c["annotations"][1].update(bbox=[1, 2, 3])),
        r"annotations\[1\] \(id 2, image_id 2\) has bbox \[1, 2, 3\]; a bbox is a list of 4 finite numbers",
    ),
    "bbox with a string": (
        _break(lambda c: c["annotations"][0].update(bbox=[1, 2, "3", 4])), r"has bbox \[1, 2, '3', 4\]"
    ),
    "bbox with NaN": (_break(lambda c: c["annotations"][0].update(bbox=[1, 2, float("nan"), 4])), "has bbox"),
    "no bbox": (_break(lambda c: c["annotations"][0].pop("bbox")), r'annotations\[0\] has no "bbox"'),
    "no area": (_break(lambda c: c["annotations"][0].pop("area")), "COCOEvaluator needs it"),
    "duplicate annotation id": (
        _break(lambda c: c["annotations"][1].update(id=1)), r"annotations\[1\] has id 1, which annotations\[0\]"
    ),
    "ignore flag": (_break(lambda c: c["annotations"][0].update(ignore=1)), '"ignore": 1'),
}


@pytest.mark.parametrize("case", list(MALFORMED_COCO))
def test_malformed_coco_json_names_file_entry_and_value(tmp_path, registry, case):
    edit, message = MALFORMED_COCO[case]
    json_file, root = _write_dataset(tmp_path, _coco())
    if edit is None:  # a syntax error: a missing comma on line 3
        with open(json_file, "w") as f:
            f.write('{\n  "images": [],\n    "annotations": []\n  "categories": []\n}\n')
    else:
        with open(json_file, "w") as f:
            json.dump(edit(_coco()), f)
    name = registry(json_file, root)
    with pytest.raises(DatasetError, match=message) as e:
        DatasetCatalog.get(name)
    assert str(e.value).startswith(json_file)


def test_missing_json_or_image_folder_is_named(tmp_path, registry):
    json_file, root = _write_dataset(tmp_path, _coco())
    with pytest.raises(DatasetError, match="annotation file not found"):
        check_coco_json(str(tmp_path / "nope.json"))
    with pytest.raises(DatasetError, match=r"image folder .* does not exist"):
        DatasetCatalog.get(registry(json_file, str(tmp_path / "no_images")))


def test_valid_coco_json_loads_exactly_like_detectron2(tmp_path, registry):
    coco = _coco(boxes_per_image=((4, 4, 10, 12), (1, 2, 3, 4)))
    coco["categories"] = [{"id": 10, "name": "x"}, {"id": 20, "name": "y"}, {"id": 30, "name": "z"}]
    for a in coco["annotations"]:
        a["category_id"] *= 10
    json_file, root = _write_dataset(tmp_path, coco)
    name = registry(json_file, root)
    ours = DatasetCatalog.get(name)
    assert ours == load_coco_json(json_file, root, "reference")
    meta = MetadataCatalog.get(name)
    assert meta.thing_classes == ["x", "y", "z"] and meta.json_file == json_file
    assert meta.thing_dataset_id_to_contiguous_id == {10: 0, 20: 1, 30: 2}


# ----------------------------------------------------------------------------------------------
# malformed Pascal-VOC XML (the tree-crown source annotations; more cases in test_treecrowns.py)


@pytest.mark.parametrize(
    "xml_text, message",
    [
        (None, "annotation file not found"),
        ("<annotation><object><bndbox><xmin>1</xmin></bndbox></object></annotation>", "malformed Pascal-VOC"),
        ("<annotation><size><width>9</width><height>9</height></size><object><bndbox>"
         "<xmin>1</xmin><ymin>1</ymin><xmax>5</xmax></bndbox></object></annotation>", "malformed Pascal-VOC"),
        ("not xml at all", "malformed Pascal-VOC"),
    ],
    ids=["missing file", "no size", "no ymax", "not xml"],
)
def test_malformed_voc_xml_names_the_file(tmp_path, xml_text, message):
    xml = tmp_path / "a.xml"
    if xml_text is not None:
        xml.write_text(xml_text)
    with pytest.raises(DatasetError, match=message) as e:
        parse_voc_boxes(str(xml))
    assert str(xml) in str(e.value)


# ----------------------------------------------------------------------------------------------
# boxes with zero/negative area or outside the image


def test_clip_boxes_hand_computed():
    xyxy = boxes_to_xyxy(
        np.array([[2, 3, 4, 5], [-5, 1, 10, 4], [25, 25, 40, 30], [40, 1, 50, 5], [5, 5, 5, 9]], float),
        np.array([1, 0, 0, 0, 0]),
    )
    np.testing.assert_array_equal(xyxy[0], [2, 3, 6, 8])  # XYWH -> XYXY
    clipped, degenerate = clip_boxes(xyxy, np.array([[30.0, 30.0]] * 5))
    np.testing.assert_array_equal(
        clipped, [[2, 3, 6, 8], [0, 1, 10, 4], [25, 25, 30, 30], [30, 1, 30, 5], [5, 5, 5, 9]]
    )
    assert degenerate.tolist() == [False, False, False, True, True]
    # unknown image size: nothing to clip against
    clipped, degenerate = clip_boxes(xyxy, np.full((5, 2), np.inf))
    assert clipped[2].tolist() == [25, 25, 40, 30] and degenerate.tolist() == [False] * 3 + [False, True]


def _record(file_name, boxes, mode=BoxMode.XYWH_ABS, size=32, category_id=0, image_id=1):
    return {
        "file_name": file_name, "image_id": image_id, "width": size, "height": size,
        "annotations": [{"bbox": list(b), "bbox_mode": mode, "category_id": category_id} for b in boxes],
    }


def test_boxes_are_clipped_and_degenerate_ones_dropped_with_one_warning(caplog):
    dicts = [
        _record("ok.png", [(1.0, 1.0, 5.0, 5.0)]),  # float boxes inside the image: nothing to change
        _record("edge.png", [(20, 20, 30, 5), (-4, 2, 10, 10), (3, 3, 0, 9), (2, 2, 4, 4)], image_id=2),
        _record("xyxy.png", [(10, 10, 5, 20), (40, 40, 50, 50)], mode=BoxMode.XYXY_ABS, image_id=3),
    ]
    snapshot = json.dumps(dicts)
    with caplog.at_level(logging.WARNING, logger="detkit.data.validation"):
        out = validate_dataset_dicts(dicts, "toy", ["a"])
    assert json.dumps(dicts) == snapshot  # the input is not modified
    assert out[0] is dicts[0]  # untouched records are not copied
    assert [a["bbox"] for a in out[1]["annotations"]] == [[20, 20, 12, 5], [0, 2, 6, 10], [2, 2, 4, 4]]
    assert out[2]["annotations"] == []  # x1 < x0, and a box wholly outside the 32x32 image
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1
    assert "'toy', 7 boxes: 2 box(es) extend beyond their image" in warnings[0]
    assert "edge.png (image id 2, dataset 'toy'), annotations[0]: bbox [20, 20, 30, 5] in a 32x32 image" in warnings[0]
    assert "3 box(es) of zero or negative area" in warnings[0]
    assert "edge.png (image id 2, dataset 'toy'), annotations[2]: bbox [3, 3, 0, 9], XYWH_ABS" in warnings[0]
    # clean data: returned as is, no warning
    caplog.clear()
    assert validate_dataset_dicts(out, "toy", ["a"]) is out and not caplog.records


def test_a_zero_area_box_would_give_infinite_regression_targets():
    """Why degenerate boxes are dropped: Detectron2's box coder takes log(width / anchor width)."""
    deltas = Box2BoxTransform((1.0, 1.0, 1.0, 1.0)).get_deltas(
        torch.tensor([[0.0, 0.0, 8.0, 8.0]]), torch.tensor([[2.0, 2.0, 2.0, 6.0]])
    )
    assert deltas[0, 2] == -math.inf


def test_validated_dataset_dicts_equals_detectron2_on_clean_data_and_filters_emptied_images(registry):
    assert validated_dataset_dicts("synthetic_train") == get_detection_dataset_dicts("synthetic_train")
    dicts = [_record("a.png", [(1, 1, 5, 5)]), _record("b.png", [(1, 1, 0, 5)], image_id=2), _record("c.png", [], image_id=3)]
    name = registry(lambda: dicts, classes=["a"])
    assert [d["file_name"] for d in validated_dataset_dicts(name)] == ["a.png"]
    no_classes = registry(lambda: dicts)  # no thing_classes: ids need only be non-negative integers
    assert [d["file_name"] for d in validated_dataset_dicts(no_classes)] == ["a.png"]
    kept = validated_dataset_dicts(name, filter_empty=False)
    assert [len(d["annotations"]) for d in kept] == [1, 0, 0]
    only_degenerate = registry(lambda: dicts[1:2], classes=["a"])
    with pytest.raises(DatasetError, match="no image has a usable"):
        validated_dataset_dicts(only_degenerate)


_REMOVE = object()


@pytest.mark.parametrize(
    "key, value, message",
    [
        ("bbox", [1, 2, float("inf"), 4], r"bbox \[1, 2, inf, 4\] has a non-finite coordinate"),
        ("bbox", [1, 2, 3], r"bbox = \[1, 2, 3\], but every annotation needs a bbox of 4 numbers"),
        ("bbox", None, "bbox = None"),
        ("bbox", _REMOVE, "no 'bbox'"),
        ("bbox_mode", _REMOVE, "no 'bbox_mode'"),
        ("bbox_mode", BoxMode.XYXY_REL, "bbox_mode <BoxMode.XYXY_REL: 2> is not supported"),
        ("category_id", 1.5, r"category_id 1.5 is out of range: it must be 0..1"),
        ("category_id", _REMOVE, "no 'category_id'"),
    ],
)
def test_malformed_annotation_in_dataset_dicts_is_named(key, value, message):
    dicts = [_record("a.png", [(1, 1, 5, 5)]), _record("b.png", [(1, 1, 5, 5), (2, 2, 3, 3)], image_id=7)]
    ann = dicts[1]["annotations"][1]
    if value is _REMOVE:
        ann.pop(key)
    else:
        ann[key] = value
    with pytest.raises(DatasetError, match=message) as e:
        validate_dataset_dicts(dicts, "toy", ["a", "b"])
    assert "b.png (image id 7, dataset 'toy'), annotations[1]" in str(e.value)


# ----------------------------------------------------------------------------------------------
# class ids out of range: in the data, and more dataset classes than the model predicts


def test_class_id_out_of_range_names_file_id_and_valid_range(registry):
    dicts = [_record("a.png", [(1, 1, 5, 5)]), _record("b.png", [(1, 1, 5, 5)], category_id=3, image_id=2)]
    name = registry(lambda: dicts, classes=["blob", "stick", "ring"])
    with pytest.raises(DatasetError) as e:
        validated_dataset_dicts(name)
    assert (
        f"b.png (image id 2, dataset '{name}'), annotations[0]: category_id 3 is out of range: it must "
        "be 0..2, the indices into its thing_classes ['blob', 'stick', 'ring']"
    ) in str(e.value)
    dicts[1]["annotations"][0]["category_id"] = -1
    with pytest.raises(DatasetError, match="category_id -1 is out of range"):
        validated_dataset_dicts(name)


def test_dataset_with_more_classes_than_the_model_fails_at_train_start(tmp_path, registry):
    json_file, root = _write_dataset(tmp_path, _coco(classes=("a", "b", "c", "d")))
    name = registry(json_file, root)
    args = default_argument_parser().parse_args(
        [
            "--config-file", os.path.join(REPO_ROOT, "configs/Synthetic/faster_rcnn_mnv2_fpn.py"),
            f"dataloader.train.dataset.names={name}", "dataloader.train.num_workers=0",
            "model.backbone.pretrained=False", f"train.output_dir={tmp_path / 'out'}",
            "train.max_iter=1",  # were the check missing, this run would train and finish
        ]
    )
    with pytest.raises(ValueError, match=(
        rf"Dataset '{name}' has 4 classes \['a', 'b', 'c', 'd'\], but the model predicts 3 "
        r"\(model.roi_heads.num_classes=3\).* Set model.roi_heads.num_classes=4"
    )):
        train_net.main(args)
    assert not os.path.exists(tmp_path / "out" / "model_final.pth")


def test_check_model_classes_for_retinanet_and_class_agnostic_models(registry, caplog):
    class RetinaNetLike(torch.nn.Module):
        num_classes = 3

    name = registry(lambda: [], classes=["a", "b", "c", "d"])
    with pytest.raises(ValueError, match="Set model.num_classes=4"):
        check_model_classes(RetinaNetLike(), name)
    check_model_classes(torch.nn.Linear(1, 1), name)  # an RPN alone: no classes, nothing to check
    fewer = registry(lambda: [], classes=["a", "b"])
    with caplog.at_level(logging.WARNING, logger="detkit.data.validation"):
        check_model_classes(RetinaNetLike(), [fewer])
    assert "has 2 classes but the model predicts 3" in caplog.text


# ----------------------------------------------------------------------------------------------
# an image with no boxes and an image with 1000 boxes, through the mapper into a training step


@pytest.mark.parametrize("config", ["retinanet_mnv2_fpn.py", "faster_rcnn_mnv2_fpn.py"])
def test_training_step_with_an_empty_image_and_a_1000_box_image(tmp_path, config):
    rng = np.random.default_rng(0)
    xy = rng.uniform(0, 100, (1000, 2))
    wh = rng.uniform(2, 28, (1000, 2))
    boxes = np.concatenate([xy, wh], axis=1).round(1).tolist()
    for i in range(2):
        Image.fromarray(rng.integers(0, 255, (128, 128, 3), dtype=np.uint8)).save(tmp_path / f"{i}.png")
    dicts = [
        {**_record(str(tmp_path / "0.png"), boxes, size=128), "annotations": [
            {"bbox": b, "bbox_mode": BoxMode.XYWH_ABS, "category_id": k % 3} for k, b in enumerate(boxes)
        ]},
        _record(str(tmp_path / "1.png"), [], size=128, image_id=2),
    ]
    dicts = validate_dataset_dicts(dicts, "crowded", ["blob", "stick", "ring"])
    cfg = load_synthetic_cfg(config)
    mapper = instantiate(cfg.dataloader.train.mapper)
    batch = [mapper(d) for d in dicts]
    assert [len(b["instances"]) for b in batch] == [1000, 0]  # no per-image cap on the boxes

    torch.manual_seed(0)
    model = instantiate(cfg.model)
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    with EventStorage(0):
        losses = model(batch)
        assert losses and all(torch.isfinite(v) for v in losses.values()), losses
        assert losses["loss_box_reg"] > 0  # the 1000 boxes are matched and regressed
        opt.zero_grad()
        sum(losses.values()).backward()
        opt.step()
    assert all(torch.isfinite(p).all() for p in model.parameters())


# ----------------------------------------------------------------------------------------------
# a config key that does not exist


def test_unknown_config_key_is_an_error_with_a_suggestion(tmp_path):
    args = default_argument_parser().parse_args(
        [
            "--config-file", os.path.join(REPO_ROOT, "configs/Synthetic/retinanet_mnv2_fpn.py"),
            "model.num_clases=4", f"train.output_dir={tmp_path}",
        ]
    )
    # a ConfigError (ValueError): train_net.py prints it as one line, before anything is built
    with pytest.raises(ValueError, match=r"'model.num_clases'.*does not exist.*Did you mean model.num_classes,"):
        train_net.main(args)


# --- config values that would train silently wrong: checked when the model / trainer is built


@pytest.mark.parametrize(
    "config, override, message",
    [
        ("clean_anchors_retinanet_mnv2_fpn.py", "model.topn=0", r"topn \(model.topn\) must be a whole number >= 1, got 0"),
        ("clean_anchors_retinanet_mnv2_fpn.py", "model.topn=-3", r"got -3"),
        ("clean_anchors_rpn_mnv2_fpn.py", "model.proposal_generator.topn=0", r"model.proposal_generator.topn\) must be"),
        ("clean_anchors_retinanet_mnv2_fpn.py", "model.cleanliness.gamma=0", r"gamma \(model.cleanliness.gamma\) must be > 0, got 0"),
        ("clean_anchors_retinanet_mnv2_fpn.py", "model.cleanliness.gamma=-1.0", r"inverts the re-weighting"),
        ("clean_anchors_retinanet_mnv2_fpn.py", "model.cleanliness.eps=0", r"eps \(model.cleanliness.eps\) must be in \(0, 1\)"),
        ("swn_retinanet_mnv2_fpn.py", "model.weighting.lam=-0.5", r"lam \(model.weighting.lam.*must be >= 0, got -0.5"),
        ("swn_retinanet_mnv2_fpn.py", "model.swn.clamp=-2.0", r"clamp \(model.swn.clamp.*must be > 0, or 0 / None for no clamp"),
        ("swn_faster_rcnn_mnv2_fpn.py", "model.roi_heads.box_predictor.weighting.lam=-1", r"must be >= 0, got -1"),
    ],
)
def test_nonsensical_method_settings_are_refused_naming_the_key(config, override, message):
    cfg = load_synthetic_cfg(config, override)
    with pytest.raises(ValueError, match=message):
        instantiate(cfg.model)


def test_topn_reaching_the_anchor_count_warns(caplog):
    from clean_anchors.scores import CleanlinessConfig, match_candidates

    gt = torch.tensor([[0.0, 0, 10, 10]])
    anchors = torch.tensor([[0.0, 0, 10, 10], [0, 0, 20, 20], [5, 5, 15, 15]])
    with caplog.at_level(logging.WARNING):
        matched = match_candidates(gt, anchors, 3, CleanlinessConfig()).matched
    assert (matched == 0).all()  # every anchor a candidate: no background
    assert "topn=3 is at or above this image's 3 anchors" in caplog.text and "Lower model.topn" in caplog.text


@pytest.mark.parametrize(
    "override, message",
    [
        ("train.max_iter=0", r"train.max_iter=0: the number of training iterations must be a whole number >= 1"),
        ("train.max_iter=-5", r"train.max_iter=-5"),
        ("train.clip_grad.max_norm=0", r"train.clip_grad.max_norm=0: .*\(0 would stop learning"),
        ("train.clip_grad.max_norm=-1.0", r"a negative bound reverses the gradient"),
    ],
)
def test_nonsensical_training_settings_stop_before_anything_is_built(tmp_path, override, message):
    out = tmp_path / "run"
    args = default_argument_parser().parse_args(
        ["--config-file", os.path.join(REPO_ROOT, "configs/Synthetic/retinanet_mnv2_fpn.py"),
         override, f"train.output_dir={out}"]
    )
    with pytest.raises(ValueError, match=message):
        train_net.main(args)
    assert not out.exists()  # refused before default_setup writes anything


def test_gradient_clipping_refuses_a_nonpositive_bound():
    from detkit.engine import add_gradient_clipping

    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    for bad in (0, -1.0, float("inf"), float("nan")):
        with pytest.raises(ValueError, match="train.clip_grad.max_norm"):
            add_gradient_clipping(opt, bad)


# --- images the loader would read wrongly, and integer boxes


def _mapper(**kwargs):
    from detkit.data.mapper import DatasetMapper

    return DatasetMapper(is_train=True, augmentations=kwargs.pop("augmentations", []), image_format="RGB",
                         use_instance_mask=False, **kwargs)


def _image_record(path, w, h, box=(2.0, 2.0, 10.0, 10.0)):
    return {"file_name": str(path), "image_id": 7, "width": w, "height": h,
            "annotations": [{"bbox": list(box), "bbox_mode": BoxMode.XYXY_ABS, "category_id": 0}]}


def test_16_bit_image_is_refused_not_clipped(tmp_path):
    path = tmp_path / "deep.png"
    Image.fromarray(np.full((16, 16), 40000, dtype=np.uint16)).save(path)
    assert Image.open(path).mode.startswith("I")
    with pytest.raises(DatasetError, match=r"deep.png \(image id 7\): a 16-bit image .* clip every value above 255"):
        _mapper()(_image_record(path, 16, 16))
    Image.fromarray(np.full((16, 16, 3), 200, dtype=np.uint8)).save(tmp_path / "ok.png")
    assert _mapper()(_image_record(tmp_path / "ok.png", 16, 16))["image"].float().mean() == 200  # 8-bit: as before


def test_exif_rotated_image_is_refused(tmp_path):
    path = tmp_path / "rotated.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees on display
    Image.fromarray(np.zeros((16, 16, 3), dtype=np.uint8)).save(path, exif=exif)
    with pytest.raises(DatasetError, match=r"rotated.jpg \(image id 7\): EXIF orientation 6 .* leaves the annotated boxes"):
        _mapper()(_image_record(path, 16, 16))


def test_oversized_image_is_refused_naming_size_and_key(tmp_path):
    path = tmp_path / "wide.png"
    Image.fromarray(np.zeros((10, 3000, 3), dtype=np.uint8)).save(path)
    with pytest.raises(DatasetError, match=r"wide.png .*3000x10 pixels, more than this loader's max_image_size=2048 "
                                           r"\(dataloader.train.mapper.max_image_size\)"):
        _mapper(max_image_size=2048)(_image_record(path, 3000, 10))
    assert _mapper()(_image_record(path, 3000, 10))["image"].shape == (3, 10, 3000)  # no limit: loads
    cfg = load_synthetic_cfg("retinanet_mnv2_fpn.py")
    assert cfg.dataloader.train.mapper.max_image_size == 2048  # the CPU configs' limit (tree crowns too)
    with pytest.raises(ValueError, match="max_image_size"):
        _mapper(max_image_size=0)


def test_integer_boxes_become_floats_and_survive_a_resize(tmp_path):
    import detectron2.data.transforms as T

    path = tmp_path / "big.png"
    Image.fromarray(np.zeros((1024, 1024, 3), dtype=np.uint8)).save(path)
    record = _image_record(path, 1024, 1024, box=(100, 100, 200, 200))
    record["annotations"].append({"bbox": [500, 500, 3, 3], "bbox_mode": BoxMode.XYWH_ABS, "category_id": 0})
    (fixed,) = validate_dataset_dicts([record], "ints")
    assert [a["bbox"] for a in fixed["annotations"]] == [[100.0, 100.0, 200.0, 200.0], [500.0, 500.0, 3.0, 3.0]]
    assert all(type(v) is float for a in fixed["annotations"] for v in a["bbox"])
    resize = [T.ResizeShortestEdge(128, max_size=128)]  # 1024 -> 128: x 1/8
    boxes = _mapper(augmentations=resize)(fixed)["instances"].gt_boxes.tensor
    torch.testing.assert_close(boxes, torch.tensor([[12.5, 12.5, 25.0, 25.0], [62.5, 62.5, 62.875, 62.875]]))
    # what Detectron2 does with the integer box: truncated to [12, 12, 25, 25], the 3-px box to 0 px
    truncated = _mapper(augmentations=resize)(record)["instances"].gt_boxes.tensor
    assert truncated[0].tolist() == [12.0, 12.0, 25.0, 25.0]
