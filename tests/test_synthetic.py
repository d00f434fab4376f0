import os

import numpy as np
import pytest
from PIL import Image

from detkit.data.synthetic import (
    MIN_VISIBLE_FRACTION,
    SYNTHETIC_CLASSES,
    generate_synthetic_images,
    mask_to_box,
    register_synthetic,
)


@pytest.fixture(scope="module")
def samples():
    """(image, boxes, masks) for 32 default-size images."""
    return generate_synthetic_images(32, seed=0, return_masks=True)


def _pixels(image):
    return np.asarray(image)


def test_same_seed_gives_identical_images_and_boxes():
    a = generate_synthetic_images(6, seed=3)
    b = generate_synthetic_images(6, seed=3)
    assert len(a) == len(b) == 6
    for (img_a, boxes_a), (img_b, boxes_b) in zip(a, b):
        assert np.array_equal(_pixels(img_a), _pixels(img_b))
        assert boxes_a == boxes_b


def test_different_seed_gives_different_images():
    a = generate_synthetic_images(3, seed=3)
    b = generate_synthetic_images(3, seed=4)
    assert not any(np.array_equal(_pixels(x), _pixels(y)) for (x, _), (y, _) in zip(a, b))
    assert [boxes for _, boxes in a] != [boxes for _, boxes in b]


def test_generation_does_not_touch_global_rng():
    np.random.seed(123)
    expected = np.random.rand()
    np.random.seed(123)
    generate_synthetic_images(2, seed=0)
    assert np.random.rand() == expected


@pytest.mark.parametrize("image_size", [(128, 128), (96, 160)])
def test_boxes_valid(image_size):
    h, w = image_size
    out = generate_synthetic_images(16, image_size=image_size, seed=1, max_objects=6)
    num_boxes, max_x1 = 0, 0
    for image, boxes in out:
        assert image.mode == "RGB" and image.size == (w, h)
        assert 0 <= len(boxes) <= 6
        for cls, x0, y0, x1, y1 in boxes:
            assert all(type(v) is int for v in (cls, x0, y0, x1, y1))
            assert 0 <= cls < len(SYNTHETIC_CLASSES)
            assert 0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h
            num_boxes += 1
            max_x1 = max(max_x1, x1)
    assert num_boxes >= 16
    if w > h:  # H and W are not swapped
        assert max_x1 > h


def test_all_classes_and_overlapping_boxes(samples):
    classes = {b[0] for _, boxes, _ in samples for b in boxes}
    assert classes == set(range(len(SYNTHETIC_CLASSES)))

    def overlaps(a, b):
        return min(a[3], b[3]) > max(a[1], b[1]) and min(a[4], b[4]) > max(a[2], b[2])

    num_overlapping = sum(
        any(overlaps(a, b) for i, a in enumerate(boxes) for b in boxes[i + 1 :])
        for _, boxes, _ in samples
    )
    assert num_overlapping >= 3


def test_mask_to_box():
    mask = np.zeros((10, 12), dtype=bool)
    mask[2, 3] = mask[6, 9] = mask[4, 5] = True
    assert mask_to_box(mask) == (3, 2, 10, 7)
    mask = np.zeros((10, 12), dtype=bool)
    mask[0, 11] = True
    assert mask_to_box(mask) == (11, 0, 12, 1)
    with pytest.raises(ValueError):
        mask_to_box(np.zeros((4, 4), dtype=bool))


def test_boxes_tight_around_object_masks(samples):
    for image, boxes, masks in samples:
        assert masks.shape == (len(boxes),) + _pixels(image).shape[:2] and masks.dtype == bool
        for (_, *box), mask in zip(boxes, masks):
            assert tuple(box) == mask_to_box(mask)


def test_masks_match_drawn_pixels(samples):
    # The last annotated object is the last one drawn (never occluded): in the image, its mask is
    # one colour plus pixel noise (std 6), and as the mask touches all four sides of the box, so do
    # the drawn pixels.
    checked = 0
    for image, boxes, masks in samples:
        if boxes:
            inside = _pixels(image)[masks[-1]].astype(float)
            assert inside.std(axis=0).max() < 10
            checked += 1
    assert checked >= 20


