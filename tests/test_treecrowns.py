import json
import os
import re

import numpy as np
import pytest
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.structures import BoxMode
from PIL import Image

from detkit.data import DatasetError
from detkit.data.coco_files import register_generated_coco
from detkit.data.treecrowns import (
    crop_boxes,
    deepforest_data_dir,
    parse_voc_boxes,
    prepare_treecrowns,
    tile_origins,
)


def test_tile_origins_cover_and_align_to_border():
    assert tile_origins(1249, 400) == [0, 400, 800, 849]
    assert tile_origins(1035, 400) == [0, 400, 635]
    assert tile_origins(400, 400) == [0]
    assert tile_origins(300, 400) == [0]
    assert tile_origins(1000, 400, overlap=100) == [0, 300, 600]


def test_crop_boxes_clips_and_keeps_half_visible():
    boxes = np.array(
        [
            [10, 10, 30, 30],  # inside
            [390, 10, 410, 30],  # half inside (area 400, 200 inside): kept
            [395, 10, 415, 30],  # a quarter inside: dropped
            [500, 500, 520, 520],  # outside
        ],
        dtype=float,
    )
    kept, idx = crop_boxes(boxes, (0, 0, 400, 400), min_visible=0.5)
    assert idx.tolist() == [0, 1]
    np.testing.assert_allclose(kept, [[10, 10, 30, 30], [390, 10, 400, 30]])
    # shifted into the window's coordinates
    kept, idx = crop_boxes(boxes, (400, 0, 800, 400), min_visible=0.5)
    assert idx.tolist() == [1, 2]
    np.testing.assert_allclose(kept, [[0, 10, 10, 30], [0, 10, 15, 30]])


def test_registered_treecrowns_have_expected_tiles():
    train = DatasetCatalog.get("treecrowns_train")
    val = DatasetCatalog.get("treecrowns_val")
    # 2299x2472 -> 6 x 7 tiles; 1249x1035 -> 4 x 3 tiles
    assert len(train) == 42 and len(val) == 12
    for d in train + val:
        assert (d["width"], d["height"]) == (400, 400)
        assert os.path.isfile(d["file_name"])
        for a in d["annotations"]:
            x, y, w, h = a["bbox"]
            assert a["bbox_mode"] == BoxMode.XYWH_ABS and a["category_id"] == 0
            assert w > 0 and h > 0 and x >= 0 and y >= 0 and x + w <= 400 and y + h <= 400
    # every source crown appears in at least one tile (half-visibility keeps all of them somewhere),
    # and every tile box is the visible part of a source crown: mapped back to the source image it
    # lies inside its crown and covers at least half of it
    source, _ = parse_voc_boxes(os.path.join(deepforest_data_dir(), "2019_YELL_2_541000_4977000_image_crop.xml"))
    assert len(source) == 279
    tiles = []
    for d in val:
        x0, y0 = (int(v) for v in re.search(r"_x(\d+)_y(\d+)\.png$", d["file_name"]).groups())
        tiles += [[x + x0, y + y0, x + w + x0, y + h + y0] for x, y, w, h in (a["bbox"] for a in d["annotations"])]
    tiles = np.array(tiles)[:, None, :]  # (M, 1, 4) against (1, 279, 4)
    src = source[None, :, :]
    eps = 1e-3
    inside = ((tiles[..., :2] >= src[..., :2] - eps) & (tiles[..., 2:] <= src[..., 2:] + eps)).all(-1)
    area = lambda b: (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])  # noqa: E731
    visible_part = inside & (area(tiles) >= 0.5 * area(src) - eps)  # (M, 279)
    assert visible_part.any(axis=0).all(), f"crowns missing from every tile: {np.nonzero(~visible_part.any(axis=0))[0]}"
    assert visible_part.any(axis=1).all(), "a tile box that is no source crown's visible part"
    meta = MetadataCatalog.get("treecrowns_val")
    assert meta.thing_classes == ["tree"] and meta.evaluator_type == "coco"
    coco = json.load(open(meta.json_file))
    assert len(coco["images"]) == 12
    assert len(coco["annotations"]) == sum(len(d["annotations"]) for d in val)


def test_tile_pixels_match_source_image():
    data = deepforest_data_dir()
    src = np.asarray(Image.open(os.path.join(data, "2019_YELL_2_541000_4977000_image_crop.png")).convert("RGB"))
    d = [x for x in DatasetCatalog.get("treecrowns_val") if "_x849_y635" in x["file_name"]][0]
    tile = np.asarray(Image.open(d["file_name"]))
    np.testing.assert_array_equal(tile, src[635:1035, 849:1249])