def test_boxes_are_poor_descriptions_of_objects(samples):
    fill = {c: [] for c in range(len(SYNTHETIC_CLASSES))}
    occluded = 0
    for _, boxes, masks in samples:
        for k, ((cls, x0, y0, x1, y1), mask) in enumerate(zip(boxes, masks)):
            fill[cls].append(mask.sum() / ((x1 - x0) * (y1 - y0)))
            covered = np.logical_or.reduce(masks[k + 1 :], axis=0) & mask
            # Annotated objects keep at least MIN_VISIBLE_FRACTION of their pixels (later annotated
            # objects are only part of what may cover them, so this bound must hold).
            assert 1 - covered.sum() / mask.sum() >= MIN_VISIBLE_FRACTION
            occluded += covered.any()
    means = {SYNTHETIC_CLASSES[c]: float(np.mean(v)) for c, v in fill.items()}
    assert means["stick"] < 0.4, means
    assert means["ring"] < 0.55, means
    assert means["blob"] < 0.75, means
    assert occluded >= 5  # amodal boxes of partly covered objects


def test_object_size_scales_with_image_size():
    def median_size(image_size):
        out = generate_synthetic_images(12, image_size=image_size, seed=7)
        return np.median([max(x1 - x0, y1 - y0) for _, boxes in out for _, x0, y0, x1, y1 in boxes])

    small, large = median_size((128, 128)), median_size((256, 256))
    assert 12 <= small <= 80
    assert 1.4 < large / small < 2.8


def test_register_synthetic_round_trip(tmp_path, monkeypatch):
    from detectron2.data import DatasetCatalog, MetadataCatalog
    from detectron2.structures import BoxMode

    monkeypatch.setenv("DETKIT_CACHE", str(tmp_path))
    name = "synthetic_test_xyz"
    folder = register_synthetic(name, num_images=4, seed=5)
    try:
        assert folder.startswith(os.path.join(str(tmp_path), "synthetic", name + "-"))
        assert not os.listdir(tmp_path)  # registering generates nothing

        dicts = DatasetCatalog.get(name)
        expected = generate_synthetic_images(4, seed=5)
        assert len(dicts) == 4
        for d, (image, boxes) in zip(dicts, expected):
            assert os.path.isfile(d["file_name"]) and d["file_name"].startswith(folder)
            assert (d["height"], d["width"]) == (128, 128)
            saved = np.asarray(Image.open(d["file_name"]).convert("RGB"))
            assert np.array_equal(saved, _pixels(image))
            got = [(a["category_id"], *a["bbox"]) for a in d["annotations"]]
            assert got == [(c, x0, y0, x1 - x0, y1 - y0) for c, x0, y0, x1, y1 in boxes]
            for a in d["annotations"]:
                assert a["bbox_mode"] == BoxMode.XYWH_ABS
                assert 0 <= a["category_id"] < len(SYNTHETIC_CLASSES)

        meta = MetadataCatalog.get(name)
        assert os.path.isfile(meta.json_file) and meta.json_file.startswith(folder)
        assert list(meta.thing_classes) == list(SYNTHETIC_CLASSES)

        paths = [meta.json_file] + [d["file_name"] for d in dicts]
        stamps = {p: os.stat(p).st_mtime_ns for p in paths}
        dicts_again = DatasetCatalog.get(name)
        assert [d["file_name"] for d in dicts_again] == [d["file_name"] for d in dicts]
        assert {p: os.stat(p).st_mtime_ns for p in stamps} == stamps  # not regenerated
    finally:
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)


def test_builtin_datasets_registered():
    from detectron2.data import DatasetCatalog, MetadataCatalog

    for name in ["synthetic_train", "synthetic_val", "synthetic_train_256", "synthetic_val_256"]:
        assert name in DatasetCatalog.list()
        meta = MetadataCatalog.get(name)
        assert list(meta.thing_classes) == list(SYNTHETIC_CLASSES)
        assert os.path.join("synthetic", name + "-") in meta.json_file