def _fake_source(tmp_path, xml_text, image_size=(64, 48), corrupt=False):
    img = tmp_path / "img.png"
    if corrupt:
        img.write_bytes(b"\x89PNG\r\n\x1a\nthis is not a png")
    else:
        Image.new("RGB", image_size, (10, 200, 30)).save(img)
    xml = tmp_path / "img.xml"
    xml.write_text(xml_text)
    return str(img), str(xml)


GOOD_XML = """<annotation><size><width>64</width><height>48</height></size>
<object><name>Tree</name><bndbox><xmin>5</xmin><ymin>6</ymin><xmax>25</xmax><ymax>30</ymax></bndbox></object>
<object><name>Tree</name><bndbox><xmin>9</xmin><ymin>9</ymin><xmax>9</xmax><ymax>20</ymax></bndbox></object>
</annotation>"""


def test_parse_voc_drops_degenerate_boxes(tmp_path):
    _, xml = _fake_source(tmp_path, GOOD_XML)
    boxes, size = parse_voc_boxes(xml)
    assert size == (64, 48)
    np.testing.assert_allclose(boxes, [[5, 6, 25, 30]])


@pytest.mark.parametrize(
    "xml_text, message",
    [
        ("<annotation><size><width>64</width>", "malformed Pascal-VOC"),
        (GOOD_XML.replace("<xmin>5</xmin>", "<xmin>five</xmin>"), "malformed Pascal-VOC"),
        (GOOD_XML.replace("<bndbox><xmin>5", "<box><xmin>5").replace("30</ymax></bndbox>", "30</ymax></box>"), "has no <bndbox>"),
    ],
)
def test_malformed_voc_names_the_file(tmp_path, xml_text, message):
    _, xml = _fake_source(tmp_path, xml_text)
    with pytest.raises(DatasetError, match=message) as e:
        parse_voc_boxes(xml)
    assert xml in str(e.value)


def test_corrupt_or_missing_image_names_the_file(tmp_path):
    img, xml = _fake_source(tmp_path, GOOD_XML, corrupt=True)
    with pytest.raises(DatasetError, match="corrupt") as e:
        prepare_treecrowns(str(tmp_path / "out"), img, xml)
    assert img in str(e.value)
    with pytest.raises(DatasetError, match="not found"):
        prepare_treecrowns(str(tmp_path / "out"), str(tmp_path / "missing.png"), xml)


def test_size_mismatch_is_reported(tmp_path):
    img, xml = _fake_source(tmp_path, GOOD_XML, image_size=(60, 48))
    with pytest.raises(DatasetError, match="differs from the image"):
        prepare_treecrowns(str(tmp_path / "out"), img, xml)


def test_small_source_roundtrip_through_registration(tmp_path):
    img, xml = _fake_source(tmp_path, GOOD_XML)
    folder = str(tmp_path / "cache")
    register_generated_coco(
        "treecrowns_unit_test",
        folder,
        lambda f: prepare_treecrowns(f, img, xml, tile_size=32),
        ["tree"],
    )
    dicts = DatasetCatalog.get("treecrowns_unit_test")
    # 64x48 with 32 tiles: x origins [0, 32], y origins [0, 16]
    assert [(d["file_name"].rsplit("_", 2)[-2:]) for d in dicts] == [
        ["x0", "y0.png"], ["x32", "y0.png"], ["x0", "y16.png"], ["x32", "y16.png"]
    ]
    # the 20x24 box at (5,6) lies fully in tile (0,0) and 14/24 of it in tile (0,16)
    assert [len(d["annotations"]) for d in dicts] == [1, 0, 1, 0]
    assert dicts[0]["annotations"][0]["bbox"] == [5.0, 6.0, 20.0, 24.0]
    assert dicts[2]["annotations"][0]["bbox"] == [5.0, 0.0, 20.0, 14.0]
    mtime = os.path.getmtime(os.path.join(folder, "coco.json"))
    DatasetCatalog.get("treecrowns_unit_test")
    assert os.path.getmtime(os.path.join(folder, "coco.json")) == mtime  # cached, not rebuilt


def test_missing_data_package_is_explained(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "deepforest" else real(name, *a)
    )
    with pytest.raises(DatasetError, match="pip install --no-deps deepforest==2.1.0"):
        deepforest_data_dir()
